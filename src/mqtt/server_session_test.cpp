#include "mqtt/server_session.hpp"

#include <gtest/gtest.h>

#include <functional>
#include <string>

#include "mqtt/decoder.hpp"
#include "mqtt/encoder.hpp"
#include "mqtt/session_test_support.hpp"
#include "mqtt/test_bytes.hpp"

namespace iothub::mqtt {
namespace {

using namespace std::chrono_literals;
using testing::hex;
using testing::sentPacket;

const TimePoint kStart = TimePoint{} + 1000s;

Connect nodeConnect(std::uint16_t keep_alive = 180) {
  Connect connect;
  connect.client_id = "dev1";
  connect.clean_session = false;
  connect.keep_alive = keep_alive;
  connect.user_name = "localhost/dev1/?api-version=2021-04-12";
  connect.password = "SharedAccessSignature sr=localhost%2Fdevices%2Fdev1&sig=x&se=1";
  return connect;
}

CloseReason closeReason(const Actions& actions) {
  EXPECT_FALSE(actions.empty());
  if (actions.empty()) return CloseReason::ClientDisconnected;
  const auto* close = std::get_if<CloseConnection>(&actions.back());
  EXPECT_NE(close, nullptr) << "last action is not CloseConnection";
  return close == nullptr ? CloseReason::ClientDisconnected : close->reason;
}

class ServerSessionTest : public ::testing::Test {
 protected:
  explicit ServerSessionTest(ServerSessionOptions options = {}) : session_(options, kStart) {}

  // CONNECT at `at`, accepted.
  void connect(Connect packet = nodeConnect(), TimePoint at = kStart,
               bool session_present = false) {
    Actions actions = session_.onPacket(packet, at);
    ASSERT_EQ(actions.size(), 1u);
    ASSERT_TRUE(std::holds_alternative<Authenticate>(actions[0]));
    actions = session_.acceptConnect(session_present);
    ASSERT_EQ(sentPacket<ConnAck>(actions).return_code, ConnectReturnCode::Accepted);
    ASSERT_EQ(session_.state(), ServerSession::State::Connected);
  }

  Actions receive(Packet packet, TimePoint at = kStart) {
    return session_.onPacket(std::move(packet), at);
  }

