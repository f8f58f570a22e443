#include "mqtt/client_session.hpp"

#include <gtest/gtest.h>

#include <string>

#include "mqtt/decoder.hpp"
#include "mqtt/encoder.hpp"
#include "mqtt/session_test_support.hpp"

namespace iothub::mqtt {
namespace {

using namespace std::chrono_literals;
using testing::sentPacket;

const TimePoint kStart = TimePoint{} + 1000s;

Connect deviceConnect(std::uint16_t keep_alive = 60) {
  Connect connect;
  connect.client_id = "dev1";
  connect.clean_session = false;
  connect.keep_alive = keep_alive;
  connect.user_name = "hub/dev1/?api-version=2021-04-12";
  connect.password = "SharedAccessSignature sr=hub%2Fdevices%2Fdev1&sig=x&se=1";
  return connect;
}

template <class A>
const A* actionAt(const ClientActions& actions, std::size_t index) {
  EXPECT_GT(actions.size(), index);
  if (actions.size() <= index) return nullptr;
  const auto* action = std::get_if<A>(&actions[index]);
  EXPECT_NE(action, nullptr) << "action " << index << " has another type";
  return action;
}

std::optional<ClientCloseReason> closeReason(const ClientActions& actions) {
  if (actions.empty()) return std::nullopt;
  const auto* close = std::get_if<CloseClientConnection>(&actions.back());
  if (close == nullptr) return std::nullopt;
  return close->reason;
}

Publish qos1(std::string topic, std::string payload) {
  Publish p;
  p.topic = std::move(topic);
  p.payload = std::move(payload);
  p.qos = QoS::AtLeastOnce;
  return p;
}

class ClientSessionTest : public ::testing::Test {
 protected:
  // CONNECT at `at` and CONNACK 0.
  void connect(std::uint16_t keep_alive = 60, TimePoint at = kStart, bool present = false) {
    ClientActions sent = session_.connect(deviceConnect(keep_alive), at);
    ASSERT_EQ(sent.size(), 1u);
    EXPECT_EQ(sentPacket<Connect>(sent), deviceConnect(keep_alive));
    EXPECT_EQ(session_.state(), ClientSession::State::AwaitingConnAck);
    ClientActions accepted = session_.onPacket(ConnAck{present, ConnectReturnCode::Accepted}, at);
    ASSERT_EQ(accepted.size(), 1u);
    const auto* ok = actionAt<ConnectionAccepted>(accepted, 0);
    ASSERT_NE(ok, nullptr);
    EXPECT_EQ(ok->session_present, present);
    ASSERT_EQ(session_.state(), ClientSession::State::Connected);
  }

  std::uint16_t subscribe(std::vector<std::string> filters, TimePoint at = kStart) {
    std::vector<Subscription> subscriptions;
    for (auto& f : filters) subscriptions.push_back({f, QoS::AtMostOnce});
    auto sent = session_.subscribe(subscriptions, at);
    EXPECT_TRUE(sent.isOk()) << sent.status().toString();
    if (!sent) return 0;
    EXPECT_EQ(sentPacket<Subscribe>(sent->actions), (Subscribe{sent->packet_id, subscriptions}));
    return sent->packet_id;
  }

