#include "server/store_location.hpp"

#include <gtest/gtest.h>

namespace iothub::server {
namespace {

TEST(StoreLocationTest, NothingMeansTheEmbeddedSqliteFileInTheDataDirectory) {
  auto location = parseStoreLocation("", "/var/lib/iothub");
  ASSERT_TRUE(location.isOk());
  EXPECT_EQ(location->kind, StoreLocation::Kind::Sqlite);
  EXPECT_EQ(location->sqlite_file, std::filesystem::path("/var/lib/iothub/iothub.db"));
}

TEST(StoreLocationTest, PostgresUrisAndKeyValueStringsArePostgres) {
  for (std::string_view text : {"postgresql://hub@db.example/iothub", "postgres://localhost",
                                "host=/run/pg dbname=iothub", "  dbname=iothub"}) {
    auto location = parseStoreLocation(text, "d");
    ASSERT_TRUE(location.isOk()) << text;
    EXPECT_EQ(location->kind, StoreLocation::Kind::Postgres) << text;
    EXPECT_EQ(location->conninfo, text);
  }
}

TEST(StoreLocationTest, AnythingElseIsRefusedWithoutRepeatingAPassword) {
  for (std::string_view text : {"mysql://root:hunter2@db/iothub", "iothub.db", "=x", "sqlite"}) {
    auto location = parseStoreLocation(text, "d");
    ASSERT_FALSE(location.isOk()) << text;
    EXPECT_EQ(location.code(), ErrorCode::ArgumentInvalid);
    EXPECT_NE(location.status().message().find("PostgreSQL connection string"), std::string::npos);
    EXPECT_EQ(location.status().message().find("hunter2"), std::string::npos);
  }
}

TEST(StoreLocationTest, PasswordsAreRedactedInEveryForm) {
  EXPECT_EQ(redactConninfo("postgresql://hub:s3cr%40t@db:5432/iothub?sslmode=require"),
            "postgresql://hub:***@db:5432/iothub?sslmode=require");
  EXPECT_EQ(redactConninfo("postgresql://hub@db/iothub?password=s3cret&sslmode=require"),
            "postgresql://hub@db/iothub?password=***&sslmode=require");
  EXPECT_EQ(redactConninfo("postgres://hub:p@ss@db/iothub"), "postgres://hub:***@db/iothub");
  EXPECT_EQ(redactConninfo("postgresql://db/iothub"), "postgresql://db/iothub");
  EXPECT_EQ(redactConninfo("host=db password=s3cret dbname=iothub"),
            "host=db password=*** dbname=iothub");
  EXPECT_EQ(redactConninfo("host=db PASSWORD = 'it\\'s secret' dbname=iothub"),
            "host=db PASSWORD = *** dbname=iothub");
  EXPECT_EQ(redactConninfo("host=db passwordfile=/x dbname=iothub"),
            "host=db passwordfile=/x dbname=iothub");
  EXPECT_EQ(redactConninfo("host=db mypassword=x"), "host=db mypassword=x");
}

TEST(StoreLocationTest, DescriptionsNeverCarryThePassword) {
  auto location = parseStoreLocation("postgresql://hub:s3cret@db/iothub", "d");
  ASSERT_TRUE(location.isOk());
  EXPECT_EQ(location->description, "PostgreSQL postgresql://hub:***@db/iothub");
}

}  // namespace
}  // namespace iothub::server
