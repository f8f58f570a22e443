#pragma once

// A throw-away PostgreSQL server for tests: its own data directory, a free port on
// 127.0.0.1 and a unix socket in its directory, stopped and deleted with the object.
//
// initdb costs more than a second, and ctest runs every test in its own process, so the
// first server on a machine initialises a template data directory once (in /dev/shm or the
// temp directory, behind a file lock, so parallel test processes do not race) and every server
// starts from a copy of it (1 MB WAL segments keep that copy small; the "v1" in its name
// changes whenever the initdb options do). Each server therefore begins with an empty
// cluster: databases postgres, template0 and template1, superuser `postgres`, trust
// authentication.
//
// PostgreSQL refuses to run as root: when the tests run as root, initdb, pg_ctl and the
// server run as the `postgres` user (runuser), which then owns the directory.
#include <fcntl.h>
#include <netinet/in.h>
#include <pwd.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.hpp"
#include "tests/support/process.hpp"

namespace iothub::testing {

class PostgresServer {
 public:
  // `settings` are extra server settings, each "name=value" (passed as -c name=value), on
  // top of the test defaults: fsync=off (a test server's data need not survive an OS
  // crash, only a PostgreSQL crash) and small shared buffers.
  explicit PostgresServer(std::vector<std::string> settings = {})
      : settings_(std::move(settings)) {}
  ~PostgresServer() {
    (void)thaw();
    if (running_) (void)halt(SIGQUIT);
    if (!dir_.empty()) {
      std::error_code ec;
      std::filesystem::remove_all(dir_, ec);
    }
  }
  PostgresServer(const PostgresServer&) = delete;
  PostgresServer& operator=(const PostgresServer&) = delete;

  // Creates the server in `dir` (created if missing; a fresh directory under the temp
  // directory when empty) from the template and starts it. The directory is removed with
  // the server.
  Status start(std::filesystem::path dir = {}) {
    if (!dir_.empty()) return Status(ErrorCode::InvalidOperation, "the server was started before");
    Result<std::filesystem::path> bin = binDir();
    if (!bin) return bin.status();
    bin_ = *bin;
    Result<std::filesystem::path> source = templateDataDir(bin_);
    if (!source) return source.status();
    if (dir.empty()) {
      std::random_device random;
      dir = scratchRoot() / ("iothub-pg-" + std::to_string(random()) + std::to_string(random()));
    }
    dir_ = dir;
    std::error_code ec;
    std::filesystem::create_directories(dir_, ec);
    if (ec) return failure("cannot create " + dir_.string() + ": " + ec.message());
    IOTHUB_RETURN_IF_ERROR(giveToServerUser(dir_));
    CommandResult copied =
        runCommand({"/bin/cp", "-a", source->string(), dataDir().string()}, dir_);
    if (copied.exit_code != 0) return failure("copying the template failed: " + copied.err);
    // A free port can be taken by another process before the server binds it: try again.
    Status started;
    for (int attempt = 0; attempt < 5; ++attempt) {
      port_ = freePort();
      started = launch();
      if (started || readFile(dir_ / "server.log").find("could not bind") == std::string::npos) {
        break;
      }
    }
    return started;
  }

  // A key=value connection string over TCP to 127.0.0.1.
  std::string conninfo(std::string_view database = "postgres") const {
    return "host=127.0.0.1 port=" + std::to_string(port_) +
           " user=postgres dbname=" + std::string(database);
  }
  // The same as a URI.
  std::string uri(std::string_view database = "postgres") const {
    return "postgresql://postgres@127.0.0.1:" + std::to_string(port_) + "/" + std::string(database);
  }
  // Over the unix socket in dir().
  std::string socketConninfo(std::string_view database = "postgres") const {
    return "host=" + dir_.string() + " port=" + std::to_string(port_) +
           " user=postgres dbname=" + std::string(database);
  }
  int port() const { return port_; }
  const std::filesystem::path& dir() const { return dir_; }
  bool running() const { return running_; }

  // Runs `statement` with psql as the superuser and returns its output (unaligned, tuples
  // only, trailing newline removed). Errors: ServerError with psql's message.
  Result<std::string> sql(std::string_view statement, std::string_view database = "postgres") {
    CommandResult result =
        runCommand({(bin_ / "psql").string(), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h",
                    dir_.string(), "-p", std::to_string(port_), "-U", "postgres", "-d",
                    std::string(database), "-c", std::string(statement)},
                   dir_);
    if (result.exit_code != 0) return failure("psql: " + result.err);
    while (!result.out.empty() && result.out.back() == '\n') result.out.pop_back();
    return result.out;
  }

  Status createDatabase(std::string_view name) {
    return sql("CREATE DATABASE \"" + std::string(name) + "\"").status();
  }

