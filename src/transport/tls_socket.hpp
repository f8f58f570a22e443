#pragma once

// Internal to src/transport: a server-side TLS connection in which OpenSSL reads and writes
// the TCP socket itself (a socket BIO), for the device MQTT/TLS listener (8883).
//
// Why not asio::ssl::stream: it keeps two 17 KB buffers of its own and an OpenSSL BIO pair with
// two more, all allocated for the connection's whole life: ~68 KB per idle device, against
// ~8 KB for everything else a plain MQTT connection holds (docs/benchmarks.md, B1 TLS;
// decisions.md §81). Here OpenSSL's own record buffers are released whenever they are empty
// (SSL_MODE_RELEASE_BUFFERS), so an idle TLS device costs its SSL object and little more.
//
// The caller waits for readiness with the socket's async_wait and calls the non-blocking
// operations below, all from the connection's strand (an SSL object is not thread-safe).
// Includes Asio: include it only from transport's .cpp files.

#include <openssl/ssl.h>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/strand.hpp>
#include <boost/system/error_code.hpp>
#include <cstddef>
#include <utility>

namespace iothub::transport {

class TlsSocket {
 public:
  using Socket = boost::asio::ip::tcp::socket;

  // Takes the accepted socket (made non-blocking here) and creates the SSL object from
  // `context`, which must outlive this.
  TlsSocket(Socket socket, SSL_CTX* context);
  ~TlsSocket();
  TlsSocket(TlsSocket&& other) noexcept;
  TlsSocket& operator=(TlsSocket&&) = delete;
  TlsSocket(const TlsSocket&) = delete;
  TlsSocket& operator=(const TlsSocket&) = delete;

  Socket::executor_type get_executor() { return socket_.get_executor(); }
  Socket& socket() { return socket_; }

  // Runs the server handshake to its end, waiting for the socket as OpenSSL asks. Errors:
  // what the socket reported (operation_aborted when the socket was cancelled, e.g. by a
  // deadline), asio::error::eof when the peer closed, or an OpenSSL error (ssl category).
  boost::asio::awaitable<boost::system::error_code> handshake();

  // Waits until readSome() may find bytes: at once after the handshake (which may have read
  // the client's first bytes along with its last message) or after a readSome() that filled
  // its buffer, else for the socket to become readable (or writable, when OpenSSL must write
  // before it can read on, as for a TLS 1.3 key update answer). Take the buffer for
  // readSome() after this returns: the coroutine may resume on another thread.
  boost::asio::awaitable<boost::system::error_code> waitToRead();

  // Decrypts what is ready without blocking into `data`, record after record, stopping when
  // the buffer is full or nothing more is ready. Returns the bytes read, possibly 0 (a
  // spurious wake-up, half a record). `ec` is set (eof for a closed connection) when the
  // connection cannot be read any more; the bytes returned with it are still valid.
  std::size_t readSome(char* data, std::size_t size, boost::system::error_code& ec);

  // Writes all of `size` bytes, waiting for the socket whenever OpenSSL asks to. `data` must
  // stay valid until the write completes. At most one write at a time.
  boost::asio::awaitable<boost::system::error_code> write(const char* data, std::size_t size);

  // Sends TLS close_notify if the handshake finished and the socket takes it now (never
  // waits), for a graceful end before the TCP shutdown.
  void sendCloseNotify();

 private:
  // Turns the failed OpenSSL call's result into an error code (clearing OpenSSL's error
  // queue), or reports that the caller should wait: then returns {} and sets `wait`.
  boost::system::error_code failure(int result, int& wait);

  Socket socket_;
  SSL* ssl_ = nullptr;
  bool ready_ = true;  // readSome() needs no wait first
  Socket::wait_type wait_for_ = Socket::wait_read;
};

}  // namespace iothub::transport