  ServerSession session_;
};

TEST_F(ServerSessionTest, AsksTheOwnerToAuthenticateTheConnect) {
  Actions actions = receive(nodeConnect());
  ASSERT_EQ(actions.size(), 1u);
  const auto& authenticate = std::get<Authenticate>(actions[0]);
  EXPECT_EQ(authenticate.connect, nodeConnect());
  EXPECT_EQ(session_.state(), ServerSession::State::Authenticating);

  actions = session_.acceptConnect(true);
  ASSERT_EQ(actions.size(), 1u);
  EXPECT_EQ(sentPacket<ConnAck>(actions), (ConnAck{true, ConnectReturnCode::Accepted}));
  EXPECT_EQ(session_.state(), ServerSession::State::Connected);
  EXPECT_EQ(session_.keepAlive(), 180);
}

TEST_F(ServerSessionTest, CleanSessionNeverReportsSessionPresent) {
  Connect clean = nodeConnect();
  clean.clean_session = true;
  (void)receive(clean);
  Actions actions = session_.acceptConnect(true);
  EXPECT_FALSE(sentPacket<ConnAck>(actions).session_present);
}

TEST_F(ServerSessionTest, RefusedConnectSendsTheCodeThenCloses) {
  (void)receive(nodeConnect());
  Actions actions = session_.refuseConnect(ConnectReturnCode::NotAuthorized);
  ASSERT_EQ(actions.size(), 2u);
  EXPECT_EQ(sentPacket<ConnAck>(actions), (ConnAck{false, ConnectReturnCode::NotAuthorized}));
  EXPECT_EQ(closeReason(actions), CloseReason::ConnectRefused);
  EXPECT_EQ(session_.state(), ServerSession::State::Closed);
}

TEST_F(ServerSessionTest, FirstPacketMustBeConnect) {
  Actions actions = receive(PingReq{});
  ASSERT_EQ(actions.size(), 1u);
  EXPECT_EQ(closeReason(actions), CloseReason::ProtocolViolation);
  EXPECT_EQ(session_.state(), ServerSession::State::Closed);
  // Closed sessions ignore everything.
  EXPECT_TRUE(receive(nodeConnect()).empty());
  EXPECT_TRUE(session_.onTick(kStart + 1h).empty());
  EXPECT_FALSE(session_.nextDeadline().has_value());
}

TEST_F(ServerSessionTest, FirstPacketPublishAlsoCloses) {
  EXPECT_EQ(closeReason(receive(Publish{"a", "b"})), CloseReason::ProtocolViolation);
}

TEST_F(ServerSessionTest, EmptyClientIdWithPersistentSessionIsRejected) {
  Connect connect = nodeConnect();
  connect.client_id.clear();
  Actions actions = receive(connect);
  ASSERT_EQ(actions.size(), 2u);
  EXPECT_EQ(sentPacket<ConnAck>(actions).return_code, ConnectReturnCode::IdentifierRejected);
  EXPECT_EQ(closeReason(actions), CloseReason::ConnectRefused);
}

TEST_F(ServerSessionTest, SecondConnectCloses) {
  connect();
  EXPECT_EQ(closeReason(receive(nodeConnect())), CloseReason::ProtocolViolation);
}

TEST_F(ServerSessionTest, SecondConnectWhileAuthenticatingCloses) {
  (void)receive(nodeConnect());
  EXPECT_EQ(closeReason(receive(nodeConnect())), CloseReason::ProtocolViolation);
  // The owner's late answer is ignored.
  EXPECT_TRUE(session_.acceptConnect(false).empty());
}

TEST_F(ServerSessionTest, PacketsAfterConnectWaitForTheConnack) {
  (void)receive(nodeConnect());
  EXPECT_TRUE(receive(Subscribe{1, {{"$iothub/methods/POST/#", QoS::AtMostOnce}}}).empty());
  EXPECT_TRUE(receive(PingReq{}).empty());
  EXPECT_TRUE(receive(Publish{"$iothub/twin/GET/?$rid=1", " "}).empty());

  Actions actions = session_.acceptConnect(false);
  ASSERT_EQ(actions.size(), 4u);
  EXPECT_EQ(sentPacket<ConnAck>(actions, 0).return_code, ConnectReturnCode::Accepted);
  EXPECT_EQ(std::get<AuthorizeSubscribe>(actions[1]).packet_id, 1);
  sentPacket<PingResp>(actions, 2);
  EXPECT_EQ(std::get<DeliverPublish>(actions[3]).publish.topic, "$iothub/twin/GET/?$rid=1");
}

TEST_F(ServerSessionTest, RefusalDropsHeldPackets) {
  (void)receive(nodeConnect());
  (void)receive(PingReq{});
  Actions actions = session_.refuseConnect(ConnectReturnCode::BadUserNameOrPassword);
  ASSERT_EQ(actions.size(), 2u);
  EXPECT_EQ(closeReason(actions), CloseReason::ConnectRefused);
}

TEST(ServerSessionLimitsTest, TooManyPacketsBeforeConnackClose) {
  ServerSessionOptions options;
  options.max_packets_before_connack = 2;
  ServerSession session(options, kStart);
  (void)session.onPacket(nodeConnect(), kStart);
  EXPECT_TRUE(session.onPacket(PingReq{}, kStart).empty());
  EXPECT_TRUE(session.onPacket(PingReq{}, kStart).empty());
  EXPECT_EQ(closeReason(session.onPacket(PingReq{}, kStart)), CloseReason::TooManyPendingPackets);
}

// An idle socket that never sends CONNECT holds a file descriptor: 10 s, not 30.
TEST_F(ServerSessionTest, ConnectTimeout) {
  EXPECT_EQ(session_.nextDeadline(), kStart + 10s);
  EXPECT_TRUE(session_.onTick(kStart + 10s - 1ms).empty());
  EXPECT_EQ(closeReason(session_.onTick(kStart + 10s)), CloseReason::ConnectTimeout);
}

TEST_F(ServerSessionTest, AuthenticationHasItsOwnTimeoutFromTheConnect) {
  (void)receive(nodeConnect(), kStart + 9s);
  EXPECT_EQ(session_.nextDeadline(), kStart + 39s);
  EXPECT_TRUE(session_.onTick(kStart + 39s - 1ms).empty());
  EXPECT_EQ(closeReason(session_.onTick(kStart + 39s)), CloseReason::ConnectTimeout);
  EXPECT_TRUE(session_.acceptConnect(false).empty());  // too late, ignored
}

TEST_F(ServerSessionTest, KeepAliveExpiresAtOneAndAHalfTimesTheClientValue) {
  connect(nodeConnect(180), kStart);
  EXPECT_EQ(session_.nextDeadline(), kStart + 270s);
  EXPECT_TRUE(session_.onTick(kStart + 270s - 1ms).empty());
  Actions actions = session_.onTick(kStart + 270s);
  EXPECT_EQ(closeReason(actions), CloseReason::KeepAliveTimeout);
}

TEST_F(ServerSessionTest, AnyPacketRestartsTheKeepAlive) {
  connect(nodeConnect(10), kStart);
  EXPECT_EQ(session_.nextDeadline(), kStart + 15s);
  (void)receive(PingReq{}, kStart + 14s);
  EXPECT_EQ(session_.nextDeadline(), kStart + 29s);
  EXPECT_TRUE(session_.onTick(kStart + 20s).empty());
  (void)receive(Publish{"devices/dev1/messages/events/", "x"}, kStart + 28s);
  EXPECT_TRUE(session_.onTick(kStart + 42s).empty());
  EXPECT_EQ(closeReason(session_.onTick(kStart + 43s)), CloseReason::KeepAliveTimeout);
}

TEST_F(ServerSessionTest, OddKeepAliveKeepsTheHalfSecond) {
  connect(nodeConnect(1), kStart);
  EXPECT_EQ(session_.nextDeadline(), kStart + 1500ms);
}

TEST_F(ServerSessionTest, KeepAliveZeroDisablesTheTimeout) {
  connect(nodeConnect(0), kStart);
  EXPECT_FALSE(session_.nextDeadline().has_value());
  EXPECT_TRUE(session_.onTick(kStart + 24h).empty());
}

TEST_F(ServerSessionTest, KeepAliveIsCappedLikeAzure) {
  connect(nodeConnect(65535), kStart);
  EXPECT_EQ(session_.nextDeadline(), kStart + 1767s);
}

TEST_F(ServerSessionTest, PingreqGetsPingresp) {
  connect();
  Actions actions = receive(PingReq{});
  ASSERT_EQ(actions.size(), 1u);
  sentPacket<PingResp>(actions);
}

TEST_F(ServerSessionTest, DisconnectClosesCleanly) {
  connect();
  Actions actions = receive(Disconnect{});
  ASSERT_EQ(actions.size(), 1u);
  EXPECT_EQ(closeReason(actions), CloseReason::ClientDisconnected);
  EXPECT_EQ(session_.state(), ServerSession::State::Closed);
}

TEST_F(ServerSessionTest, QoS2PublishCloses) {
  connect();
  Actions actions =
      receive(Publish{"devices/dev1/messages/events/", "x", QoS::ExactlyOnce, false, false, 1});
  ASSERT_EQ(actions.size(), 1u);
  EXPECT_EQ(closeReason(actions), CloseReason::ProtocolViolation);
}

TEST_F(ServerSessionTest, QoS2FlowPacketsClose) {
  for (Packet packet : {Packet(PubRec{1}), Packet(PubRel{1}), Packet(PubComp{1})}) {
    ServerSession session({}, kStart);
    (void)session.onPacket(nodeConnect(), kStart);
    (void)session.acceptConnect(false);
    EXPECT_EQ(closeReason(session.onPacket(packet, kStart)), CloseReason::ProtocolViolation);
  }
}

TEST_F(ServerSessionTest, ServerOnlyPacketsClose) {
  for (Packet packet : {Packet(ConnAck{}), Packet(SubAck{1, {SubAckReturnCode::MaxQoS0}}),
                        Packet(UnsubAck{1}), Packet(PingResp{})}) {
    ServerSession session({}, kStart);
    (void)session.onPacket(nodeConnect(), kStart);
    (void)session.acceptConnect(false);
    EXPECT_EQ(closeReason(session.onPacket(packet, kStart)), CloseReason::ProtocolViolation);
  }
}

TEST_F(ServerSessionTest, QoS0PublishIsDeliveredWithoutAck) {
  connect();
  Actions actions = receive(Publish{"$iothub/twin/GET/?$rid=1", " "});
  ASSERT_EQ(actions.size(), 1u);
  EXPECT_EQ(std::get<DeliverPublish>(actions[0]).publish,
            (Publish{"$iothub/twin/GET/?$rid=1", " "}));
  EXPECT_EQ(session_.unacknowledgedInbound(), 0u);
}

TEST_F(ServerSessionTest, QoS1PublishIsAcknowledgedWhenTheOwnerSaysSo) {
  connect();
  Publish telemetry{"devices/dev1/messages/events/", "{}", QoS::AtLeastOnce, false, false, 7};
  Actions actions = receive(telemetry);
  ASSERT_EQ(actions.size(), 1u);
  EXPECT_EQ(std::get<DeliverPublish>(actions[0]).publish, telemetry);
  EXPECT_EQ(session_.unacknowledgedInbound(), 1u);
  actions = session_.acknowledgePublish(7);
  ASSERT_EQ(actions.size(), 1u);
  EXPECT_EQ(sentPacket<PubAck>(actions), PubAck{7});
  EXPECT_EQ(session_.unacknowledgedInbound(), 0u);
  EXPECT_TRUE(session_.acknowledgePublish(7).empty());  // already acknowledged
}

TEST_F(ServerSessionTest, PubacksFollowArrivalOrder) {
  connect();
  for (std::uint16_t id : {1, 2, 3}) {
    (void)receive(Publish{"devices/dev1/messages/events/", "", QoS::AtLeastOnce, false, false, id});
  }
  EXPECT_TRUE(session_.acknowledgePublish(2).empty());
  Actions actions = session_.acknowledgePublish(1);
  ASSERT_EQ(actions.size(), 2u);
  EXPECT_EQ(sentPacket<PubAck>(actions, 0), PubAck{1});
  EXPECT_EQ(sentPacket<PubAck>(actions, 1), PubAck{2});
  actions = session_.acknowledgePublish(3);
  ASSERT_EQ(actions.size(), 1u);
  EXPECT_EQ(sentPacket<PubAck>(actions), PubAck{3});
}

class ServerSessionWindowTest : public ServerSessionTest {
 protected:
  static ServerSessionOptions windowOfTwo() {
    ServerSessionOptions options;
    options.max_in_flight = 2;
    return options;
  }
  ServerSessionWindowTest() : ServerSessionTest(windowOfTwo()) {}