  ClientSession session_;
};

TEST_F(ClientSessionTest, ConnectSendsConnectAndAcceptsConnAck) {
  connect(60, kStart, /*present=*/true);
  EXPECT_EQ(session_.nextDeadline(), kStart + 60s);
}

TEST_F(ClientSessionTest, RefusedConnAckReportsTheCodeAndCloses) {
  (void)session_.connect(deviceConnect(), kStart);
  ClientActions actions =
      session_.onPacket(ConnAck{false, ConnectReturnCode::NotAuthorized}, kStart);
  ASSERT_EQ(actions.size(), 2u);
  const auto* refused = actionAt<ConnectionRefused>(actions, 0);
  ASSERT_NE(refused, nullptr);
  EXPECT_EQ(refused->code, ConnectReturnCode::NotAuthorized);
  EXPECT_EQ(closeReason(actions), ClientCloseReason::ConnectRefused);
  EXPECT_EQ(session_.state(), ClientSession::State::Disconnected);
}

TEST_F(ClientSessionTest, AnythingButConnAckFirstIsAViolation) {
  (void)session_.connect(deviceConnect(), kStart);
  ClientActions actions = session_.onPacket(PingResp{}, kStart);
  EXPECT_EQ(closeReason(actions), ClientCloseReason::ProtocolViolation);
  const auto* close = actionAt<CloseClientConnection>(actions, 0);
  ASSERT_NE(close, nullptr);
  EXPECT_NE(close->detail.find("expected CONNACK"), std::string::npos) << close->detail;
}

TEST_F(ClientSessionTest, PacketsBeforeConnectAreIgnored) {
  EXPECT_TRUE(session_.onPacket(ConnAck{}, kStart).empty());
  EXPECT_TRUE(session_.onTick(kStart + 1h).empty());
  EXPECT_TRUE(session_.disconnect().empty());
  EXPECT_FALSE(session_.nextDeadline());
}

TEST_F(ClientSessionTest, SecondConnAckAndServerOnlyPacketsClose) {
  for (Packet bad : std::vector<Packet>{
           ConnAck{}, Connect{}, Subscribe{1, {{"a", QoS::AtMostOnce}}}, Unsubscribe{1, {"a"}},
           PingReq{}, Disconnect{}, PubRec{1}, PubRel{1}, PubComp{1}}) {
    ClientSession session;
    (void)session.connect(deviceConnect(), kStart);
    (void)session.onPacket(ConnAck{}, kStart);
    ClientActions actions = session.onPacket(bad, kStart);
    EXPECT_EQ(closeReason(actions), ClientCloseReason::ProtocolViolation)
        << packetTypeName(packetType(bad));
    EXPECT_EQ(session.state(), ClientSession::State::Disconnected);
  }
}

TEST_F(ClientSessionTest, UnsubAckIsIgnored) {
  connect();
  EXPECT_TRUE(session_.onPacket(UnsubAck{7}, kStart).empty());
  EXPECT_EQ(session_.state(), ClientSession::State::Connected);
}

TEST_F(ClientSessionTest, SubscribeAndSubAckMatchByPacketId) {
  connect();
  std::uint16_t first = subscribe({"$iothub/methods/POST/#"});
  std::uint16_t second =
      subscribe({"$iothub/twin/res/#", "$iothub/twin/PATCH/properties/desired/#"});
  EXPECT_NE(first, 0);
  EXPECT_NE(second, first);

  // Answers may come in any order.
  ClientActions actions = session_.onPacket(
      SubAck{second, {SubAckReturnCode::MaxQoS0, SubAckReturnCode::Failure}}, kStart);
  ASSERT_EQ(actions.size(), 1u);
  const auto* done = actionAt<SubscribeCompleted>(actions, 0);
  ASSERT_NE(done, nullptr);
  EXPECT_EQ(done->packet_id, second);
  EXPECT_EQ(done->filters, (std::vector<std::string>{"$iothub/twin/res/#",
                                                     "$iothub/twin/PATCH/properties/desired/#"}));
  EXPECT_EQ(done->codes,
            (std::vector<SubAckReturnCode>{SubAckReturnCode::MaxQoS0, SubAckReturnCode::Failure}));

  actions = session_.onPacket(SubAck{first, {SubAckReturnCode::MaxQoS1}}, kStart);
  ASSERT_EQ(actions.size(), 1u);
  EXPECT_EQ(actionAt<SubscribeCompleted>(actions, 0)->packet_id, first);

  // A repeated or unknown SUBACK is ignored.
  EXPECT_TRUE(session_.onPacket(SubAck{first, {SubAckReturnCode::MaxQoS1}}, kStart).empty());
}

TEST_F(ClientSessionTest, SubAckWithWrongCodeCountCloses) {
  connect();
  std::uint16_t id = subscribe({"a", "b"});
  ClientActions actions = session_.onPacket(SubAck{id, {SubAckReturnCode::MaxQoS0}}, kStart);
  EXPECT_EQ(closeReason(actions), ClientCloseReason::ProtocolViolation);
}

TEST_F(ClientSessionTest, SubscribeRefusesBadInput) {
  auto early = session_.subscribe({{"a", QoS::AtMostOnce}}, kStart);
  EXPECT_EQ(early.code(), ErrorCode::InvalidOperation);
  connect();
  EXPECT_EQ(session_.subscribe({}, kStart).code(), ErrorCode::ArgumentInvalid);
  EXPECT_EQ(session_.subscribe({{"a/#/b", QoS::AtMostOnce}}, kStart).code(),
            ErrorCode::ArgumentInvalid);
  EXPECT_EQ(session_.subscribe({{"", QoS::AtMostOnce}}, kStart).code(), ErrorCode::ArgumentInvalid);
}

TEST_F(ClientSessionTest, QoS0PublishHasNoPacketId) {
  connect();
  Publish p = qos1("devices/dev1/messages/events/", "x");
  p.qos = QoS::AtMostOnce;
  p.packet_id = 9;
  p.dup = true;
  auto sent = session_.publish(p, kStart);
  ASSERT_TRUE(sent.isOk());
  EXPECT_EQ(sent->packet_id, 0);
  Publish out = sentPacket<Publish>(sent->actions);
  EXPECT_EQ(out.packet_id, 0);
  EXPECT_FALSE(out.dup);
  EXPECT_TRUE(session_.inFlight().empty());
}

TEST_F(ClientSessionTest, QoS1PublishIsTrackedUntilPubAck) {
  connect();
  auto sent = session_.publish(qos1("devices/dev1/messages/events/", "hello"), kStart);
  ASSERT_TRUE(sent.isOk());
  ASSERT_NE(sent->packet_id, 0);
  Publish out = sentPacket<Publish>(sent->actions);
  EXPECT_EQ(out.packet_id, sent->packet_id);
  EXPECT_EQ(out.payload, "hello");
  EXPECT_EQ(session_.inFlight().count(sent->packet_id), 1u);

  ClientActions acked = session_.onPacket(PubAck{sent->packet_id}, kStart);
  ASSERT_EQ(acked.size(), 1u);
  EXPECT_EQ(actionAt<PublishCompleted>(acked, 0)->packet_id, sent->packet_id);
  EXPECT_TRUE(session_.inFlight().empty());
  // A duplicate PUBACK is ignored.
  EXPECT_TRUE(session_.onPacket(PubAck{sent->packet_id}, kStart).empty());
}

TEST_F(ClientSessionTest, PublishRefusesBadInput) {
  EXPECT_EQ(session_.publish(qos1("t", "x"), kStart).code(), ErrorCode::InvalidOperation);
  connect();
  Publish qos2 = qos1("t", "x");
  qos2.qos = QoS::ExactlyOnce;
  EXPECT_EQ(session_.publish(qos2, kStart).code(), ErrorCode::ArgumentInvalid);
  EXPECT_EQ(session_.publish(qos1("a/+", "x"), kStart).code(), ErrorCode::ArgumentInvalid);
  EXPECT_EQ(session_.publish(qos1("", "x"), kStart).code(), ErrorCode::ArgumentInvalid);
  // A refused QoS 1 publish does not keep its packet id.
  EXPECT_TRUE(session_.inFlight().empty());
}

TEST_F(ClientSessionTest, UnackedPublishSurvivesReconnectAndIsRepublishedWithDup) {
  connect();
  auto sent = session_.publish(qos1("devices/dev1/messages/events/", "m"), kStart);
  ASSERT_TRUE(sent.isOk());
  session_.connectionLost();
  EXPECT_EQ(session_.state(), ClientSession::State::Disconnected);
  EXPECT_EQ(session_.republish(sentPacket<Publish>(sent->actions), kStart).code(),
            ErrorCode::InvalidOperation);

  connect(60, kStart + 5s, /*present=*/true);
  EXPECT_EQ(session_.inFlight().count(sent->packet_id), 1u);
  // A fresh publish does not reuse the id still in flight.
  auto other = session_.publish(qos1("t", "n"), kStart + 5s);
  ASSERT_TRUE(other.isOk());
  EXPECT_NE(other->packet_id, sent->packet_id);

  auto again = session_.republish(sentPacket<Publish>(sent->actions), kStart + 5s);
  ASSERT_TRUE(again.isOk());
  Publish out = sentPacket<Publish>(*again);
  EXPECT_TRUE(out.dup);
  EXPECT_EQ(out.packet_id, sent->packet_id);

  // Only in-flight QoS 1 publishes can be republished.
  Publish unknown = qos1("t", "x");
  unknown.packet_id = 4242;
  EXPECT_EQ(session_.republish(unknown, kStart).code(), ErrorCode::ArgumentInvalid);
}

TEST_F(ClientSessionTest, AbandonedPublishFreesItsIdAndIgnoresTheLatePubAck) {
  connect();
  auto sent = session_.publish(qos1("t", "x"), kStart);
  ASSERT_TRUE(sent.isOk());
  session_.abandon(sent->packet_id);
  EXPECT_TRUE(session_.inFlight().empty());
  EXPECT_TRUE(session_.onPacket(PubAck{sent->packet_id}, kStart).empty());
  session_.abandon(999);  // unknown: ignored
}

TEST_F(ClientSessionTest, PacketIdsSkipIdsInUseAndWrapAroundAfter65535) {
  connect();
  std::uint16_t sub = subscribe({"a"});
  EXPECT_EQ(sub, 1);
  std::uint16_t last = 0;
  for (int i = 0; i < 65533; ++i) {
    auto sent = session_.publish(qos1("t", ""), kStart);
    ASSERT_TRUE(sent.isOk()) << i;
    last = sent->packet_id;
  }
  EXPECT_EQ(last, 65534);
  auto top = session_.publish(qos1("t", ""), kStart);
  ASSERT_TRUE(top.isOk());
  EXPECT_EQ(top->packet_id, 65535);
  // Every id is taken (1 by the SUBSCRIBE, 2..65535 by publishes).
  EXPECT_EQ(session_.publish(qos1("t", ""), kStart).code(), ErrorCode::Throttled);
  EXPECT_EQ(session_.subscribe({{"b", QoS::AtMostOnce}}, kStart).code(), ErrorCode::Throttled);
  // Freeing one makes exactly that one available; allocation wraps past 65535 to it.
  (void)session_.onPacket(PubAck{7}, kStart);
  auto next = session_.publish(qos1("t", ""), kStart);
  ASSERT_TRUE(next.isOk());
  EXPECT_EQ(next->packet_id, 7);
}

TEST_F(ClientSessionTest, PendingSubscribesAreForgottenOnReconnect) {
  connect();
  std::uint16_t id = subscribe({"a"});
  session_.connectionLost();
  connect();
  // The old SUBACK can no longer come; one with that id now is unknown.
  EXPECT_TRUE(session_.onPacket(SubAck{id, {SubAckReturnCode::MaxQoS0}}, kStart).empty());
}

TEST_F(ClientSessionTest, IncomingQoS1IsAcknowledgedBeforeDelivery) {
  connect();
  Publish in = qos1("$iothub/methods/POST/m/?$rid=1", "{}");
  in.packet_id = 77;
  ClientActions actions = session_.onPacket(in, kStart);
  ASSERT_EQ(actions.size(), 2u);
  EXPECT_EQ(sentPacket<PubAck>(actions, 0), PubAck{77});
  const auto* received = actionAt<MessageReceived>(actions, 1);
  ASSERT_NE(received, nullptr);
  EXPECT_EQ(received->publish, in);
}

TEST_F(ClientSessionTest, IncomingQoS0IsDeliveredWithoutAck) {
  connect();
  Publish in;
  in.topic = "$iothub/twin/res/200/?$rid=1";
  in.payload = "{}";
  ClientActions actions = session_.onPacket(in, kStart);
  ASSERT_EQ(actions.size(), 1u);
  EXPECT_EQ(actionAt<MessageReceived>(actions, 0)->publish, in);
}

TEST_F(ClientSessionTest, IncomingQoS2Closes) {
  connect();
  Publish in = qos1("t", "x");
  in.qos = QoS::ExactlyOnce;
  in.packet_id = 3;
  EXPECT_EQ(closeReason(session_.onPacket(in, kStart)), ClientCloseReason::ProtocolViolation);
}

TEST_F(ClientSessionTest, PingReqAfterKeepAliveWithoutSending) {
  connect(60);
  EXPECT_TRUE(session_.onTick(kStart + 59s).empty());
  ClientActions actions = session_.onTick(kStart + 60s);
  ASSERT_EQ(actions.size(), 1u);
  EXPECT_EQ(sentPacket<PingReq>(actions), PingReq{});
  EXPECT_TRUE(session_.awaitingPingResponse());
  // The PINGRESP deadline is one keep-alive after the PINGREQ.
  EXPECT_EQ(session_.nextDeadline(), kStart + 120s);
  EXPECT_TRUE(session_.onTick(kStart + 61s).empty());
  actions = session_.onPacket(PingResp{}, kStart + 62s);
  ASSERT_EQ(actions.size(), 1u);
  EXPECT_TRUE(std::holds_alternative<PingAnswered>(actions[0]));
  EXPECT_FALSE(session_.awaitingPingResponse());
  EXPECT_EQ(session_.nextDeadline(), kStart + 120s);  // one period after the PINGREQ was sent
}

TEST_F(ClientSessionTest, SendingPostponesThePing) {
  connect(60);
  ASSERT_TRUE(session_.publish(qos1("t", "x"), kStart + 30s).isOk());
  EXPECT_EQ(session_.nextDeadline(), kStart + 90s);
  EXPECT_TRUE(session_.onTick(kStart + 60s).empty());
  // A PUBACK the client sends counts as sending too.
  Publish in = qos1("t", "x");
  in.packet_id = 5;
  (void)session_.onPacket(in, kStart + 80s);
  EXPECT_EQ(session_.nextDeadline(), kStart + 140s);
  // Receiving alone does not.
  (void)session_.onPacket(PingResp{}, kStart + 100s);
  EXPECT_EQ(session_.nextDeadline(), kStart + 140s);
}

TEST_F(ClientSessionTest, MissingPingRespCloses) {
  connect(10);
  (void)session_.onTick(kStart + 10s);
  ASSERT_TRUE(session_.awaitingPingResponse());
  EXPECT_TRUE(session_.onTick(kStart + 19s).empty());
  ClientActions actions = session_.onTick(kStart + 20s);
  EXPECT_EQ(closeReason(actions), ClientCloseReason::KeepAliveTimeout);
  const auto* close = actionAt<CloseClientConnection>(actions, 0);
  ASSERT_NE(close, nullptr);
  EXPECT_EQ(close->detail, "no PINGRESP within 10 s");
  EXPECT_FALSE(session_.nextDeadline());
}

TEST_F(ClientSessionTest, PingOnDemandSendsPingReqAndReportsThePingResp) {
  connect(60);
  ClientActions actions = session_.ping(kStart + 10s);
  ASSERT_EQ(actions.size(), 1u);
  EXPECT_EQ(sentPacket<PingReq>(actions), PingReq{});
  EXPECT_TRUE(session_.awaitingPingResponse());
  EXPECT_EQ(session_.nextDeadline(), kStart + 70s);  // the PINGRESP deadline
  actions = session_.onPacket(PingResp{}, kStart + 11s);
  ASSERT_EQ(actions.size(), 1u);
  EXPECT_TRUE(std::holds_alternative<PingAnswered>(actions[0]));
  EXPECT_FALSE(session_.awaitingPingResponse());
  // The PINGREQ counts as sending: the keep-alive PINGREQ is due a period after it.
  EXPECT_EQ(session_.nextDeadline(), kStart + 70s);
  EXPECT_TRUE(session_.onTick(kStart + 69s).empty());
}

TEST_F(ClientSessionTest, PingingAgainKeepsTheOldestPingRespDeadline) {
  connect(10);
  ASSERT_EQ(session_.ping(kStart + 1s).size(), 1u);
  ASSERT_EQ(session_.ping(kStart + 5s).size(), 1u);
  EXPECT_EQ(session_.nextDeadline(), kStart + 11s);
  EXPECT_EQ(closeReason(session_.onTick(kStart + 11s)), ClientCloseReason::KeepAliveTimeout);
}

TEST_F(ClientSessionTest, PingNeedsAnAcceptedConnection) {
  EXPECT_TRUE(session_.ping(kStart).empty());
  (void)session_.connect(deviceConnect(), kStart);
  EXPECT_TRUE(session_.ping(kStart).empty());
  (void)session_.onPacket(ConnAck{false, ConnectReturnCode::Accepted}, kStart);
  (void)session_.disconnect();
  EXPECT_TRUE(session_.ping(kStart).empty());
}

TEST_F(ClientSessionTest, PingWorksWithoutKeepAlive) {
  connect(0);
  EXPECT_EQ(sentPacket<PingReq>(session_.ping(kStart + 1s)), PingReq{});
  EXPECT_FALSE(session_.nextDeadline());
  ClientActions actions = session_.onPacket(PingResp{}, kStart + 2s);
  ASSERT_EQ(actions.size(), 1u);
  EXPECT_TRUE(std::holds_alternative<PingAnswered>(actions[0]));
}

TEST_F(ClientSessionTest, ZeroKeepAliveNeedsNoTimer) {
  connect(0);
  EXPECT_FALSE(session_.nextDeadline());
  EXPECT_TRUE(session_.onTick(kStart + 24h).empty());
}

TEST_F(ClientSessionTest, NoTimerBeforeConnAck) {
  (void)session_.connect(deviceConnect(5), kStart);
  EXPECT_FALSE(session_.nextDeadline());
  EXPECT_TRUE(session_.onTick(kStart + 1h).empty());
}

TEST_F(ClientSessionTest, DisconnectSendsDisconnectThenCloses) {
  connect();
  ClientActions actions = session_.disconnect();
  ASSERT_EQ(actions.size(), 2u);
  EXPECT_EQ(sentPacket<Disconnect>(actions, 0), Disconnect{});
  EXPECT_EQ(closeReason(actions), ClientCloseReason::Disconnected);
  EXPECT_EQ(session_.state(), ClientSession::State::Disconnected);
  // Whatever still arrives is ignored.
  EXPECT_TRUE(session_.onPacket(PubAck{1}, kStart).empty());
  EXPECT_EQ(session_.publish(qos1("t", "x"), kStart).code(), ErrorCode::InvalidOperation);
}

TEST_F(ClientSessionTest, DecodeErrorsClose) {
  connect();
  ClientActions actions = session_.onDecodeError(DecodeError::Malformed, "QoS 3");
  EXPECT_EQ(closeReason(actions), ClientCloseReason::MalformedPacket);
  connect();
  actions = session_.onDecodeError(DecodeError::PacketTooLarge, "too big");
  EXPECT_EQ(closeReason(actions), ClientCloseReason::PacketTooLarge);
  // Disconnected: nothing to close.
  EXPECT_TRUE(session_.onDecodeError(DecodeError::Malformed, "x").empty());
}

// The session driven by wire bytes, as the device SDK drives it: a malformed packet from the
// server (PUBLISH with QoS 3) closes the connection, packets decoded before it still count.
TEST_F(ClientSessionTest, DrivenByDecodedBytes) {
  (void)session_.connect(deviceConnect(), kStart);
  std::string wire;
  ASSERT_TRUE(encode(Packet{ConnAck{true, ConnectReturnCode::Accepted}}, wire).isOk());
  Publish in = qos1("$iothub/twin/PATCH/properties/desired/?$version=2", R"({"a":1})");
  in.packet_id = 12;
  ASSERT_TRUE(encode(Packet{in}, wire).isOk());
  wire += std::string("\x36\x00", 2);  // PUBLISH, QoS 3 flags
  Decoder decoder(1024);
  decoder.feed(wire);
  ClientActions all;
  for (;;) {
    auto next = decoder.next();
    if (!next) {
      for (auto& a : session_.onDecodeError(decoder.lastError(), next.status().message())) {
        all.push_back(std::move(a));
      }
      break;
    }
    if (!*next) break;
    for (auto& a : session_.onPacket(std::move(**next), kStart)) all.push_back(std::move(a));
  }
  ASSERT_EQ(all.size(), 4u);
  EXPECT_TRUE(std::holds_alternative<ConnectionAccepted>(all[0]));
  EXPECT_EQ(sentPacket<PubAck>(all, 1), PubAck{12});
  EXPECT_EQ(actionAt<MessageReceived>(all, 2)->publish, in);
  EXPECT_EQ(closeReason(all), ClientCloseReason::MalformedPacket);
}

TEST(ClientCloseReasonTest, EveryReasonHasAName) {
  for (auto reason : {ClientCloseReason::Disconnected, ClientCloseReason::ConnectRefused,
                      ClientCloseReason::ProtocolViolation, ClientCloseReason::MalformedPacket,
                      ClientCloseReason::PacketTooLarge, ClientCloseReason::KeepAliveTimeout}) {
    EXPECT_NE(clientCloseReasonName(reason), "unknown");
  }
}

}  // namespace
}  // namespace iothub::mqtt
