#include "fake_mqtt_broker.hpp"

#include <openssl/ssl.h>

#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>

#include "common/status.hpp"
#include "mqtt/decoder.hpp"
#include "mqtt/encoder.hpp"

namespace iothub::device::testing {

namespace asio = boost::asio;
namespace ssl = asio::ssl;
using tcp = asio::ip::tcp;
using asio::awaitable;
using Deadline = std::chrono::steady_clock::time_point;

namespace {
constexpr auto kAwaitTuple = asio::as_tuple(asio::use_awaitable);

Deadline deadlineAfter(std::chrono::milliseconds wait) {
  return std::chrono::steady_clock::now() + wait;
}

void rethrowIfFailed(std::exception_ptr e) {
  if (e) std::rethrow_exception(e);
}
}  // namespace

class BrokerConnection::State {
 public:
  State(asio::io_context& ioc, ssl::context* tls_context) : socket(ioc) {
    if (tls_context != nullptr) tls.emplace(socket, *tls_context);
  }

  // I/O thread only.
  tcp::socket socket;
  std::optional<ssl::stream<tcp::socket&>> tls;
  mqtt::Decoder decoder;
  std::string outbox;
  bool writing = false;

  // Shared with the test thread.
  mutable std::mutex mutex;
  std::condition_variable changed;
  std::deque<mqtt::Packet> received;
  bool closed = false;
  int pings = 0;
  bool answer_pings = true;
  std::string server_name;

  awaitable<std::tuple<boost::system::error_code, std::size_t>> readSome(asio::mutable_buffer b) {
    if (tls) {
      auto result = co_await tls->async_read_some(b, kAwaitTuple);
      co_return result;
    }
    auto result = co_await socket.async_read_some(b, kAwaitTuple);
    co_return result;
  }

  // `self` keeps the state alive while a write is in flight.
  static awaitable<void> writeLoop(std::shared_ptr<State> self) {
    while (!self->outbox.empty()) {
      std::string chunk;
      chunk.swap(self->outbox);
      boost::system::error_code ec;
      if (self->tls) {
        std::tie(ec, std::ignore) =
            co_await asio::async_write(*self->tls, asio::buffer(chunk), kAwaitTuple);
      } else {
        std::tie(ec, std::ignore) =
            co_await asio::async_write(self->socket, asio::buffer(chunk), kAwaitTuple);
      }
      if (ec) break;
    }
    self->writing = false;
  }

  // I/O thread.
  void write(std::string bytes, const std::shared_ptr<State>& self) {
    outbox += bytes;
    if (!writing) {
      writing = true;
      asio::co_spawn(socket.get_executor(), writeLoop(self), rethrowIfFailed);
    }
  }

  void markClosed() {
    std::lock_guard lock(mutex);
    closed = true;
    changed.notify_all();
  }
};

BrokerConnection::BrokerConnection(std::shared_ptr<State> state) : state_(std::move(state)) {}

std::optional<mqtt::Packet> BrokerConnection::next(std::chrono::milliseconds wait) {
  std::unique_lock lock(state_->mutex);
  state_->changed.wait_until(lock, deadlineAfter(wait),
                             [&] { return !state_->received.empty() || state_->closed; });
  if (state_->received.empty()) return std::nullopt;
  mqtt::Packet packet = std::move(state_->received.front());
  state_->received.pop_front();
  return packet;
}

void BrokerConnection::send(const mqtt::Packet& packet) {
  std::string bytes;
  Status encoded = mqtt::encode(packet, bytes);
  IOTHUB_CHECK(encoded.isOk(), "the test asked the broker to send an invalid packet");
  asio::post(state_->socket.get_executor(), [state = state_, bytes = std::move(bytes)]() mutable {
    state->write(std::move(bytes), state);
  });
}

void BrokerConnection::drop() {
  asio::post(state_->socket.get_executor(), [state = state_] {
    boost::system::error_code ignored;
    state->socket.shutdown(tcp::socket::shutdown_both, ignored);
    state->socket.close(ignored);
  });
}

bool BrokerConnection::waitClosed(std::chrono::milliseconds wait) {
  std::unique_lock lock(state_->mutex);
  return state_->changed.wait_until(lock, deadlineAfter(wait), [&] { return state_->closed; });
}

int BrokerConnection::pings() const {
  std::lock_guard lock(state_->mutex);
  return state_->pings;
}

bool BrokerConnection::waitForPings(int count, std::chrono::milliseconds wait) {
  std::unique_lock lock(state_->mutex);
  return state_->changed.wait_until(lock, deadlineAfter(wait),
                                    [&] { return state_->pings >= count; });
}

void BrokerConnection::setAnswerPings(bool answer) {
  std::lock_guard lock(state_->mutex);
  state_->answer_pings = answer;
}

std::string BrokerConnection::serverName() const {
  std::lock_guard lock(state_->mutex);
  return state_->server_name;
}

struct FakeMqttBroker::Impl {
  asio::io_context ioc;
  std::optional<ssl::context> tls;
  tcp::acceptor acceptor{ioc};
  std::uint16_t port = 0;
  std::thread thread;