  // Shuts down cleanly (fast mode: sessions are ended, a checkpoint is written).
  Status stop() { return halt(SIGINT); }
  // Simulates a database crash: every server process exits at once, without a checkpoint;
  // the next start runs crash recovery from the WAL.
  Status crash() { return halt(SIGQUIT); }
  // Starts again on the same port with the same data, after stop() or crash().
  Status restart() {
    if (running_) IOTHUB_RETURN_IF_ERROR(stop());
    return launch();
  }

  // Freezes every server process (SIGSTOP): connections stay open and the kernel still
  // accepts new ones, but nothing answers. thaw() (SIGCONT) resumes them.
  Status freeze() {
    pid_t postmaster = postmasterPid();
    if (postmaster <= 0) return failure("the server is not running");
    frozen_ = {postmaster};  // first, so it forks no new process meanwhile
    ::kill(postmaster, SIGSTOP);
    for (pid_t child : childrenOf(postmaster)) {
      frozen_.push_back(child);
      ::kill(child, SIGSTOP);
    }
    return Status::ok();
  }
  Status thaw() {
    for (pid_t pid : frozen_) ::kill(pid, SIGCONT);
    frozen_.clear();
    return Status::ok();
  }

  // The postmaster's process id (0 when not running).
  pid_t postmasterPid() const {
    std::ifstream in(dataDir() / "postmaster.pid");
    long pid = 0;
    in >> pid;
    return static_cast<pid_t>(pid);
  }

  // The directory of initdb, pg_ctl and psql: `pg_config --bindir` when it has the server
  // programs, otherwise the newest /usr/lib/postgresql/<version>/bin (Debian's layout).
  static Result<std::filesystem::path> binDir() {
    auto has_server = [](const std::filesystem::path& dir) {
      return ::access((dir / "initdb").c_str(), X_OK) == 0 &&
             ::access((dir / "pg_ctl").c_str(), X_OK) == 0;
    };
    if (FILE* pipe = ::popen("pg_config --bindir 2>/dev/null", "r")) {
      char line[4096] = {};
      bool read = std::fgets(line, sizeof line, pipe) != nullptr;
      ::pclose(pipe);
      std::string dir = read ? line : "";
      while (!dir.empty() && (dir.back() == '\n' || dir.back() == ' ')) dir.pop_back();
      if (!dir.empty() && has_server(dir)) return std::filesystem::path(dir);
    }
    std::filesystem::path best;
    int best_version = -1;
    std::error_code ec;
    for (const auto& entry : std::filesystem::directory_iterator("/usr/lib/postgresql", ec)) {
      std::string name = entry.path().filename().string();
      int version = -1;
      std::from_chars(name.data(), name.data() + name.size(), version);
      if (version > best_version && has_server(entry.path() / "bin")) {
        best = entry.path() / "bin";
        best_version = version;
      }
    }
    if (best.empty()) {
      return Status(ErrorCode::ServerError,
                    "PostgreSQL's server programs (initdb, pg_ctl) were not found; install "
                    "package postgresql (scripts/install-deps)");
    }
    return best;
  }

 private:
  static Status failure(std::string message) {
    return Status(ErrorCode::ServerError, "test PostgreSQL server: " + std::move(message));
  }

  std::filesystem::path dataDir() const { return dir_ / "data"; }

  // Where servers and the template live: /dev/shm when it is a roomy tmpfs (copying the
  // template there takes a tenth of the time it takes on a busy disk), else the temp
  // directory. Small /dev/shm mounts (containers default to 64 MB) are passed over.
  static std::filesystem::path scratchRoot() {
    constexpr unsigned long long kMinFree = 1ull << 30;
    struct statvfs fs {};
    if (::statvfs("/dev/shm", &fs) == 0 &&
        static_cast<unsigned long long>(fs.f_bavail) * fs.f_frsize >= kMinFree &&
        ::access("/dev/shm", W_OK) == 0) {
      return "/dev/shm";
    }
    return std::filesystem::temp_directory_path();
  }

  static bool runningAsRoot() { return ::geteuid() == 0; }

  // argv, run as the postgres user when we are root.
  static std::vector<std::string> asServerUser(std::vector<std::string> argv) {
    if (!runningAsRoot()) return argv;
    std::string runuser = "/usr/sbin/runuser";
    for (const char* candidate : {"/usr/sbin/runuser", "/sbin/runuser", "/usr/bin/runuser"}) {
      if (::access(candidate, X_OK) == 0) {
        runuser = candidate;
        break;
      }
    }
    argv.insert(argv.begin(), {runuser, "-u", "postgres", "--"});
    return argv;
  }

