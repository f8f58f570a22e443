#include <gtest/gtest.h>

#include <cstdio>
#include <ctime>

#include "common/clock.hpp"
#include "common/encoding.hpp"
#include "common/error_code.hpp"
#include "common/json.hpp"
#include "common/random.hpp"
#include "common/status.hpp"
#include "common/time_format.hpp"

namespace iothub {
namespace {

TEST(Base64Test, RoundTripsAllLengths) {
  std::string bytes;
  for (int i = 0; i < 40; ++i) {
    auto decoded = base64Decode(base64Encode(bytes));
    ASSERT_TRUE(decoded.has_value());
    EXPECT_EQ(*decoded, bytes);
    bytes.push_back(static_cast<char>(i * 37));
  }
}

TEST(Base64Test, MatchesRfc4648Vectors) {
  EXPECT_EQ(base64Encode("f"), "Zg==");
  EXPECT_EQ(base64Encode("fo"), "Zm8=");
  EXPECT_EQ(base64Encode("foobar"), "Zm9vYmFy");
  EXPECT_EQ(base64Decode("Zm8=").value(), "fo");
}

TEST(Base64Test, RejectsMalformedInput) {
  EXPECT_FALSE(base64Decode("Zm8").has_value());
  EXPECT_FALSE(base64Decode("Z=m8").has_value());
  EXPECT_FALSE(base64Decode("Zm*=").has_value());
  EXPECT_FALSE(base64Decode("Zm 8").has_value());
}

TEST(Fnv1aTest, MatchesTheReferenceVectors) {
  EXPECT_EQ(fnv1aHex(""), "cbf29ce484222325");
  EXPECT_EQ(fnv1aHex("a"), "af63dc4c8601ec8c");
  EXPECT_EQ(fnv1aHex("foobar"), "85944171f73967e8");
}

TEST(UrlEncodingTest, StrictEncodingMatchesAzureSdks) {
  EXPECT_EQ(urlEncodeStrict("a+b/c=d!'()*~"), "a%2Bb%2Fc%3Dd%21%27%28%29%2A~");
  EXPECT_EQ(urlEncodeStrict("dev 1/x"), "dev%201%2Fx");
  EXPECT_EQ(urlDecode("dev%201%2Fx").value(), "dev 1/x");
  EXPECT_FALSE(urlDecode("%4").has_value());
  EXPECT_FALSE(urlDecode("%zz").has_value());
}

TEST(ConstantTimeEqualsTest, ComparesContentAndLength) {
  EXPECT_TRUE(constantTimeEquals("abc", "abc"));
  EXPECT_FALSE(constantTimeEquals("abc", "abd"));
  EXPECT_FALSE(constantTimeEquals("abc", "abcd"));
}

TEST(TimestampTest, FormatsWithSevenFractionalDigits) {
  SystemTime t{std::chrono::seconds{1672695734} + std::chrono::microseconds{705029}};
  EXPECT_EQ(formatTimestamp(t), "2023-01-02T21:42:14.7050290Z");
}

// Every day of 1677–2262 at three times of day, against the C library's calendar: the
// formatter does its own calendar arithmetic.
TEST(TimestampTest, FormatsEveryDayOfTheRangeAsTheCLibraryDoes) {
  const std::int64_t first = unixSeconds(kEarliestTime) / 86'400 + 1;
  const std::int64_t last = unixSeconds(kLatestTime) / 86'400 - 1;
  for (std::int64_t day = first; day <= last; ++day) {
    for (std::int64_t second : {0, 45'296, 86'399}) {
      std::time_t tt = static_cast<std::time_t>(day * 86'400 + second);
      std::tm tm{};
      gmtime_r(&tt, &tm);
      char expected[96];
      std::snprintf(expected, sizeof expected, "%04d-%02d-%02dT%02d:%02d:%02d.1234567Z",
                    tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
      SystemTime t{std::chrono::seconds{tt} + std::chrono::nanoseconds{123'456'789}};
      ASSERT_EQ(formatTimestamp(t), expected) << tt;
    }
  }
  // Before 1970: the fraction still counts forward from the second before.
  EXPECT_EQ(formatTimestamp(SystemTime{std::chrono::nanoseconds{-1}}),
            "1969-12-31T23:59:59.9999999Z");
}

TEST(TimestampTest, ParsesJavaScriptAndAzureForms) {
  auto a = parseTimestamp("2030-01-01T00:00:00.000Z");
  ASSERT_TRUE(a.has_value());
  EXPECT_EQ(unixSeconds(*a), 1893456000);
  auto b = parseTimestamp("2023-01-02T21:42:14.7050295Z");
  ASSERT_TRUE(b.has_value());
  EXPECT_EQ(formatTimestamp(*b), "2023-01-02T21:42:14.7050295Z");
  auto c = parseTimestamp("2030-01-01T02:00:00+02:00");
  ASSERT_TRUE(c.has_value());
  EXPECT_EQ(unixSeconds(*c), 1893456000);
}

TEST(TimestampTest, RejectsGarbage) {
  EXPECT_FALSE(parseTimestamp("").has_value());
  EXPECT_FALSE(parseTimestamp("tomorrow").has_value());
  EXPECT_FALSE(parseTimestamp("2030-13-01T00:00:00Z").has_value());
  EXPECT_FALSE(parseTimestamp("2030-01-01T00:00:00Zjunk").has_value());
}

// Regression: "9999-12-31T00:00:00Z" overflowed the nanosecond count (undefined behaviour)
// and came out as a time in the past, so a job scheduled for then ran at once.
TEST(TimestampTest, RefusesInstantsOutsideTheRepresentableRange) {
  EXPECT_FALSE(parseTimestamp("9999-12-31T00:00:00Z").has_value());
  EXPECT_FALSE(parseTimestamp("9999-12-31T23:59:59.9999999Z").has_value());
  EXPECT_FALSE(parseTimestamp("0001-01-01T00:00:00Z").has_value());
  EXPECT_FALSE(parseTimestamp("1000-06-15T12:00:00Z").has_value());
  // The 2262 boundary, to the second.
  EXPECT_EQ(formatTimestamp(kLatestTime), "2262-04-11T23:47:16.0000000Z");
  EXPECT_EQ(parseTimestamp("2262-04-11T23:47:16Z"), kLatestTime);
  EXPECT_FALSE(parseTimestamp("2262-04-11T23:47:16.000000001Z").has_value());
  EXPECT_FALSE(parseTimestamp("2262-04-11T23:47:17Z").has_value());
  EXPECT_FALSE(parseTimestamp("2262-04-12T00:00:00Z").has_value());
  EXPECT_FALSE(parseTimestamp("2262-04-11T23:47:60Z").has_value());
  EXPECT_EQ(formatTimestamp(kEarliestTime), "1677-09-21T00:12:44.0000000Z");
  EXPECT_EQ(parseTimestamp("1677-09-21T00:12:44Z"), kEarliestTime);
  EXPECT_FALSE(parseTimestamp("1677-09-21T00:12:43.999999999Z").has_value());
  // Offsets can push an in-range text out of range, and back in.
  EXPECT_FALSE(parseTimestamp("2262-04-11T23:00:00-01:00").has_value());
  EXPECT_EQ(parseTimestamp("2262-04-12T00:47:16+01:00"), kLatestTime);
  EXPECT_FALSE(parseTimestamp("1677-09-21T01:00:00+01:00").has_value());
  EXPECT_EQ(parseTimestamp("1677-09-20T23:12:44-01:00"), kEarliestTime);
}

TEST(TimestampTest, ChecksTheCalendar) {
  EXPECT_FALSE(parseTimestamp("0000-01-01T00:00:00Z").has_value());
  EXPECT_FALSE(parseTimestamp("2023-02-29T00:00:00Z").has_value());
  EXPECT_FALSE(parseTimestamp("2024-02-30T00:00:00Z").has_value());
  EXPECT_FALSE(parseTimestamp("2100-02-29T00:00:00Z").has_value());
  EXPECT_FALSE(parseTimestamp("2024-04-31T00:00:00Z").has_value());
  EXPECT_FALSE(parseTimestamp("2024-00-10T00:00:00Z").has_value());
  EXPECT_FALSE(parseTimestamp("2024-01-00T00:00:00Z").has_value());
  EXPECT_FALSE(parseTimestamp("2024-01-01T24:00:00Z").has_value());
  EXPECT_FALSE(parseTimestamp("2024-01-01T00:60:00Z").has_value());
  EXPECT_FALSE(parseTimestamp("2024-01-01T00:00:61Z").has_value());
  EXPECT_FALSE(parseTimestamp("2024-01-01T00:00:00+24:00").has_value());
  EXPECT_FALSE(parseTimestamp("2024-01-01T00:00:00+01:60").has_value());
  EXPECT_FALSE(parseTimestamp("2024-01-01T00:00:00.Z").has_value());
  EXPECT_FALSE(parseTimestamp("10000-01-01T00:00:00Z").has_value());
  EXPECT_FALSE(parseTimestamp("+2024-01-01T00:00:00Z").has_value());
  EXPECT_FALSE(parseTimestamp("2024-1-01T00:00:00Z").has_value());
  EXPECT_FALSE(parseTimestamp("2024-01-01T00:00:0Z").has_value());
  EXPECT_EQ(formatTimestamp(*parseTimestamp("2024-02-29T12:00:00Z")),
            "2024-02-29T12:00:00.0000000Z");
  EXPECT_EQ(formatTimestamp(*parseTimestamp("2000-02-29T00:00:00Z")),
            "2000-02-29T00:00:00.0000000Z");
  // A leap second is read as the first second of the next minute.
  EXPECT_EQ(formatTimestamp(*parseTimestamp("2016-12-31T23:59:60Z")),
            "2017-01-01T00:00:00.0000000Z");
  // Fractions: digits beyond nanoseconds are ignored, however many there are.
  std::string nines = "2030-01-01T00:00:00." + std::string(100000, '9') + "Z";
  EXPECT_EQ(formatTimestamp(*parseTimestamp(nines)), "2030-01-01T00:00:00.9999999Z");
  EXPECT_EQ(formatTimestamp(*parseTimestamp("2030-01-01t00:00:00.5z")),
            "2030-01-01T00:00:00.5000000Z");
  EXPECT_EQ(formatTimestamp(*parseTimestamp("2030-01-01 00:00:00")),
            "2030-01-01T00:00:00.0000000Z");
}

TEST(TimestampTest, ClampedParsingKeepsValidFarTimesAtTheEndsOfTheRange) {
  auto far = parseTimestampClamped("9999-12-31T00:00:00Z");
  ASSERT_TRUE(far.has_value());
  EXPECT_TRUE(far->clamped);
  EXPECT_EQ(far->time, kLatestTime);
  auto offset = parseTimestampClamped("9999-12-31T23:59:59.9999999-23:59");
  ASSERT_TRUE(offset.has_value());
  EXPECT_EQ(offset->time, kLatestTime);
  auto past = parseTimestampClamped("0001-01-01T00:00:00+23:59");
  ASSERT_TRUE(past.has_value());
  EXPECT_TRUE(past->clamped);
  EXPECT_EQ(past->time, kEarliestTime);
  auto normal = parseTimestampClamped("2030-01-01T00:00:00Z");
  ASSERT_TRUE(normal.has_value());
  EXPECT_FALSE(normal->clamped);
  EXPECT_EQ(normal->time, parseTimestamp("2030-01-01T00:00:00Z"));
  EXPECT_EQ(parseTimestampClamped("2262-04-11T23:47:16Z")->clamped, false);
  for (const char* bad : {"10000-01-01T00:00:00Z", "0000-12-31T00:00:00Z", "9999-02-30T00:00:00Z",
                          "9999-12-31T00:00:00Zjunk", "soon", ""}) {
    EXPECT_FALSE(parseTimestampClamped(bad).has_value()) << bad;
  }
}

TEST(TimestampTest, AddClampedNeverOverflows) {
  using namespace std::chrono;
  SystemTime t = *parseTimestamp("2030-01-01T00:00:00Z");
  EXPECT_EQ(addClamped(t, seconds{3600}), t + hours{1});
  EXPECT_EQ(addClamped(t, seconds{-3600}), t - hours{1});
  EXPECT_EQ(addClamped(t, seconds::max()), kLatestTime);
  EXPECT_EQ(addClamped(t, seconds::min()), kEarliestTime);
  EXPECT_EQ(addClamped(kLatestTime, seconds{1}), kLatestTime);
  EXPECT_EQ(addClamped(kLatestTime - seconds{10}, seconds{10}), kLatestTime);
  EXPECT_EQ(addClamped(kLatestTime - seconds{10}, seconds{9}), kLatestTime - seconds{1});
  EXPECT_EQ(addClamped(SystemTime::max(), seconds{1}), kLatestTime);
  EXPECT_EQ(addClamped(SystemTime::min(), seconds{-1}), kEarliestTime);
  EXPECT_EQ(addClamped(kEarliestTime + seconds{5}, seconds{-5}), kEarliestTime);
  EXPECT_EQ(addClamped(kEarliestTime + seconds{5}, seconds{-6}), kEarliestTime);
  EXPECT_EQ(addClamped(kLatestTime, seconds{-366LL * 86400}), kLatestTime - days{366});
}

TEST(ErrorTableTest, MapsCodesToAzureStatuses) {
  EXPECT_EQ(errorInfo(ErrorCode::DeviceNotFound).http_status, 404);
  EXPECT_EQ(errorInfo(ErrorCode::DeviceNotFound).name, "DeviceNotFound");
  EXPECT_EQ(errorInfo(ErrorCode::DeviceAlreadyExists).azure_code, 409001);
  EXPECT_EQ(errorInfo(ErrorCode::PreconditionFailed).http_status, 412);
  EXPECT_EQ(errorInfo(ErrorCode::GatewayTimeout).azure_code, 504101);
}

TEST(ErrorTableTest, FindsErrorCodeByAzureCode) {
  EXPECT_EQ(errorCodeFromAzureCode(404103), ErrorCode::DeviceNotOnline);
  EXPECT_EQ(errorCodeFromAzureCode(409001), ErrorCode::DeviceAlreadyExists);
  EXPECT_EQ(errorCodeFromAzureCode(401002), ErrorCode::Unauthorized);
  EXPECT_EQ(errorCodeFromAzureCode(0), std::nullopt);
  EXPECT_EQ(errorCodeFromAzureCode(404999), std::nullopt);
  EXPECT_EQ(errorCodeFromAzureCode(-1), std::nullopt);
  // No wrap-around: a 64-bit value whose low 32 bits are a known code is still unknown.
  EXPECT_EQ(errorCodeFromAzureCode((std::int64_t{1} << 32) + 404001), std::nullopt);
}

TEST(ErrorTableTest, FindsErrorCodeByAzureName) {
  EXPECT_EQ(errorCodeFromName("DeviceNotFound"), ErrorCode::DeviceNotFound);
  EXPECT_EQ(errorCodeFromName("IotHubUnauthorizedAccess"), ErrorCode::Unauthorized);
  EXPECT_EQ(errorCodeFromName("ThrottlingException"), ErrorCode::Throttled);
  EXPECT_EQ(errorCodeFromName("NotFound"), ErrorCode::NotFound);
  EXPECT_EQ(errorCodeFromName(""), std::nullopt);
  EXPECT_EQ(errorCodeFromName("Ok"), std::nullopt);
  EXPECT_EQ(errorCodeFromName("devicenotfound"), std::nullopt);
  EXPECT_EQ(errorCodeFromName("Nope"), std::nullopt);
}

TEST(ErrorTableTest, SharedCodesAndNamesResolveToTheCanonicalErrorCode) {
  EXPECT_EQ(errorCodeFromAzureCode(503001), ErrorCode::ServiceUnavailable);
  EXPECT_EQ(errorCodeFromName("ServiceUnavailable"), ErrorCode::ServiceUnavailable);
  EXPECT_EQ(errorCodeFromAzureCode(500001), ErrorCode::ServerError);
  EXPECT_EQ(errorCodeFromName("ServerError"), ErrorCode::ServerError);
}

TEST(ErrorTableTest, ReverseLookupsRoundTripEveryFailure) {
  for (int i = 1; i <= static_cast<int>(ErrorCode::IotHubQuotaExceeded); ++i) {
    auto code = static_cast<ErrorCode>(i);
    const ErrorInfo& info = errorInfo(code);
    SCOPED_TRACE(std::string(info.name));
    auto by_name = errorCodeFromName(info.name);
    ASSERT_TRUE(by_name.has_value());
    EXPECT_EQ(errorInfo(*by_name).name, info.name);
    EXPECT_LE(static_cast<int>(*by_name), i);
    if (info.azure_code == 0) continue;
    auto by_code = errorCodeFromAzureCode(info.azure_code);
    ASSERT_TRUE(by_code.has_value());
    EXPECT_EQ(errorInfo(*by_code).azure_code, info.azure_code);
    EXPECT_LE(static_cast<int>(*by_code), i);
  }
}

TEST(ResultTest, HoldsValueOrError) {
  Result<int> good = 42;
  ASSERT_TRUE(good.isOk());
  EXPECT_EQ(*good, 42);
  Result<int> bad = Status(ErrorCode::DeviceNotFound, "no such device");
  EXPECT_FALSE(bad.isOk());
  EXPECT_EQ(bad.code(), ErrorCode::DeviceNotFound);
  EXPECT_EQ(bad.status().toString(), "DeviceNotFound: no such device");
}

TEST(JsonTest, ParseReportsMalformedInputAsFormatError) {
  EXPECT_TRUE(parseJson(R"({"a":[1,2]})").isOk());
  auto bad = parseJson("{\"a\":");
  EXPECT_EQ(bad.code(), ErrorCode::IotHubFormatError);
  auto deep = parseJson(std::string(100, '[') + std::string(100, ']'), 64);
  EXPECT_EQ(deep.code(), ErrorCode::IotHubFormatError);
}

TEST(RandomTest, SymmetricKeysAre256BitBase64) {
  SecureRandom random;
  std::string key = random.symmetricKey();
  EXPECT_EQ(key.size(), 44u);
  EXPECT_EQ(base64Decode(key)->size(), 32u);
  EXPECT_NE(key, random.symmetricKey());
}

TEST(FakeClockTest, AdvancesOnlyWhenTold) {
  FakeClock clock;
  auto t0 = clock.now();
  clock.advance(std::chrono::seconds{5});
  EXPECT_EQ(clock.now() - t0, std::chrono::seconds{5});
}

}  // namespace
}  // namespace iothub
