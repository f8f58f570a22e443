#pragma once

// Starting and stopping real processes (iothubd, iothubctl) from tests, with deadlines
// instead of sleeps.
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

extern char** environ;

namespace iothub::testing {

// Polls `condition` every few milliseconds until it holds or `timeout` passes.
inline bool waitFor(const std::function<bool()>& condition,
                    std::chrono::milliseconds timeout = std::chrono::seconds(20)) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!condition()) {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return true;
}

inline std::string readFile(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// A child process whose stdout and stderr go to files (read them with output()).
class Process {
 public:
  Process(std::vector<std::string> argv, const std::filesystem::path& log_dir,
          std::vector<std::string> extra_env = {}) {
    static std::atomic<int> counter{0};  // tests start processes from several threads
    std::string base =
        std::filesystem::path(argv[0]).filename().string() + "-" + std::to_string(++counter);
    out_path_ = log_dir / (base + ".out");
    err_path_ = log_dir / (base + ".err");
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&actions, 1, out_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC,
                                     0644);
    posix_spawn_file_actions_addopen(&actions, 2, err_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC,
                                     0644);
    std::vector<char*> args;
    for (auto& a : argv) args.push_back(a.data());
    args.push_back(nullptr);
    std::vector<std::string> env_strings;
    for (char** e = environ; *e != nullptr; ++e) env_strings.emplace_back(*e);
    for (auto& e : extra_env) env_strings.push_back(e);
    std::vector<char*> env;
    for (auto& e : env_strings) env.push_back(e.data());
    env.push_back(nullptr);
    if (posix_spawn(&pid_, args[0], &actions, nullptr, args.data(), env.data()) != 0) pid_ = -1;
    posix_spawn_file_actions_destroy(&actions);
  }
  ~Process() {
    if (running()) {
      ::kill(pid_, SIGKILL);
      wait(std::chrono::seconds(10));
    }
  }
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;

  bool started() const { return pid_ > 0; }
  pid_t pid() const { return pid_; }
  bool running() {
    if (pid_ <= 0 || exit_status_) return false;
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      exit_status_ = status;
      return false;
    }
    return true;
  }
  void signal(int sig) {
    if (running()) ::kill(pid_, sig);
  }
  // The exit code once the process ended within `timeout` (-1 for a signal death),
  // nullopt if it is still running.
  std::optional<int> wait(std::chrono::milliseconds timeout = std::chrono::seconds(30)) {
    if (!waitFor([this] { return !running(); }, timeout)) return std::nullopt;
    if (!exit_status_) return std::nullopt;
    return WIFEXITED(*exit_status_) ? WEXITSTATUS(*exit_status_) : -1;
  }
  std::string out() const { return readFile(out_path_); }
  std::string err() const { return readFile(err_path_); }

 private:
  pid_t pid_ = -1;
  std::optional<int> exit_status_;
  std::filesystem::path out_path_, err_path_;
};

// Runs a command to completion and returns {exit code, stdout, stderr}.
struct CommandResult {
  int exit_code = -1;
  std::string out;
  std::string err;
};
inline CommandResult runCommand(std::vector<std::string> argv, const std::filesystem::path& log_dir,
                                std::vector<std::string> extra_env = {},
                                std::chrono::milliseconds timeout = std::chrono::seconds(60)) {
  Process p(std::move(argv), log_dir, std::move(extra_env));
  auto code = p.wait(timeout);
  return {code.value_or(-2), p.out(), p.err()};
}

}  // namespace iothub::testing
