#include "auth/connection_string.hpp"

#include <gtest/gtest.h>

namespace iothub::auth {
namespace {

constexpr std::string_view kKey = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";

TEST(ConnectionStringPairsTest, SplitsAtTheFirstEquals) {
  auto pairs = parseConnectionStringPairs("A=1;Key=abc==;Sig=sr=x&sig=y%3D");
  EXPECT_EQ(pairs.size(), 3u);
  EXPECT_EQ(pairs["A"], "1");
  EXPECT_EQ(pairs["Key"], "abc==");
  EXPECT_EQ(pairs["Sig"], "sr=x&sig=y%3D");
}

TEST(ConnectionStringPairsTest, DropsEmptyElementsNamesAndValues) {
  auto pairs = parseConnectionStringPairs(";;A=1;;=orphan;B=;C;D==;");
  EXPECT_EQ(pairs.size(), 2u);
  EXPECT_EQ(pairs["A"], "1");
  EXPECT_EQ(pairs["D"], "=");
  EXPECT_TRUE(parseConnectionStringPairs("").empty());
  EXPECT_TRUE(parseConnectionStringPairs(";").empty());
  EXPECT_TRUE(parseConnectionStringPairs("=").empty());
}

TEST(ConnectionStringPairsTest, LastDuplicateWinsAndKeysAreCaseSensitive) {
  auto pairs = parseConnectionStringPairs("A=1;a=2;A=3");
  EXPECT_EQ(pairs.size(), 2u);
  EXPECT_EQ(pairs["A"], "3");
  EXPECT_EQ(pairs["a"], "2");
}

TEST(ConnectionStringPairsTest, KeepsWhitespace) {
  auto pairs = parseConnectionStringPairs(" A = 1 ");
  EXPECT_EQ(pairs[" A "], " 1 ");
}

TEST(ServiceConnectionStringTest, ParsesAndRoundTrips) {
  std::string text =
      "HostName=myhub.example;SharedAccessKeyName=iothubowner;SharedAccessKey=" + std::string(kKey);
  auto cs = ServiceConnectionString::parse(text);
  ASSERT_TRUE(cs.isOk()) << cs.status().toString();
  EXPECT_EQ(cs->host_name, "myhub.example");
  EXPECT_EQ(cs->key_name, "iothubowner");
  EXPECT_EQ(cs->key, kKey);
  EXPECT_EQ(cs->toString(), text);
}

TEST(ServiceConnectionStringTest, AcceptsAnyOrderExtraFieldsAndDuplicates) {
  auto cs = ServiceConnectionString::parse(
      ";SharedAccessKey=" + std::string(kKey) +
      ";;HostName=old.example;Extra=1;SharedAccessKeyName=service;HostName=myhub.example;");
  ASSERT_TRUE(cs.isOk()) << cs.status().toString();
  EXPECT_EQ(cs->host_name, "myhub.example");
  EXPECT_EQ(cs->key_name, "service");
  EXPECT_EQ(cs->key, kKey);
}

TEST(ServiceConnectionStringTest, RejectsMissingFieldsNamingThem) {
  struct Case {
    std::string text;
    std::string_view field;
  };
  const std::string key = "SharedAccessKey=" + std::string(kKey);
  const Case cases[] = {
      {"SharedAccessKeyName=a;" + key, "HostName"},
      {"HostName=h;" + key, "SharedAccessKeyName"},
      {"HostName=h;SharedAccessKeyName=a", "SharedAccessKey"},
      {"HostName=;SharedAccessKeyName=a;" + key, "HostName"},
      {"hostname=h;SharedAccessKeyName=a;" + key, "HostName"},
      {"", "HostName"},
  };
  for (const auto& c : cases) {
    auto cs = ServiceConnectionString::parse(c.text);
    ASSERT_FALSE(cs.isOk()) << c.text;
    EXPECT_EQ(cs.code(), ErrorCode::ArgumentInvalid);
    EXPECT_NE(cs.status().message().find(c.field), std::string::npos) << cs.status().message();
  }
}

TEST(ServiceConnectionStringTest, RejectsKeyThatIsNotBase64WithoutEchoingIt) {
  auto cs = ServiceConnectionString::parse(
      "HostName=h;SharedAccessKeyName=a;SharedAccessKey=secret!value");
  ASSERT_FALSE(cs.isOk());
  EXPECT_EQ(cs.code(), ErrorCode::ArgumentInvalid);
  EXPECT_NE(cs.status().message().find("SharedAccessKey"), std::string::npos);
  EXPECT_EQ(cs.status().message().find("secret!value"), std::string::npos);
}

TEST(DeviceConnectionStringTest, ParsesKeyStringAndRoundTrips) {
  std::string text = "HostName=myhub.example;DeviceId=dev1;SharedAccessKey=" + std::string(kKey);
  auto cs = DeviceConnectionString::parse(text);
  ASSERT_TRUE(cs.isOk()) << cs.status().toString();
  EXPECT_EQ(cs->host_name, "myhub.example");
  EXPECT_EQ(cs->device_id, "dev1");
  EXPECT_EQ(cs->shared_access_key, kKey);
  EXPECT_FALSE(cs->module_id.has_value());
  EXPECT_FALSE(cs->shared_access_key_name.has_value());
  EXPECT_FALSE(cs->shared_access_signature.has_value());
  EXPECT_FALSE(cs->gateway_host_name.has_value());
  EXPECT_FALSE(cs->x509);
  EXPECT_EQ(cs->toString(), text);
}

TEST(DeviceConnectionStringTest, ParsesAllOptionalParts) {
  std::string text =
      "HostName=myhub.example;DeviceId=dev1;ModuleId=mod1;SharedAccessKey=" + std::string(kKey) +
      ";GatewayHostName=127.0.0.1:9883;SharedAccessKeyName=device";
  auto cs = DeviceConnectionString::parse(text);
  ASSERT_TRUE(cs.isOk()) << cs.status().toString();
  EXPECT_EQ(cs->module_id, "mod1");
  EXPECT_EQ(cs->gateway_host_name, "127.0.0.1:9883");
  EXPECT_EQ(cs->shared_access_key_name, "device");
  EXPECT_EQ(cs->toString(), text);
}

TEST(DeviceConnectionStringTest, KeepsSignatureWithEqualsSigns) {
  std::string sas =
      "SharedAccessSignature sr=myhub.example%2Fdevices%2Fdev1&sig=abc%3D&se=1700000000";
  auto cs = DeviceConnectionString::parse(
      "HostName=myhub.example;DeviceId=dev1;"
      "SharedAccessSignature=" +
      sas);
  ASSERT_TRUE(cs.isOk()) << cs.status().toString();
  EXPECT_EQ(cs->shared_access_signature, sas);
  EXPECT_EQ(DeviceConnectionString::parse(cs->toString()).value().shared_access_signature, sas);
}

TEST(DeviceConnectionStringTest, ParsesX509) {
  auto cs = DeviceConnectionString::parse("HostName=h;DeviceId=d;x509=true");
  ASSERT_TRUE(cs.isOk()) << cs.status().toString();
  EXPECT_TRUE(cs->x509);
  EXPECT_EQ(cs->toString(), "HostName=h;DeviceId=d;x509=true");
  EXPECT_TRUE(DeviceConnectionString::parse("HostName=h;DeviceId=d;x509=TRUE").isOk());
  EXPECT_EQ(DeviceConnectionString::parse("HostName=h;DeviceId=d;x509=yes").code(),
            ErrorCode::ArgumentInvalid);
}

TEST(DeviceConnectionStringTest, LastDuplicateWins) {
  auto cs = DeviceConnectionString::parse("HostName=h;DeviceId=first;x509=true;DeviceId=second");
  ASSERT_TRUE(cs.isOk());
  EXPECT_EQ(cs->device_id, "second");
}

TEST(DeviceConnectionStringTest, RejectsMissingIdentity) {
  std::string key = ";SharedAccessKey=" + std::string(kKey);
  auto no_host = DeviceConnectionString::parse("DeviceId=d" + key);
  ASSERT_FALSE(no_host.isOk());
  EXPECT_EQ(no_host.code(), ErrorCode::ArgumentInvalid);
  EXPECT_NE(no_host.status().message().find("HostName"), std::string::npos);
  auto no_device = DeviceConnectionString::parse("HostName=h;DeviceId=" + key);
  ASSERT_FALSE(no_device.isOk());
  EXPECT_NE(no_device.status().message().find("DeviceId"), std::string::npos);
}

TEST(DeviceConnectionStringTest, RequiresExactlyOneCredential) {
  const std::string key = ";SharedAccessKey=" + std::string(kKey);
  const std::string sas = ";SharedAccessSignature=SharedAccessSignature sr=h&sig=s&se=1";
  for (const std::string& text :
       {std::string("HostName=h;DeviceId=d"), std::string("HostName=h;DeviceId=d;SharedAccessKey="),
        "HostName=h;DeviceId=d" + key + sas, "HostName=h;DeviceId=d" + key + ";x509=true",
        "HostName=h;DeviceId=d" + sas + ";x509=true"}) {
    auto cs = DeviceConnectionString::parse(text);
    ASSERT_FALSE(cs.isOk()) << text;
    EXPECT_EQ(cs.code(), ErrorCode::ArgumentInvalid);
    EXPECT_NE(cs.status().message().find("exactly one"), std::string::npos)
        << cs.status().message();
  }
}

TEST(DeviceConnectionStringTest, RejectsKeyThatIsNotBase64) {
  auto cs = DeviceConnectionString::parse("HostName=h;DeviceId=d;SharedAccessKey=abc");
  ASSERT_FALSE(cs.isOk());
  EXPECT_EQ(cs.code(), ErrorCode::ArgumentInvalid);
  EXPECT_NE(cs.status().message().find("base64"), std::string::npos);
}

}  // namespace
}  // namespace iothub::auth
