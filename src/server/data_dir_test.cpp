#include "server/data_dir.hpp"

#include <gtest/gtest.h>
#include <sys/resource.h>
#include <sys/stat.h>

#include <fstream>

#include "tests/support/temp_dir.hpp"

namespace iothub::server {
namespace {

namespace fs = std::filesystem;

unsigned mode(const fs::path& p) {
  struct stat st {};
  EXPECT_EQ(::lstat(p.c_str(), &st), 0) << p;
  return st.st_mode & 07777;
}

TEST(DataDirLockTest, SecondHolderIsRefusedUntilTheFirstLetsGo) {
  testing::TempDir tmp;
  fs::path dir = tmp.path() / "hub";
  fs::create_directories(dir);
  auto first = DataDirLock::acquire(dir);
  ASSERT_TRUE(first.isOk()) << first.status().toString();
  // flock(2) locks conflict between open file descriptions, even in one process.
  auto second = DataDirLock::acquire(dir);
  ASSERT_FALSE(second.isOk());
  EXPECT_EQ(second.code(), ErrorCode::ServiceUnavailable);
  EXPECT_NE(second.status().message().find("in use by another iothubd (pid " +
                                           std::to_string(::getpid()) + ")"),
            std::string::npos)
      << second.status().message();
  { DataDirLock released = std::move(*first); }
  EXPECT_TRUE(DataDirLock::acquire(dir).isOk()) << "free again once the holder is gone";
}

TEST(MakePrivateTest, NarrowsTheDirectoryAndEveryFileBelowIt) {
  testing::TempDir tmp;
  fs::path dir = tmp.path() / "hub";
  fs::create_directories(dir / "tls");
  for (const char* name : {"iothub.db", "iothub.db-wal", "tls/server-key.pem"}) {
    std::ofstream(dir / name) << "secret";
  }
  fs::permissions(dir, fs::perms(0755));
  fs::permissions(dir / "tls", fs::perms(0755));
  fs::permissions(dir / "iothub.db", fs::perms(0644));
  fs::permissions(dir / "iothub.db-wal", fs::perms(0666));
  fs::permissions(dir / "tls/server-key.pem", fs::perms(0640));

  auto changed = makePrivate(dir);
  ASSERT_TRUE(changed.isOk()) << changed.status().toString();
  EXPECT_EQ(*changed, 5u);
  EXPECT_EQ(mode(dir), 0700u);
  EXPECT_EQ(mode(dir / "tls"), 0700u);
  EXPECT_EQ(mode(dir / "iothub.db"), 0600u);
  EXPECT_EQ(mode(dir / "iothub.db-wal"), 0600u);
  EXPECT_EQ(mode(dir / "tls/server-key.pem"), 0600u);
  EXPECT_EQ(makePrivate(dir).value(), 0u) << "nothing left to narrow";

  // The umask it set keeps new files private too.
  std::ofstream(dir / "later.json") << "{}";
  EXPECT_EQ(mode(dir / "later.json"), 0600u);
  // A narrower permission is kept, not widened.
  fs::permissions(dir / "iothub.db", fs::perms(0400));
  EXPECT_EQ(makePrivate(dir).value(), 0u);
  EXPECT_EQ(mode(dir / "iothub.db"), 0400u);

  // A missing directory is created private, with nothing to report.
  EXPECT_EQ(makePrivate(tmp.path() / "new" / "hub").value(), 0u);
  EXPECT_EQ(mode(tmp.path() / "new" / "hub"), 0700u);
}

TEST(FileLimitTest, SoftLimitIsRaisedToTheHardLimit) {
  rlimit before{};
  ASSERT_EQ(::getrlimit(RLIMIT_NOFILE, &before), 0);
  rlimit lowered = before;
  lowered.rlim_cur = std::min<rlim_t>(before.rlim_max, 512);
  ASSERT_EQ(::setrlimit(RLIMIT_NOFILE, &lowered), 0);
  FileLimit limit = raiseOpenFileLimit();
  EXPECT_EQ(limit.soft_before, lowered.rlim_cur);
  EXPECT_EQ(limit.hard, before.rlim_max);
  EXPECT_EQ(limit.soft, before.rlim_max);
  rlimit now{};
  ASSERT_EQ(::getrlimit(RLIMIT_NOFILE, &now), 0);
  EXPECT_EQ(now.rlim_cur, before.rlim_max);
  ASSERT_EQ(::setrlimit(RLIMIT_NOFILE, &before), 0);
}

TEST(FileLimitTest, DefaultMaxConnectionsKeepsDescriptorsForTheRest) {
  EXPECT_EQ(defaultMaxConnections(20000), 20000u - kReservedFds);
  EXPECT_EQ(defaultMaxConnections(1024), 1024u - kReservedFds);
  EXPECT_EQ(defaultMaxConnections(256), 128u);
}

}  // namespace
}  // namespace iothub::server
