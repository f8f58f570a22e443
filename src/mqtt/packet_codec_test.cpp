// Byte-exact encode and decode vectors for every MQTT 3.1.1 control packet, written by hand
// from the OASIS specification's figures, plus the encoder's refusals.

#include <gtest/gtest.h>

#include <limits>
#include <string>

#include "mqtt/decoder.hpp"
#include "mqtt/encoder.hpp"
#include "mqtt/test_bytes.hpp"
#include "mqtt/wire.hpp"

namespace iothub::mqtt {
namespace {

using testing::hex;

constexpr std::string_view kNodeUserName =
    "localhost/dev1/?api-version=2021-04-12&DeviceClientType=azure-iot-device%2F1.18.4%20(node%"
    "20v20.20.2%3B%20Debian%2012%3B%20x64)";

// Encoding `packet` gives exactly `bytes`, and decoding `bytes` gives back `packet`.
void expectVector(const Packet& packet, const std::string& bytes) {
  std::string encoded;
  ASSERT_TRUE(encode(packet, encoded).isOk());
  EXPECT_EQ(encoded, bytes) << "encoding of " << packetTypeName(packetType(packet));
  EXPECT_EQ(encodedSize(packet), bytes.size());
  auto decoded = decodePacket(bytes);
  ASSERT_TRUE(decoded.isOk()) << decoded.status().message();
  EXPECT_EQ(*decoded, packet) << "decoding of " << packetTypeName(packetType(packet));
}

void expectEncodeFails(const Packet& packet, std::string_view message_part) {
  std::string out = "keep";
  Status status = encode(packet, out);
  ASSERT_FALSE(status.isOk());
  EXPECT_EQ(status.code(), ErrorCode::IotHubFormatError);
  EXPECT_NE(status.message().find(message_part), std::string::npos) << status.message();
  EXPECT_EQ(out, "keep") << "a failed encode must not touch the output";
}

TEST(ConnectCodecTest, MinimalCleanSession) {
  expectVector(Connect{}, hex("10 0C 00 04 4D 51 54 54 04 02 00 00 00 00"));
}

TEST(ConnectCodecTest, AsTheNodeDeviceSdkSendsIt) {
  // docs/protocol.md §2.1: clean session 0, keep-alive 180, user name and SAS password, no will.
  Connect connect;
  connect.client_id = "dev1";
  connect.clean_session = false;
  connect.keep_alive = 180;
  connect.user_name = std::string(kNodeUserName);
  connect.password = "SharedAccessSignature sr=x&sig=y&se=1";
  // Remaining length 184 takes two bytes: B8 01.
  const std::string bytes = hex("10 B8 01 00 04 4D 51 54 54 04 C0 00 B4 00 04") + "dev1" +
                            hex("00 7F") + std::string(kNodeUserName) + hex("00 25") +
                            "SharedAccessSignature sr=x&sig=y&se=1";
  expectVector(connect, bytes);
}

TEST(ConnectCodecTest, WillWithQoS1AndRetain) {
  Connect connect;
  connect.client_id = "c";
  connect.keep_alive = 60;
  connect.will = Will{"w/t", "bye", QoS::AtLeastOnce, true};
  expectVector(connect, hex("10 17 00 04 4D 51 54 54 04 2E 00 3C 00 01 63 00 03 77 2F 74 00 03 "
                            "62 79 65"));
}

TEST(ConnectCodecTest, UserNameWithoutPassword) {
  Connect connect;
  connect.client_id = "id";
  connect.clean_session = false;
  connect.keep_alive = 0xFFFF;
  connect.user_name = "u";
  expectVector(connect, hex("10 11 00 04 4D 51 54 54 04 80 FF FF 00 02 69 64 00 01 75"));
}

TEST(ConnectCodecTest, WillQoS2EmptyMessageAndBinaryPassword) {
  Connect connect;
  connect.client_id = "x";
  connect.keep_alive = 10;
  connect.will = Will{"t", "", QoS::ExactlyOnce, false};
  connect.user_name = "u";
  connect.password = std::string("\xFF\x00", 2);
  expectVector(connect, hex("10 19 00 04 4D 51 54 54 04 D6 00 0A 00 01 78 00 01 74 00 00 00 01 75 "
                            "00 02 FF 00"));
}

TEST(ConnAckCodecTest, AllShapes) {
  expectVector(ConnAck{}, hex("20 02 00 00"));
  expectVector(ConnAck{true, ConnectReturnCode::Accepted}, hex("20 02 01 00"));
  expectVector(ConnAck{false, ConnectReturnCode::UnacceptableProtocolVersion}, hex("20 02 00 01"));
  expectVector(ConnAck{false, ConnectReturnCode::IdentifierRejected}, hex("20 02 00 02"));
  expectVector(ConnAck{false, ConnectReturnCode::ServerUnavailable}, hex("20 02 00 03"));
  expectVector(ConnAck{false, ConnectReturnCode::BadUserNameOrPassword}, hex("20 02 00 04"));
  expectVector(ConnAck{false, ConnectReturnCode::NotAuthorized}, hex("20 02 00 05"));
}

TEST(PublishCodecTest, QoS0) {
  expectVector(Publish{"a/b", "hi"}, hex("30 07 00 03 61 2F 62 68 69"));
}

TEST(PublishCodecTest, QoS1WithDupAndRetain) {
  Publish publish{"a/b", "x", QoS::AtLeastOnce, true, true, 10};
  expectVector(publish, hex("3B 08 00 03 61 2F 62 00 0A 78"));
}

TEST(PublishCodecTest, QoS2WithEmptyPayload) {
  expectVector(Publish{"t", "", QoS::ExactlyOnce, false, false, 0x1234},
               hex("34 05 00 01 74 12 34"));
}

TEST(PublishCodecTest, RetainedQoS0) {
  expectVector(Publish{"t", "", QoS::AtMostOnce, true}, hex("31 03 00 01 74"));
}

TEST(PublishCodecTest, AzureTwinGet) {
  // docs/protocol.md §3.3: the Node SDK's twin GET carries a single space as payload.
  expectVector(Publish{"$iothub/twin/GET/?$rid=1", " "},
               hex("30 1B 00 18") + "$iothub/twin/GET/?$rid=1" + " ");
}

TEST(PublishCodecTest, BinaryPayloadIsNotValidated) {
  const std::string payload("\x00\xFF\xC0\x80", 4);
  expectVector(Publish{"t", payload}, hex("30 07 00 01 74 00 FF C0 80"));
}

TEST(PublishCodecTest, EncodesFromViewsWithoutCopy) {
  std::string out;
  ASSERT_TRUE(encode(PublishView{"a/b", "hi", QoS::AtLeastOnce, false, false, 1}, out).isOk());
  EXPECT_EQ(out, hex("32 09 00 03 61 2F 62 00 01 68 69"));
}

TEST(PubAckFamilyCodecTest, PacketIdOnly) {
  expectVector(PubAck{7}, hex("40 02 00 07"));
  expectVector(PubRec{0x0102}, hex("50 02 01 02"));
  expectVector(PubRel{7}, hex("62 02 00 07"));  // PUBREL's reserved flags are 0010
  expectVector(PubComp{0xFFFF}, hex("70 02 FF FF"));
  expectVector(UnsubAck{2}, hex("B0 02 00 02"));
}

TEST(SubscribeCodecTest, AzureFiltersWithEveryQoS) {
  Subscribe subscribe{1,
                      {{"$iothub/methods/POST/#", QoS::AtMostOnce},
                       {"devices/dev1/messages/devicebound/#", QoS::AtLeastOnce},
                       {"a/+", QoS::ExactlyOnce}}};
  expectVector(subscribe, hex("82 47 00 01 00 16") + "$iothub/methods/POST/#" + hex("00 00 23") +
                              "devices/dev1/messages/devicebound/#" + hex("01 00 03 61 2F 2B 02"));
}

TEST(SubAckCodecTest, GrantedAndFailureCodes) {
  expectVector(
      SubAck{1, {SubAckReturnCode::MaxQoS0, SubAckReturnCode::MaxQoS1, SubAckReturnCode::Failure}},
      hex("90 05 00 01 00 01 80"));
  expectVector(SubAck{0x0A0B, {SubAckReturnCode::MaxQoS2}}, hex("90 03 0A 0B 02"));
}

TEST(UnsubscribeCodecTest, OneAndTwoFilters) {
  expectVector(Unsubscribe{2, {"a/+"}}, hex("A2 07 00 02 00 03 61 2F 2B"));
  expectVector(Unsubscribe{3, {"#", "$iothub/twin/res/#"}},
               hex("A2 19 00 03 00 01 23 00 12") + "$iothub/twin/res/#");
}

TEST(EmptyPacketsCodecTest, PingAndDisconnect) {
  expectVector(PingReq{}, hex("C0 00"));
  expectVector(PingResp{}, hex("D0 00"));
  expectVector(Disconnect{}, hex("E0 00"));
}

TEST(EncoderTest, AppendsToExistingOutput) {
  std::string out = "xy";
  ASSERT_TRUE(encode(PingReq{}, out).isOk());
  ASSERT_TRUE(encode(Packet(PubAck{1}), out).isOk());
  EXPECT_EQ(out, "xy" + hex("C0 00 40 02 00 01"));
}

TEST(EncoderTest, RejectsInvalidPublish) {
  expectEncodeFails(Publish{"a/+", ""}, "wildcard");
  expectEncodeFails(Publish{"a/#", ""}, "wildcard");
  expectEncodeFails(Publish{"", ""}, "empty");
  expectEncodeFails(Publish{std::string(65536, 'a'), ""}, "65535");
  expectEncodeFails(Publish{std::string("a\0b", 3), ""}, "U+0000");
  expectEncodeFails(Publish{"t", "", static_cast<QoS>(3), false, false, 1}, "QoS 3");
  expectEncodeFails(Publish{"t", "", QoS::AtLeastOnce, false, false, 0}, "non-zero");
  expectEncodeFails(Publish{"t", "", QoS::AtMostOnce, false, false, 5}, "QoS 0");
  expectEncodeFails(Publish{"t", "", QoS::AtMostOnce, false, true, 0}, "DUP");
}

TEST(EncoderTest, RejectsRemainingLengthAboveTheMaximum) {
  // The encoder checks sizes before touching the payload, so a view of a small buffer with a
  // huge length is never read.
  static const char kByte = 'x';
  std::string out;
  Status status = encode(PublishView{"t", std::string_view(&kByte, kMaxRemainingLength - 2)}, out);
  EXPECT_EQ(status.code(), ErrorCode::IotHubFormatError);
  EXPECT_NE(status.message().find("268435455"), std::string::npos);
  EXPECT_TRUE(out.empty());
}

TEST(EncoderTest, RejectsOtherInvalidPackets) {
  expectEncodeFails(Subscribe{1, {}}, "at least one");
  expectEncodeFails(Subscribe{0, {{"a", QoS::AtMostOnce}}}, "non-zero");
  expectEncodeFails(Subscribe{1, {{"a/#/b", QoS::AtMostOnce}}}, "'#'");
  expectEncodeFails(Subscribe{1, {{"a", static_cast<QoS>(3)}}}, "QoS 3");
  expectEncodeFails(SubAck{1, {}}, "at least one");
  expectEncodeFails(SubAck{1, {static_cast<SubAckReturnCode>(3)}}, "invalid return code");
  expectEncodeFails(Unsubscribe{1, {}}, "at least one");
  expectEncodeFails(Unsubscribe{1, {"a+"}}, "'+'");
  expectEncodeFails(PubAck{0}, "non-zero");
  expectEncodeFails(PubRel{0}, "non-zero");
  expectEncodeFails(UnsubAck{0}, "non-zero");
  expectEncodeFails(ConnAck{true, ConnectReturnCode::NotAuthorized}, "session present");
  expectEncodeFails(ConnAck{false, static_cast<ConnectReturnCode>(6)}, "reserved return code");
  Connect password_only;
  password_only.password = "p";
  expectEncodeFails(password_only, "password without a user name");
  Connect wildcard_will;
  wildcard_will.will = Will{"a/#", "m"};
  expectEncodeFails(wildcard_will, "will");
  Connect bad_client_id;
  bad_client_id.client_id = "\xED\xA0\x80";
  expectEncodeFails(bad_client_id, "surrogate");
}

TEST(RemainingLengthTest, EncodesEveryBoundary) {
  struct Case {
    std::size_t length;
    const char* bytes;
  };
  const Case cases[] = {
      {0, "00"},
      {127, "7F"},
      {128, "80 01"},
      {16383, "FF 7F"},
      {16384, "80 80 01"},
      {2097151, "FF FF 7F"},
      {2097152, "80 80 80 01"},
      {268435455, "FF FF FF 7F"},
  };
  for (const Case& c : cases) {
    std::string out;
    appendRemainingLength(c.length, out);
    EXPECT_EQ(out, hex(c.bytes)) << c.length;
    EXPECT_EQ(remainingLengthSize(c.length), out.size()) << c.length;
    auto decoded = decodeRemainingLength(out);
    ASSERT_TRUE(decoded.isOk());
    ASSERT_TRUE(decoded->has_value());
    EXPECT_EQ((*decoded)->value, c.length);
    EXPECT_EQ((*decoded)->encoded_size, out.size());
    // Every proper prefix is incomplete, not an error.
    for (std::size_t n = 0; n < out.size(); ++n) {
      auto partial = decodeRemainingLength(std::string_view(out).substr(0, n));
      ASSERT_TRUE(partial.isOk());
      EXPECT_FALSE(partial->has_value());
    }
  }
}

TEST(RemainingLengthTest, RejectsAFifthByte) {
  auto decoded = decodeRemainingLength(hex("FF FF FF FF 01"));
  ASSERT_FALSE(decoded.isOk());
  EXPECT_EQ(decoded.code(), ErrorCode::IotHubFormatError);
  EXPECT_NE(decoded.status().message().find("4 bytes"), std::string::npos);
  // Already decided from four bytes: the fifth need not have arrived.
  EXPECT_FALSE(decodeRemainingLength(hex("80 80 80 80")).isOk());
}

TEST(RemainingLengthTest, PublishesAtBoundariesRoundTrip) {
  // PUBLISH with topic "t" (3 bytes of variable header), QoS 0: payload = length - 3.
  for (std::size_t length : {3u, 127u, 128u, 16383u, 16384u, 2097151u, 2097152u}) {
    Publish publish{"t", std::string(length - 3, 'p')};
    std::string encoded;
    ASSERT_TRUE(encode(publish, encoded).isOk());
    std::string expected_header = hex("30");
    appendRemainingLength(length, expected_header);
    EXPECT_EQ(encoded.substr(0, expected_header.size()), expected_header) << length;
    EXPECT_EQ(encoded.size(), expected_header.size() + length);
    auto decoded = decodePacket(encoded);
    ASSERT_TRUE(decoded.isOk()) << decoded.status().message();
    EXPECT_EQ(*decoded, Packet(publish));
  }
}

TEST(RoundTripTest, EveryPacketTypeThroughOneStream) {
  const std::vector<Packet> packets = {
      Connect{"dev1", false, 180, std::nullopt, "host/dev1/?api-version=2021-04-12", "sas"},
      ConnAck{true, ConnectReturnCode::Accepted},
      Publish{"devices/dev1/messages/events/%24.mid=m1", "{\"t\":1}", QoS::AtLeastOnce, false,
              false, 1},
      PubAck{1},
      PubRec{2},
      PubRel{2},
      PubComp{2},
      Subscribe{3, {{"$iothub/twin/res/#", QoS::AtMostOnce}}},
      SubAck{3, {SubAckReturnCode::MaxQoS0}},
      Unsubscribe{4, {"$iothub/twin/res/#"}},
      UnsubAck{4},
      PingReq{},
      PingResp{},
      Disconnect{},
  };
  std::string stream;
  for (const Packet& packet : packets) ASSERT_TRUE(encode(packet, stream).isOk());
  Decoder decoder;
  decoder.feed(stream);
  for (const Packet& expected : packets) {
    auto next = decoder.next();
    ASSERT_TRUE(next.isOk()) << next.status().message();
    ASSERT_TRUE(next->has_value());
    EXPECT_EQ(**next, expected);
  }
  auto end = decoder.next();
  ASSERT_TRUE(end.isOk());
  EXPECT_FALSE(end->has_value());
}

}  // namespace
}  // namespace iothub::mqtt
