#include "transport/scheduler.hpp"

#include <boost/asio.hpp>

namespace iothub::transport {

struct AsioScheduler::State {
  explicit State(boost::asio::io_context& i) : io(i) {}
  boost::asio::io_context& io;
  std::mutex mutex;
  TimerId next = 1;                                                             // guarded by mutex
  std::unordered_map<TimerId, std::shared_ptr<boost::asio::steady_timer>> timers;  // guarded by mutex
};

AsioScheduler::AsioScheduler(boost::asio::io_context& io) : state_(std::make_shared<State>(io)) {}

AsioScheduler::~AsioScheduler() {
  std::lock_guard lock(state_->mutex);
  for (auto& [id, timer] : state_->timers) boost::asio::post(state_->io, [timer] { timer->cancel(); });
  state_->timers.clear();
}

Scheduler::TimerId AsioScheduler::schedule(std::chrono::steady_clock::duration delay, std::function<void()> fn) {
  auto timer = std::make_shared<boost::asio::steady_timer>(state_->io, delay);
  TimerId id;
  {
    std::lock_guard lock(state_->mutex);
    id = state_->next++;
    state_->timers[id] = timer;
  }
  timer->async_wait([state = state_, id, fn = std::move(fn)](const boost::system::error_code& ec) {
    {
      std::lock_guard lock(state->mutex);
      // Erased means cancelled (or the scheduler is gone): never run then.
      if (state->timers.erase(id) == 0) return;
    }
    if (!ec) fn();
  });
  return id;
}

bool AsioScheduler::cancel(TimerId id) {
  std::shared_ptr<boost::asio::steady_timer> timer;
  {
    std::lock_guard lock(state_->mutex);
    auto it = state_->timers.find(id);
    if (it == state_->timers.end()) return false;
    timer = std::move(it->second);
    state_->timers.erase(it);
  }
  // Timers are not thread-safe objects: cancel on the io_context, which frees the wait
  // early. The erased id alone already guarantees the callback never runs.
  boost::asio::post(state_->io, [timer] { timer->cancel(); });
  return true;
}

}  // namespace iothub::transport