  mutable std::mutex mutex;
  std::condition_variable changed;
  std::deque<std::shared_ptr<BrokerConnection::State>> unclaimed;
  int accepted = 0;

  awaitable<void> acceptLoop() {
    for (;;) {
      auto state = std::make_shared<BrokerConnection::State>(ioc, tls ? &*tls : nullptr);
      auto [ec] = co_await acceptor.async_accept(state->socket, kAwaitTuple);
      if (ec) co_return;
      {
        std::lock_guard lock(mutex);
        ++accepted;
      }
      asio::co_spawn(ioc, serve(state), rethrowIfFailed);
    }
  }

  awaitable<void> serve(std::shared_ptr<BrokerConnection::State> state) {
    if (state->tls) {
      auto [ec] = co_await state->tls->async_handshake(ssl::stream_base::server, kAwaitTuple);
      if (ec) {
        boost::system::error_code ignored;
        state->socket.close(ignored);
        co_return;
      }
      const char* sni = SSL_get_servername(state->tls->native_handle(), TLSEXT_NAMETYPE_host_name);
      std::lock_guard lock(state->mutex);
      state->server_name = sni != nullptr ? sni : "";
    }
    {
      std::lock_guard lock(mutex);
      unclaimed.push_back(state);
      changed.notify_all();
    }
    for (;;) {
      auto buffer = state->decoder.prepare(16 * 1024);
      auto [ec, n] = co_await state->readSome(asio::buffer(buffer.data(), buffer.size()));
      if (ec) break;
      state->decoder.commit(n);
      bool failed = false;
      for (;;) {
        auto next = state->decoder.next();
        if (!next) {
          ADD_FAILURE() << "the client sent a malformed packet: " << next.status().message();
          failed = true;
          break;
        }
        if (!*next) break;
        std::unique_lock lock(state->mutex);
        if (std::holds_alternative<mqtt::PingReq>(**next)) {
          ++state->pings;
          bool answer = state->answer_pings;
          state->changed.notify_all();
          lock.unlock();
          if (answer) {
            std::string bytes;
            IOTHUB_CHECK(mqtt::encode(mqtt::PingResp{}, bytes).isOk(), "PINGRESP encodes");
            state->write(std::move(bytes), state);
          }
          continue;
        }
        state->received.push_back(std::move(**next));
        state->changed.notify_all();
      }
      if (failed) break;
    }
    boost::system::error_code ignored;
    state->socket.close(ignored);
    state->markClosed();
  }
};

FakeMqttBroker::FakeMqttBroker(std::optional<BrokerTls> tls) : impl_(std::make_unique<Impl>()) {
  if (tls) {
    impl_->tls.emplace(ssl::context::tls_server);
    impl_->tls->use_certificate_chain(asio::buffer(tls->cert_pem));
    impl_->tls->use_private_key(asio::buffer(tls->key_pem), ssl::context::pem);
  }
  tcp::endpoint endpoint(asio::ip::make_address("127.0.0.1"), 0);
  impl_->acceptor.open(endpoint.protocol());
  impl_->acceptor.set_option(tcp::acceptor::reuse_address(true));
  impl_->acceptor.bind(endpoint);
  impl_->acceptor.listen();
  impl_->port = impl_->acceptor.local_endpoint().port();
  asio::co_spawn(impl_->ioc, impl_->acceptLoop(), rethrowIfFailed);
  impl_->thread = std::thread([this] { impl_->ioc.run(); });
}

FakeMqttBroker::~FakeMqttBroker() {
  impl_->ioc.stop();
  impl_->thread.join();
}

std::uint16_t FakeMqttBroker::port() const { return impl_->port; }

std::shared_ptr<BrokerConnection> FakeMqttBroker::accept(std::chrono::milliseconds wait) {
  std::unique_lock lock(impl_->mutex);
  if (!impl_->changed.wait_until(lock, deadlineAfter(wait),
                                 [&] { return !impl_->unclaimed.empty(); })) {
    return nullptr;
  }
  auto state = std::move(impl_->unclaimed.front());
  impl_->unclaimed.pop_front();
  return std::make_shared<BrokerConnection>(std::move(state));
}

int FakeMqttBroker::acceptedCount() const {
  std::lock_guard lock(impl_->mutex);
  return impl_->accepted;
}

}  // namespace iothub::device::testing