  static Publish c2d(std::string payload) {
    return Publish{"devices/dev1/messages/devicebound/%24.mid=m", std::move(payload),
                   QoS::AtLeastOnce};
  }
};

TEST_F(ServerSessionWindowTest, QoS1PublishesStayInFlightUntilPuback) {
  connect();
  auto first = session_.publish(c2d("a"), 100);
  ASSERT_TRUE(first.isOk()) << first.status().message();
  Publish sent = sentPacket<Publish>(*first);
  EXPECT_EQ(sent.packet_id, 1);
  EXPECT_FALSE(sent.dup);
  EXPECT_EQ(sent.payload, "a");
  auto second = session_.publish(c2d("b"), 200);
  ASSERT_TRUE(second.isOk());
  EXPECT_EQ(sentPacket<Publish>(*second).packet_id, 2);
  EXPECT_FALSE(session_.canPublishQoS1());
  EXPECT_EQ(session_.inFlight(), (std::vector<InFlightPublish>{{1, 100}, {2, 200}}));

  auto third = session_.publish(c2d("c"), 300);
  ASSERT_FALSE(third.isOk());
  EXPECT_EQ(third.code(), ErrorCode::Throttled);

  Actions actions = receive(PubAck{1});
  ASSERT_EQ(actions.size(), 1u);
  const auto& acknowledged = std::get<PublishAcknowledged>(actions[0]);
  EXPECT_EQ(acknowledged.packet_id, 1);
  EXPECT_EQ(acknowledged.tag, 100u);
  EXPECT_TRUE(session_.canPublishQoS1());

  third = session_.publish(c2d("c"), 300);
  ASSERT_TRUE(third.isOk());
  EXPECT_EQ(sentPacket<Publish>(*third).packet_id, 3);
  EXPECT_EQ(session_.inFlight(), (std::vector<InFlightPublish>{{2, 200}, {3, 300}}));
}

TEST_F(ServerSessionWindowTest, UnknownPubackIsIgnored) {
  connect();
  EXPECT_TRUE(receive(PubAck{42}).empty());
  EXPECT_EQ(session_.state(), ServerSession::State::Connected);
}

TEST_F(ServerSessionWindowTest, QoS0PublishesAreNotCounted) {
  connect();
  for (int i = 0; i < 5; ++i) {
    auto sent = session_.publish(
        Publish{"$iothub/methods/POST/reboot/?$rid=1", "null", QoS::AtMostOnce, false, false, 9});
    ASSERT_TRUE(sent.isOk());
    EXPECT_EQ(sentPacket<Publish>(*sent).packet_id, 0);  // cleared
  }
  EXPECT_TRUE(session_.inFlight().empty());
}

TEST_F(ServerSessionWindowTest, PublishErrors) {
  auto early = session_.publish(c2d("x"));
  EXPECT_EQ(early.code(), ErrorCode::InvalidOperation);
  connect();
  EXPECT_EQ(session_.publish(Publish{"a/+", "", QoS::AtLeastOnce}).code(),
            ErrorCode::ArgumentInvalid);
  EXPECT_EQ(session_.publish(Publish{"a", "", QoS::ExactlyOnce}).code(),
            ErrorCode::ArgumentInvalid);
  EXPECT_TRUE(session_.inFlight().empty());
}

TEST_F(ServerSessionWindowTest, RedeliverKeepsThePacketIdAndSetsDup) {
  connect(nodeConnect(), kStart, true);
  Publish unacknowledged = c2d("old");
  unacknowledged.packet_id = 2;
  auto resent = session_.redeliver(unacknowledged, 7);
  ASSERT_TRUE(resent.isOk()) << resent.status().message();
  Publish sent = sentPacket<Publish>(*resent);
  EXPECT_EQ(sent.packet_id, 2);
  EXPECT_TRUE(sent.dup);
  // New publishes skip the id still in flight.
  auto fresh = session_.publish(c2d("new"));
  ASSERT_TRUE(fresh.isOk());
  EXPECT_EQ(sentPacket<Publish>(*fresh).packet_id, 1);
  ASSERT_TRUE(receive(PubAck{1}).size() == 1);
  fresh = session_.publish(c2d("newer"));
  ASSERT_TRUE(fresh.isOk());
  EXPECT_EQ(sentPacket<Publish>(*fresh).packet_id, 3);
}

TEST_F(ServerSessionWindowTest, RedeliverErrors) {
  connect();
  Publish zero = c2d("x");
  EXPECT_EQ(session_.redeliver(zero).code(), ErrorCode::ArgumentInvalid);
  Publish qos0{"a", "", QoS::AtMostOnce};
  EXPECT_EQ(session_.redeliver(qos0).code(), ErrorCode::ArgumentInvalid);
  Publish once = c2d("x");
  once.packet_id = 5;
  ASSERT_TRUE(session_.redeliver(once).isOk());
  EXPECT_EQ(session_.redeliver(once).code(), ErrorCode::ArgumentInvalid);
}

TEST(ServerSessionPacketIdTest, WrapsAroundAndSkipsZero) {
  ServerSessionOptions options;
  options.max_in_flight = 1;
  ServerSession session(options, kStart);
  (void)session.onPacket(nodeConnect(), kStart);
  (void)session.acceptConnect(false);
  std::uint16_t last = 0;
  for (int i = 0; i < 65536; ++i) {
    auto sent = session.publish(Publish{"t", "", QoS::AtLeastOnce});
    ASSERT_TRUE(sent.isOk());
    last = std::get<Publish>(std::get<SendPacket>((*sent)[0]).packet).packet_id;
    ASSERT_NE(last, 0);
    ASSERT_EQ(session.onPacket(PubAck{last}, kStart).size(), 1u);
  }
  EXPECT_EQ(last, 1);  // 65535 ids, then back to 1
}

TEST_F(ServerSessionTest, SubscribeAsksTheOwnerAndAnswersSuback) {
  connect();
  Subscribe subscribe{5,
                      {{"$iothub/methods/POST/#", QoS::AtMostOnce},
                       {"devices/dev1/messages/devicebound/#", QoS::ExactlyOnce},
                       {"$iothub/twin/res/#", QoS::AtLeastOnce},
                       {"devices/dev2/messages/devicebound/#", QoS::AtLeastOnce}}};
  Actions actions = receive(subscribe);
  ASSERT_EQ(actions.size(), 1u);
  const auto& authorize = std::get<AuthorizeSubscribe>(actions[0]);
  EXPECT_EQ(authorize.packet_id, 5);
  EXPECT_EQ(authorize.subscriptions, subscribe.subscriptions);

  // The owner allows up to QoS 2 on the first three (the session caps at 1, like Azure), and
  // refuses another device's topic.
  actions = session_.completeSubscribe(5, {SubAckReturnCode::MaxQoS2, SubAckReturnCode::MaxQoS2,
                                           SubAckReturnCode::MaxQoS0, SubAckReturnCode::Failure});
  ASSERT_EQ(actions.size(), 1u);
  EXPECT_EQ(sentPacket<SubAck>(actions),
            (SubAck{5,
                    {SubAckReturnCode::MaxQoS0, SubAckReturnCode::MaxQoS1,
                     SubAckReturnCode::MaxQoS0, SubAckReturnCode::Failure}}));
}

TEST_F(ServerSessionTest, SubscribeReusingAPendingPacketIdCloses) {
  connect();
  (void)receive(Subscribe{5, {{"a", QoS::AtMostOnce}}});
  EXPECT_EQ(closeReason(receive(Subscribe{5, {{"b", QoS::AtMostOnce}}})),
            CloseReason::ProtocolViolation);
  EXPECT_TRUE(session_.completeSubscribe(5, {SubAckReturnCode::MaxQoS0}).empty());
}

TEST_F(ServerSessionTest, UnsubscribeRemovesAndAcknowledges) {
  connect();
  Actions actions = receive(Unsubscribe{9, {"$iothub/twin/res/#", "a/+"}});
  ASSERT_EQ(actions.size(), 2u);
  EXPECT_EQ(std::get<RemoveSubscriptions>(actions[0]).filters,
            (std::vector<std::string>{"$iothub/twin/res/#", "a/+"}));
  EXPECT_EQ(sentPacket<UnsubAck>(actions, 1), UnsubAck{9});
}

TEST_F(ServerSessionTest, UnsupportedProtocolLevelGetsConnackOne) {
  Actions actions = session_.onDecodeError(DecodeError::UnsupportedProtocol, "level 5");
  ASSERT_EQ(actions.size(), 2u);
  EXPECT_EQ(sentPacket<ConnAck>(actions),
            (ConnAck{false, ConnectReturnCode::UnacceptableProtocolVersion}));
  EXPECT_EQ(closeReason(actions), CloseReason::UnsupportedProtocol);
}

TEST_F(ServerSessionTest, DecodeErrorsClose) {
  connect();
  Actions actions = session_.onDecodeError(DecodeError::Malformed, "PUBLISH: QoS 3 is invalid");
  ASSERT_EQ(actions.size(), 1u);
  EXPECT_EQ(closeReason(actions), CloseReason::MalformedPacket);
  EXPECT_EQ(std::get<CloseConnection>(actions[0]).detail, "PUBLISH: QoS 3 is invalid");

  ServerSession other({}, kStart);
  EXPECT_EQ(closeReason(other.onDecodeError(DecodeError::PacketTooLarge, "too large")),
            CloseReason::PacketTooLarge);
}

// Bytes in, bytes out: the Decoder, the session and the encoder together, as a transport
// would drive them, with the owner accepting everything.
TEST(ServerSessionWireTest, NodeSdkConversation) {
  std::string inbound;
  ASSERT_TRUE(encode(nodeConnect(), inbound).isOk());
  ASSERT_TRUE(encode(Subscribe{1, {{"$iothub/methods/POST/#", QoS::AtMostOnce}}}, inbound).isOk());
  ASSERT_TRUE(
      encode(Publish{"devices/dev1/messages/events/", "{}", QoS::AtLeastOnce, false, false, 2},
             inbound)
          .isOk());
  ASSERT_TRUE(encode(PingReq{}, inbound).isOk());
  ASSERT_TRUE(encode(Disconnect{}, inbound).isOk());

  Decoder decoder(256 * 1024);
  ServerSession session({}, kStart);
  std::string outbound;
  bool closed = false;
  std::function<void(Actions)> run = [&](Actions actions) {
    for (Action& action : actions) {
      if (auto* send = std::get_if<SendPacket>(&action)) {
        ASSERT_TRUE(encode(send->packet, outbound).isOk());
      } else if (std::holds_alternative<Authenticate>(action)) {
        run(session.acceptConnect(false));
      } else if (auto* authorize = std::get_if<AuthorizeSubscribe>(&action)) {
        run(session.completeSubscribe(authorize->packet_id,
                                      std::vector<SubAckReturnCode>(authorize->subscriptions.size(),
                                                                    SubAckReturnCode::MaxQoS1)));
      } else if (auto* deliver = std::get_if<DeliverPublish>(&action)) {
        if (deliver->publish.qos == QoS::AtLeastOnce) {
          run(session.acknowledgePublish(deliver->publish.packet_id));
        }
      } else if (auto* close = std::get_if<CloseConnection>(&action)) {
        EXPECT_EQ(close->reason, CloseReason::ClientDisconnected);
        closed = true;
      }
    }
  };
  // Deliver in awkward chunks.
  for (std::size_t pos = 0; pos < inbound.size(); pos += 13) {
    decoder.feed(std::string_view(inbound).substr(pos, 13));
    while (true) {
      auto next = decoder.next();
      ASSERT_TRUE(next.isOk()) << next.status().message();
      if (!next->has_value()) break;
      run(session.onPacket(std::move(**next), kStart));
    }
  }
  EXPECT_TRUE(closed);
  EXPECT_EQ(outbound, hex("20 02 00 00"     // CONNACK accepted
                          "90 03 00 01 00"  // SUBACK, QoS 0 as requested
                          "40 02 00 02"     // PUBACK 2
                          "D0 00"));        // PINGRESP
}

}  // namespace
}  // namespace iothub::mqtt
