#include "transport/tls_socket.hpp"

#include <openssl/bio.h>
#include <openssl/err.h>
#include <sys/socket.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/ssl/error.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <cerrno>
#include <cstdint>

namespace iothub::transport {
namespace {

namespace asio = boost::asio;
using boost::system::error_code;

// A BIO over the socket's descriptor. OpenSSL's own socket BIO writes with write(2), which
// raises SIGPIPE on a connection the peer reset; send(MSG_NOSIGNAL) does not, and the hub
// does not ignore SIGPIPE process-wide.
int descriptorOf(BIO* bio) {
  return static_cast<int>(reinterpret_cast<std::intptr_t>(BIO_get_data(bio)));
}

bool retryable(int error) { return error == EAGAIN || error == EWOULDBLOCK || error == EINTR; }

int bioWrite(BIO* bio, const char* data, int size) {
  BIO_clear_retry_flags(bio);
  ssize_t n = ::send(descriptorOf(bio), data, static_cast<std::size_t>(size), MSG_NOSIGNAL);
  if (n >= 0) return static_cast<int>(n);
  if (retryable(errno)) BIO_set_retry_write(bio);
  return -1;
}

int bioRead(BIO* bio, char* data, int size) {
  BIO_clear_retry_flags(bio);
  ssize_t n = ::recv(descriptorOf(bio), data, static_cast<std::size_t>(size), 0);
  if (n >= 0) return static_cast<int>(n);  // 0: the peer closed
  if (retryable(errno)) BIO_set_retry_read(bio);
  return -1;
}

long bioControl(BIO*, int command, long, void*) { return command == BIO_CTRL_FLUSH ? 1 : 0; }

int bioCreate(BIO* bio) {
  BIO_set_init(bio, 1);
  return 1;
}

BIO_METHOD* socketMethod() {
  static BIO_METHOD* const method = [] {
    BIO_METHOD* m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "iothub socket");
    if (m != nullptr) {
      BIO_meth_set_write(m, bioWrite);
      BIO_meth_set_read(m, bioRead);
      BIO_meth_set_ctrl(m, bioControl);
      BIO_meth_set_create(m, bioCreate);
    }
    return m;
  }();
  return method;
}

constexpr auto kAwaitTuple = asio::as_tuple(asio::use_awaitable);

}  // namespace

TlsSocket::TlsSocket(Socket socket, SSL_CTX* context) : socket_(std::move(socket)) {
  error_code ignored;
  socket_.non_blocking(true, ignored);
  BIO_METHOD* method = socketMethod();
  if (method == nullptr) return;
  ssl_ = SSL_new(context);
  if (ssl_ == nullptr) return;  // handshake() reports it
  BIO* bio = BIO_new(method);
  if (bio == nullptr) {
    SSL_free(ssl_);
    ssl_ = nullptr;
    return;
  }
  BIO_set_data(bio, reinterpret_cast<void*>(static_cast<std::intptr_t>(socket_.native_handle())));
  SSL_set_bio(ssl_, bio, bio);
  SSL_set_accept_state(ssl_);
  // Record buffers only while they hold data; writes may complete in parts and be retried
  // from a moved buffer; a client cannot renegotiate (TLS 1.2), which would need a write
  // inside a read.
  SSL_set_mode(ssl_, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ENABLE_PARTIAL_WRITE |
                         SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  SSL_set_options(ssl_, SSL_OP_NO_RENEGOTIATION);
  // Read what the socket has, not record by record (fewer system calls); readSome() asks
  // OpenSSL whether it still holds bytes before it lets the caller wait.
  SSL_set_read_ahead(ssl_, 1);
}

TlsSocket::TlsSocket(TlsSocket&& other) noexcept
    : socket_(std::move(other.socket_)), ssl_(std::exchange(other.ssl_, nullptr)) {}

TlsSocket::~TlsSocket() {
  if (ssl_ != nullptr) SSL_free(ssl_);  // frees the BIO too
}

error_code TlsSocket::failure(int result, int& wait) {
  int error = SSL_get_error(ssl_, result);
  switch (error) {
    case SSL_ERROR_WANT_READ:
    case SSL_ERROR_WANT_WRITE:
      wait = error;
      ERR_clear_error();
      return {};
    case SSL_ERROR_ZERO_RETURN:
      ERR_clear_error();
      return asio::error::eof;
    case SSL_ERROR_SYSCALL: {
      int system_error = errno;
      ERR_clear_error();
      if (result == 0 || system_error == 0) return asio::error::eof;
      return {system_error, boost::system::system_category()};
    }
    case SSL_ERROR_SSL: {
      unsigned long code = ERR_get_error();
      ERR_clear_error();
      if (ERR_GET_REASON(code) == SSL_R_UNEXPECTED_EOF_WHILE_READING) return asio::error::eof;
      return {static_cast<int>(code), asio::error::get_ssl_category()};
    }
    default:
      ERR_clear_error();
      return asio::error::fault;
  }
}

asio::awaitable<error_code> TlsSocket::handshake() {
  if (ssl_ == nullptr) co_return asio::error::no_memory;
  for (;;) {
    ERR_clear_error();
    int result = SSL_do_handshake(ssl_);
    if (result == 1) co_return error_code{};
    int wait = 0;
    if (error_code ec = failure(result, wait)) co_return ec;
    auto [ec] = co_await socket_.async_wait(
        wait == SSL_ERROR_WANT_READ ? Socket::wait_read : Socket::wait_write, kAwaitTuple);
    if (ec) co_return ec;
  }
}

asio::awaitable<error_code> TlsSocket::waitToRead() {
  if (ready_) co_return error_code{};
  auto [ec] = co_await socket_.async_wait(wait_for_, kAwaitTuple);
  co_return ec;
}

std::size_t TlsSocket::readSome(char* data, std::size_t size, error_code& ec) {
  ec = {};
  ready_ = false;
  wait_for_ = Socket::wait_read;
  std::size_t total = 0;
  while (total < size) {
    ERR_clear_error();
    std::size_t n = 0;
    int result = SSL_read_ex(ssl_, data + total, size - total, &n);
    if (result == 1) {
      total += n;
      // Nothing held inside OpenSSL: whatever comes next, the socket's readiness tells.
      if (SSL_has_pending(ssl_) == 0) return total;
      continue;
    }
    int wait = 0;
    ec = failure(result, wait);
    if (wait == SSL_ERROR_WANT_WRITE) wait_for_ = Socket::wait_write;
    return total;
  }
  ready_ = true;
  return total;
}

asio::awaitable<error_code> TlsSocket::write(const char* data, std::size_t size) {
  std::size_t done = 0;
  while (done < size) {
    ERR_clear_error();
    std::size_t n = 0;
    int result = SSL_write_ex(ssl_, data + done, size - done, &n);
    if (result == 1) {
      done += n;
      continue;
    }
    int wait = 0;
    if (error_code ec = failure(result, wait)) co_return ec;
    auto [ec] = co_await socket_.async_wait(
        wait == SSL_ERROR_WANT_READ ? Socket::wait_read : Socket::wait_write, kAwaitTuple);
    if (ec) co_return ec;
  }
  co_return error_code{};
}

void TlsSocket::sendCloseNotify() {
  if (ssl_ == nullptr || SSL_is_init_finished(ssl_) == 0) return;
  ERR_clear_error();
  SSL_shutdown(ssl_);
  ERR_clear_error();
}

}  // namespace iothub::transport