  static Status giveToServerUser(const std::filesystem::path& path) {
    if (!runningAsRoot()) return Status::ok();
    const passwd* user = ::getpwnam("postgres");
    if (user == nullptr) return failure("there is no user 'postgres' to run the server as");
    if (::chown(path.c_str(), user->pw_uid, user->pw_gid) != 0) {
      return failure("cannot give " + path.string() + " to user postgres");
    }
    return Status::ok();
  }

  static int freePort() {
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t length = sizeof address;
    int port = 0;
    if (fd >= 0 && ::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0 &&
        ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) == 0) {
      port = ntohs(address.sin_port);
    }
    if (fd >= 0) ::close(fd);
    return port;
  }

  // A data directory made by initdb, shared by every test server of this machine and user.
  static Result<std::filesystem::path> templateDataDir(const std::filesystem::path& bin) {
    const std::filesystem::path root =
        scratchRoot() / ("iothub-pg-template-v1-" + std::to_string(::geteuid()) + "-" +
                         std::to_string(std::hash<std::string>{}(bin.string())));
    const std::filesystem::path data = root / "data";
    const std::string lock_path = root.string() + ".lock";
    int lock = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (lock < 0 || ::flock(lock, LOCK_EX) != 0) {
      if (lock >= 0) ::close(lock);
      return failure("cannot lock " + lock_path);
    }
    Status made = Status::ok();
    if (!std::filesystem::exists(root / "ready")) {
      std::error_code ec;
      std::filesystem::remove_all(root, ec);
      std::filesystem::create_directories(root, ec);
      made = giveToServerUser(root);
      if (made) {
        CommandResult initdb = runCommand(
            asServerUser({(bin / "initdb").string(), "-D", data.string(), "--no-locale", "-E",
                          "UTF8", "-A", "trust", "-U", "postgres", "--no-sync", "--wal-segsize=1"}),
            root);
        if (initdb.exit_code != 0) {
          made = failure("initdb failed: " + initdb.out + initdb.err);
        } else {
          std::ofstream(root / "ready") << "initialised by initdb\n";
        }
      }
    }
    ::flock(lock, LOCK_UN);
    ::close(lock);
    if (!made) return made;
    return data;
  }

  Status launch() {
    std::string options = "-k " + dir_.string() + " -p " + std::to_string(port_) +
                          " -c listen_addresses=127.0.0.1 -c fsync=off -c shared_buffers=16MB";
    for (const std::string& setting : settings_) options += " -c " + setting;
    CommandResult started =
        pgCtl({"-l", (dir_ / "server.log").string(), "-w", "-t", "60", "-o", options, "start"});
    if (started.exit_code != 0) {
      return failure("pg_ctl start failed: " + started.out + started.err +
                     readFile(dir_ / "server.log"));
    }
    running_ = true;
    return Status::ok();
  }

  // Signals the postmaster (SIGINT: fast shutdown, SIGQUIT: immediate shutdown) and waits
  // until it has removed its pid file, which it does last (pg_ctl stop does the same, but
  // polls ten times slower).
  Status halt(int signal) {
    (void)thaw();
    pid_t postmaster = postmasterPid();
    if (postmaster > 0 && ::kill(postmaster, signal) == 0 &&
        !waitFor([&] { return !std::filesystem::exists(dataDir() / "postmaster.pid"); },
                 std::chrono::seconds(60))) {
      return failure("the server did not stop within 60 s");
    }
    running_ = false;
    return Status::ok();
  }

  CommandResult pgCtl(std::vector<std::string> arguments) const {
    std::vector<std::string> argv = {(bin_ / "pg_ctl").string(), "-D", dataDir().string()};
    argv.insert(argv.end(), arguments.begin(), arguments.end());
    return runCommand(asServerUser(std::move(argv)), dir_);
  }

  static std::vector<pid_t> childrenOf(pid_t parent) {
    std::vector<pid_t> children;
    std::error_code ec;
    for (const auto& entry : std::filesystem::directory_iterator("/proc", ec)) {
      std::string name = entry.path().filename().string();
      pid_t pid = 0;
      if (std::from_chars(name.data(), name.data() + name.size(), pid).ec != std::errc()) continue;
      // /proc/PID/stat: "pid (command) state ppid ...": the command may hold spaces and
      // parentheses, so parse after the last ')'.
      std::string stat = readFile(entry.path() / "stat");
      std::size_t close = stat.rfind(')');
      if (close == std::string::npos) continue;
      char state = 0;
      long ppid = 0;
      if (std::sscanf(stat.c_str() + close + 1, " %c %ld", &state, &ppid) == 2 && ppid == parent) {
        children.push_back(pid);
      }
    }
    return children;
  }

  std::vector<std::string> settings_;
  std::filesystem::path bin_;
  std::filesystem::path dir_;
  int port_ = 0;
  bool running_ = false;
  std::vector<pid_t> frozen_;
};

}  // namespace iothub::testing
