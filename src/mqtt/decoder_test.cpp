// The incremental Decoder: chunking, limits, and every malformed input MQTT 3.1.1 lets a
// parser detect.

#include "mqtt/decoder.hpp"

#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

#include "mqtt/encoder.hpp"
#include "mqtt/test_bytes.hpp"

namespace iothub::mqtt {
namespace {

using testing::hex;

std::vector<Packet> drain(Decoder& decoder) {
  std::vector<Packet> packets;
  while (true) {
    auto next = decoder.next();
    EXPECT_TRUE(next.isOk()) << next.status().message();
    if (!next.isOk() || !next->has_value()) return packets;
    packets.push_back(std::move(**next));
  }
}

// Decoding `bytes` fails with `code`, the message containing `message_part`.
void expectRejected(const std::string& bytes, std::string_view message_part,
                    ErrorCode code = ErrorCode::IotHubFormatError) {
  auto decoded = decodePacket(bytes);
  ASSERT_FALSE(decoded.isOk()) << "accepted " << ::testing::PrintToString(bytes);
  EXPECT_EQ(decoded.code(), code) << decoded.status().message();
  EXPECT_NE(decoded.status().message().find(message_part), std::string::npos)
      << "message: " << decoded.status().message();
}

std::string sampleStream() {
  std::string stream;
  EXPECT_TRUE(encode(Connect{"dev1", false, 180, std::nullopt, "host/dev1", "sas"}, stream).isOk());
  EXPECT_TRUE(encode(Subscribe{1, {{"$iothub/methods/POST/#", QoS::AtMostOnce}}}, stream).isOk());
  EXPECT_TRUE(encode(Publish{"$iothub/twin/GET/?$rid=1", " "}, stream).isOk());
  EXPECT_TRUE(encode(Publish{"devices/dev1/messages/events/", std::string(300, 'x'),
                             QoS::AtLeastOnce, false, false, 2},
                     stream)
                  .isOk());
  EXPECT_TRUE(encode(PingReq{}, stream).isOk());
  EXPECT_TRUE(encode(Disconnect{}, stream).isOk());
  return stream;
}

TEST(DecoderTest, SeveralPacketsInOneFeed) {
  Decoder decoder;
  decoder.feed(sampleStream());
  const std::vector<Packet> packets = drain(decoder);
  ASSERT_EQ(packets.size(), 6u);
  EXPECT_TRUE(std::holds_alternative<Connect>(packets[0]));
  EXPECT_EQ(std::get<Publish>(packets[3]).payload.size(), 300u);
  EXPECT_TRUE(std::holds_alternative<Disconnect>(packets[5]));
  EXPECT_EQ(decoder.bufferedBytes(), 0u);
}

TEST(DecoderTest, ByteByByteGivesTheSamePackets) {
  const std::string stream = sampleStream();
  Decoder whole;
  whole.feed(stream);
  const std::vector<Packet> expected = drain(whole);

  Decoder decoder;
  std::vector<Packet> packets;
  for (char byte : stream) {
    decoder.feed(std::string_view(&byte, 1));
    for (Packet& packet : drain(decoder)) packets.push_back(std::move(packet));
  }
  EXPECT_EQ(packets, expected);
}

TEST(DecoderTest, EveryChunkSizeGivesTheSamePackets) {
  const std::string stream = sampleStream();
  Decoder whole;
  whole.feed(stream);
  const std::vector<Packet> expected = drain(whole);
  for (std::size_t chunk = 2; chunk < 64; ++chunk) {
    Decoder decoder;
    std::vector<Packet> packets;
    for (std::size_t pos = 0; pos < stream.size(); pos += chunk) {
      decoder.feed(std::string_view(stream).substr(pos, chunk));
      for (Packet& packet : drain(decoder)) packets.push_back(std::move(packet));
    }
    EXPECT_EQ(packets, expected) << "chunk size " << chunk;
  }
}

TEST(DecoderTest, PrepareAndCommitFillTheBufferInPlace) {
  const std::string stream = sampleStream();
  Decoder decoder;
  std::size_t pos = 0;
  std::vector<Packet> packets;
  while (pos < stream.size()) {
    std::span<char> space = decoder.prepare(100);
    const std::size_t n = std::min<std::size_t>(37, stream.size() - pos);  // a short read
    std::memcpy(space.data(), stream.data() + pos, n);
    decoder.commit(n);
    pos += n;
    for (Packet& packet : drain(decoder)) packets.push_back(std::move(packet));
  }
  EXPECT_EQ(packets.size(), 6u);
}

TEST(DecoderTest, WaitsForTheRestOfAPacket) {
  Decoder decoder;
  decoder.feed(hex("30 07 00 03 61"));
  auto next = decoder.next();
  ASSERT_TRUE(next.isOk());
  EXPECT_FALSE(next->has_value());
  decoder.feed(hex("2F 62 68 69"));
  next = decoder.next();
  ASSERT_TRUE(next.isOk());
  ASSERT_TRUE(next->has_value());
  EXPECT_EQ(**next, Packet(Publish{"a/b", "hi"}));
}

TEST(DecoderTest, RejectsTooLargePacketBeforeItsBodyArrives) {
  Decoder decoder(100);
  decoder.feed(hex("30 C8 01"));  // remaining length 200: 203 bytes in all
  auto next = decoder.next();
  ASSERT_FALSE(next.isOk());
  EXPECT_EQ(next.code(), ErrorCode::MessageTooLarge);
  EXPECT_EQ(decoder.lastError(), DecodeError::PacketTooLarge);
  EXPECT_NE(next.status().message().find("203"), std::string::npos);
  EXPECT_EQ(decoder.bufferedBytes(), 0u);
}

TEST(DecoderTest, LimitCountsTheWholePacket) {
  // PUBLISH "t" with a 95-byte payload: remaining length 98, 100 bytes in all.
  std::string exact;
  ASSERT_TRUE(encode(Publish{"t", std::string(95, 'p')}, exact).isOk());
  ASSERT_EQ(exact.size(), 100u);
  Decoder fits(100);
  fits.feed(exact);
  EXPECT_EQ(drain(fits).size(), 1u);
  Decoder too_small(99);
  too_small.feed(exact.substr(0, 2));
  EXPECT_EQ(too_small.next().code(), ErrorCode::MessageTooLarge);
}

TEST(DecoderTest, AcceptsTheLargestRemainingLengthWithoutBufferingIt) {
  Decoder decoder(kMaxPacketSize);
  decoder.feed(hex("30 FF FF FF 7F 00 01 74"));
  auto next = decoder.next();
  ASSERT_TRUE(next.isOk()) << next.status().message();
  EXPECT_FALSE(next->has_value());
  EXPECT_EQ(decoder.bufferedBytes(), 8u);
}

TEST(DecoderTest, RejectsAFifthRemainingLengthByte) {
  Decoder decoder;
  decoder.feed(hex("30 FF FF FF FF 01"));
  auto next = decoder.next();
  EXPECT_EQ(next.code(), ErrorCode::IotHubFormatError);
  EXPECT_EQ(decoder.lastError(), DecodeError::Malformed);
}

TEST(DecoderTest, ErrorsAreFinal) {
  Decoder decoder;
  decoder.feed(hex("00 00"));
  auto first = decoder.next();
  ASSERT_FALSE(first.isOk());
  decoder.feed(hex("C0 00"));  // a valid PINGREQ, ignored: the stream is out of sync
  auto second = decoder.next();
  ASSERT_FALSE(second.isOk());
  EXPECT_EQ(second.status().message(), first.status().message());
  EXPECT_EQ(decoder.bufferedBytes(), 0u);
}

TEST(DecoderTest, DecodePacketRejectsIncompleteAndTrailingBytes) {
  expectRejected(hex("30 07 00 03 61"), "incomplete");
  expectRejected(hex("C0 00 C0"), "after");
}

TEST(DecoderMalformedTest, ReservedPacketTypes) {
  expectRejected(hex("00 00"), "reserved control packet type 0");
  expectRejected(hex("F0 00"), "reserved control packet type 15");
}

TEST(DecoderMalformedTest, ReservedFixedHeaderFlags) {
  expectRejected(hex("11 00"), "CONNECT: invalid fixed header flags");
  expectRejected(hex("28 02 00 00"), "CONNACK: invalid fixed header flags");
  expectRejected(hex("41 02 00 01"), "PUBACK: invalid fixed header flags");
  expectRejected(hex("52 02 00 01"), "PUBREC: invalid fixed header flags");
  expectRejected(hex("60 02 00 01"), "PUBREL: invalid fixed header flags");
  expectRejected(hex("63 02 00 01"), "PUBREL: invalid fixed header flags");
  expectRejected(hex("72 02 00 01"), "PUBCOMP: invalid fixed header flags");
  expectRejected(hex("80 06 00 01 00 01 61 00"), "SUBSCRIBE: invalid fixed header flags");
  expectRejected(hex("8A 06 00 01 00 01 61 00"), "SUBSCRIBE: invalid fixed header flags");
  expectRejected(hex("92 03 00 01 00"), "SUBACK: invalid fixed header flags");
  expectRejected(hex("A0 05 00 01 00 01 61"), "UNSUBSCRIBE: invalid fixed header flags");
  expectRejected(hex("B1 02 00 01"), "UNSUBACK: invalid fixed header flags");
  expectRejected(hex("C1 00"), "PINGREQ: invalid fixed header flags");
  expectRejected(hex("D4 00"), "PINGRESP: invalid fixed header flags");
  expectRejected(hex("E2 00"), "DISCONNECT: invalid fixed header flags");
}

TEST(DecoderMalformedTest, FlagsAreCheckedFromTheFirstByteAlone) {
  Decoder decoder;
  decoder.feed(hex("80"));
  EXPECT_FALSE(decoder.next().isOk());
}

TEST(DecoderMalformedTest, PublishQoS3AndDupOnQoS0) {
  expectRejected(hex("36 05 00 01 74 00 01"), "QoS 3");
  expectRejected(hex("37 05 00 01 74 00 01"), "QoS 3");
  expectRejected(hex("38 03 00 01 74"), "DUP must be 0 for QoS 0");
}

TEST(DecoderMalformedTest, ZeroPacketIdentifiers) {
  expectRejected(hex("32 05 00 01 74 00 00"), "PUBLISH: packet identifier must be non-zero");
  expectRejected(hex("34 05 00 01 74 00 00"), "PUBLISH: packet identifier must be non-zero");
  expectRejected(hex("40 02 00 00"), "PUBACK: packet identifier must be non-zero");
  expectRejected(hex("50 02 00 00"), "PUBREC: packet identifier must be non-zero");
  expectRejected(hex("62 02 00 00"), "PUBREL: packet identifier must be non-zero");
  expectRejected(hex("70 02 00 00"), "PUBCOMP: packet identifier must be non-zero");
  expectRejected(hex("82 06 00 00 00 01 61 00"), "SUBSCRIBE: packet identifier must be non-zero");
  expectRejected(hex("90 03 00 00 00"), "SUBACK: packet identifier must be non-zero");
  expectRejected(hex("A2 05 00 00 00 01 61"), "UNSUBSCRIBE: packet identifier must be non-zero");
  expectRejected(hex("B0 02 00 00"), "UNSUBACK: packet identifier must be non-zero");
}

TEST(DecoderMalformedTest, WrongFixedRemainingLengths) {
  expectRejected(hex("20 03 00 00 00"), "CONNACK: remaining length must be 2");
  expectRejected(hex("20 01 00"), "CONNACK: remaining length must be 2");
  expectRejected(hex("40 03 00 01 00"), "PUBACK: remaining length must be 2");
  expectRejected(hex("40 01 01"), "PUBACK: remaining length must be 2");
  expectRejected(hex("B0 00"), "UNSUBACK: remaining length must be 2");
  expectRejected(hex("C0 01 00"), "PINGREQ: remaining length must be 0");
  expectRejected(hex("D0 01 00"), "PINGRESP: remaining length must be 0");
  expectRejected(hex("E0 01 00"), "DISCONNECT: remaining length must be 0");
}

TEST(DecoderMalformedTest, PublishTopicNames) {
  expectRejected(hex("30 05 00 03 61 2F 2B"), "wildcard '+'");
  expectRejected(hex("30 05 00 03 61 2F 23"), "wildcard '#'");
  expectRejected(hex("30 02 00 00"), "must not be empty");
  expectRejected(hex("30 05 00 05 61 2F 62"), "truncated topic name");
  expectRejected(hex("30 01 00"), "truncated topic name");
  expectRejected(hex("32 04 00 01 74 00"), "truncated packet identifier");
}

TEST(DecoderMalformedTest, Utf8InTopicsAndStrings) {
  expectRejected(hex("30 05 00 03 61 00 62"), "U+0000");
  expectRejected(hex("30 04 00 02 C0 AF"), "overlong");
  expectRejected(hex("30 05 00 03 E0 80 AF"), "overlong");
  expectRejected(hex("30 05 00 03 ED A0 80"), "surrogate");
  expectRejected(hex("30 06 00 04 F4 90 80 80"), "above U+10FFFF");
  expectRejected(hex("30 04 00 02 E2 82"), "truncated sequence");
  expectRejected(hex("30 03 00 01 80"), "continuation");
  expectRejected(hex("82 06 00 01 00 01 FF 00"), "SUBSCRIBE");
  // Client id with a surrogate (ED B0 80).
  expectRejected(hex("10 0F 00 04 4D 51 54 54 04 02 00 00 00 03 ED B0 80"),
                 "CONNECT: client identifier");
}

TEST(DecoderMalformedTest, ConnectProtocolNameAndLevel) {
  expectRejected(hex("10 0C 00 04 4D 51 54 58 04 02 00 00 00 00"), "protocol name");
  expectRejected(hex("10 02 00 04"), "truncated protocol name");
  // Level 3 and 5 are reported distinctly, as ArgumentInvalid / UnsupportedProtocol.
  expectRejected(hex("10 0C 00 04 4D 51 54 54 03 02 00 00 00 00"), "unsupported protocol level 3",
                 ErrorCode::ArgumentInvalid);
  expectRejected(hex("10 0D 00 04 4D 51 54 54 05 02 00 00 00 00 00"),
                 "unsupported protocol level 5", ErrorCode::ArgumentInvalid);
  expectRejected(hex("10 0E 00 06 4D 51 49 73 64 70 03 02 00 00 00 00"), "MQIsdp",
                 ErrorCode::ArgumentInvalid);
  Decoder decoder;
  decoder.feed(hex("10 0C 00 04 4D 51 54 54 03 02 00 00 00 00"));
  EXPECT_FALSE(decoder.next().isOk());
  EXPECT_EQ(decoder.lastError(), DecodeError::UnsupportedProtocol);
}

TEST(DecoderMalformedTest, ConnectFlags) {
  // Reserved flag (bit 0).
  expectRejected(hex("10 0C 00 04 4D 51 54 54 04 03 00 00 00 00"), "reserved connect flag");
  // Will QoS 1 (0x08) or will retain (0x20) without the will flag.
  expectRejected(hex("10 0C 00 04 4D 51 54 54 04 0A 00 00 00 00"), "without the will flag");
  expectRejected(hex("10 0C 00 04 4D 51 54 54 04 22 00 00 00 00"), "without the will flag");
  // Will QoS 3 (0x18) with the will flag.
  expectRejected(hex("10 11 00 04 4D 51 54 54 04 1E 00 00 00 00 00 01 74 00 00"), "will QoS 3");
  // Password (0x40) without user name.
  expectRejected(hex("10 0F 00 04 4D 51 54 54 04 42 00 00 00 00 00 01 70"),
                 "password flag set without the user name flag");
}

TEST(DecoderMalformedTest, ConnectPayload) {
  // User name flag but no user name.
  expectRejected(hex("10 0C 00 04 4D 51 54 54 04 82 00 00 00 00"), "truncated user name");
  // Will flag but no will message.
  expectRejected(hex("10 0F 00 04 4D 51 54 54 04 06 00 00 00 00 00 01 74"),
                 "truncated will message");
  // Will topic with a wildcard.
  expectRejected(hex("10 11 00 04 4D 51 54 54 04 06 00 00 00 00 00 01 23 00 00"), "will topic");
  // Trailing byte after the last field.
  expectRejected(hex("10 0D 00 04 4D 51 54 54 04 02 00 00 00 00 FF"), "trailing");
  // Missing keep alive.
  expectRejected(hex("10 09 00 04 4D 51 54 54 04 02 00"), "truncated keep alive");
}

TEST(DecoderMalformedTest, ConnAck) {
  expectRejected(hex("20 02 02 00"), "reserved connect acknowledge flags");
  expectRejected(hex("20 02 00 06"), "reserved return code 6");
  expectRejected(hex("20 02 01 05"), "session present set on a refusal");
}

TEST(DecoderMalformedTest, Subscribe) {
  expectRejected(hex("82 02 00 01"), "at least one topic filter");
  expectRejected(hex("82 06 00 01 00 01 61 03"), "requested QoS 3");
  expectRejected(hex("82 06 00 01 00 01 61 04"), "reserved bits");
  expectRejected(hex("82 06 00 01 00 01 61 80"), "reserved bits");
  expectRejected(hex("82 05 00 01 00 01 61"), "truncated requested QoS");
  expectRejected(hex("82 05 00 01 00 00 00"), "must not be empty");
  expectRejected(hex("82 0A 00 01 00 05 61 2F 23 2F 62 00"), "'#' must be the last level");
  expectRejected(hex("82 07 00 01 00 02 61 23 00"), "'#' must occupy a whole level");
  expectRejected(hex("82 07 00 01 00 02 61 2B 00"), "'+' must occupy a whole level");
}

TEST(DecoderMalformedTest, Unsubscribe) {
  expectRejected(hex("A2 02 00 01"), "at least one topic filter");
  expectRejected(hex("A2 06 00 01 00 02 2B 61"), "'+' must occupy a whole level");
  expectRejected(hex("A2 05 00 01 00 05 61"), "truncated topic filter");
}

TEST(DecoderMalformedTest, SubAck) {
  expectRejected(hex("90 02 00 01"), "at least one return code");
  expectRejected(hex("90 03 00 01 03"), "invalid return code 3");
  expectRejected(hex("90 03 00 01 81"), "invalid return code 129");
}

}  // namespace
}  // namespace iothub::mqtt
