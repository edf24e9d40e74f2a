// Unit tests for dataplane::Forwarder with fake ports that record every send_burst:
// flooding, learned unicast, never back to the input port, multicast sources, one
// send_burst per output port per burst with frames in order, ageing, port removal, dump.
#include "dataplane/forwarder.h"

#include <gtest/gtest.h>

#include <memory>
#include <vector>

#include "dataplane/fake_port.h"
#include "switch/mac.h"

namespace vnet::dataplane {
namespace {

constexpr uint64_t kSec = 1'000'000'000;

sw::Mac mac(const char* s) {
  return *sw::Mac::parse(s);
}

const char* const kA = "52:54:00:00:00:0a";
const char* const kB = "52:54:00:00:00:0b";
const char* const kC = "52:54:00:00:00:0c";
const char* const kD = "52:54:00:00:00:0d";
const char* const kBcast = "ff:ff:ff:ff:ff:ff";

class ForwarderTest : public FakePortsTest {
 protected:
  ForwarderTest() : FakePortsTest(4) {}

  // Fills frame i of the batch with an Ethernet header dst/src.
  net::Packet* frame(uint32_t i, const char* dst, const char* src) {
    net::Packet& p = batch_[i];
    auto d = mac(dst).to_bytes(), s = mac(src).to_bytes();
    std::copy(d.begin(), d.end(), p.data);
    std::copy(s.begin(), s.end(), p.data + 6);
    p.data[12] = 0x08;
    p.data[13] = 0x00;
    p.len = 60;
    return &p;
  }

  // Sends one frame (slot 31 of the batch, so it does not disturb a burst being built).
  void send(uint16_t from, const char* dst, const char* src, uint64_t now = kSec) {
    net::Packet* p = frame(31, dst, src);
    fwd_.forward(port(from), &p, 1, ports_, now);
  }
};

TEST_F(ForwarderTest, BroadcastFloodsToAllButInput) {
  net::Packet* p = frame(0, kBcast, kA);
  fwd_.forward(port(1), &p, 1, ports_, kSec);
  EXPECT_TRUE(port(1).bursts.empty());
  for (uint16_t id = 2; id <= 4; ++id) {
    ASSERT_EQ(port(id).bursts.size(), 1u) << id;
    EXPECT_EQ(port(id).bursts[0], std::vector<net::Packet*>{p}) << id;
  }
  EXPECT_EQ(fwd_.counters().flooded.get(), 1u);
  EXPECT_EQ(fwd_.counters().unicast.get(), 0u);
  EXPECT_EQ(fwd_.fdb().lookup(mac(kA), 0, kSec), 1);  // the source was learned
}

TEST_F(ForwarderTest, UnknownUnicastFloods) {
  send(2, kB, kA);
  EXPECT_TRUE(port(2).bursts.empty());
  for (uint16_t id : {1, 3, 4}) EXPECT_EQ(port(id).frames().size(), 1u) << id;
  EXPECT_EQ(fwd_.counters().flooded.get(), 1u);
}

TEST_F(ForwarderTest, MulticastDestinationFloods) {
  send(2, kB, kA);  // learn A on 2 (irrelevant to a multicast destination)
  clear();
  send(3, "01:00:5e:00:00:fb", kC);
  EXPECT_TRUE(port(3).bursts.empty());
  for (uint16_t id : {1, 2, 4}) EXPECT_EQ(port(id).frames().size(), 1u) << id;
  EXPECT_EQ(fwd_.counters().flooded.get(), 2u);
}

TEST_F(ForwarderTest, LearnedUnicastGoesToExactlyOnePort) {
  send(2, kBcast, kB);  // B is on port 2
  clear();
  send(1, kB, kA);
  EXPECT_EQ(port(2).frames().size(), 1u);
  EXPECT_TRUE(port(1).bursts.empty());
  EXPECT_TRUE(port(3).bursts.empty());
  EXPECT_TRUE(port(4).bursts.empty());
  EXPECT_EQ(fwd_.counters().unicast.get(), 1u);
  EXPECT_EQ(fwd_.counters().flooded.get(), 1u);  // only the first broadcast
  // And the reply from B to A (learned on 1 by the frame above) goes to port 1 only.
  clear();
  send(2, kA, kB);
  EXPECT_EQ(port(1).frames().size(), 1u);
  EXPECT_TRUE(port(3).bursts.empty());
  EXPECT_TRUE(port(4).bursts.empty());
}

TEST_F(ForwarderTest, NeverBackToTheInputPort) {
  send(1, kBcast, kA);
  send(1, kBcast, kB);  // A and B both behind port 1
  clear();
  send(1, kB, kA);
  for (uint16_t id = 1; id <= 4; ++id) EXPECT_TRUE(port(id).bursts.empty()) << id;
  EXPECT_EQ(fwd_.counters().same_port.get(), 1u);
}

TEST_F(ForwarderTest, StationMoveRedirects) {
  send(2, kBcast, kB);
  send(3, kBcast, kB);  // B moved to port 3
  clear();
  send(1, kB, kA);
  EXPECT_TRUE(port(2).bursts.empty());
  EXPECT_EQ(port(3).frames().size(), 1u);
  EXPECT_EQ(fwd_.fdb().counters().moved.get(), 1u);
}

TEST_F(ForwarderTest, MulticastAndZeroSourcesAreNotLearned) {
  send(1, kBcast, "01:00:5e:00:00:01");
  send(1, kBcast, "00:00:00:00:00:00");
  EXPECT_EQ(fwd_.fdb().size(), 0u);
  EXPECT_EQ(fwd_.counters().src_multicast.get(), 1u);
  EXPECT_EQ(fwd_.counters().src_zero.get(), 1u);
  // They are still forwarded.
  EXPECT_EQ(port(2).frames().size(), 2u);
}

TEST_F(ForwarderTest, OneSendBurstPerPortAndOrderKept) {
  send(2, kBcast, kB);
  send(3, kBcast, kC);
  clear();
  // A burst from port 1: to B, to C, broadcast, to B, unknown D, to C, to A (itself).
  const char* dsts[] = {kB, kC, kBcast, kB, kD, kC, kA};
  net::Packet* pkts[7];
  for (uint32_t i = 0; i < 7; ++i) pkts[i] = frame(i, dsts[i], kA);
  fwd_.forward(port(1), pkts, 7, ports_, 2 * kSec);

  using V = std::vector<net::Packet*>;
  ASSERT_EQ(port(2).bursts.size(), 1u);
  EXPECT_EQ(port(2).bursts[0], (V{pkts[0], pkts[2], pkts[3], pkts[4]}));
  ASSERT_EQ(port(3).bursts.size(), 1u);
  EXPECT_EQ(port(3).bursts[0], (V{pkts[1], pkts[2], pkts[4], pkts[5]}));
  ASSERT_EQ(port(4).bursts.size(), 1u);
  EXPECT_EQ(port(4).bursts[0], (V{pkts[2], pkts[4]}));
  EXPECT_TRUE(port(1).bursts.empty());
  EXPECT_EQ(fwd_.counters().unicast.get(), 4u);
  EXPECT_EQ(fwd_.counters().flooded.get(), 2u + 2u);  // two setup broadcasts + 2
  EXPECT_EQ(fwd_.counters().same_port.get(), 1u);     // to A, learned on 1 by pkts[0]
}

// Frames with the same header as an earlier one of the burst take its way without a
// lookup, until a frame of that burst moves their destination.
TEST_F(ForwarderTest, RunOfOneFlowFollowsAStationMoveInTheBurst) {
  send(2, kBcast, kB);  // B is on port 2
  clear();
  net::Packet* pkts[4] = {frame(0, kB, kA), frame(1, kB, kA), frame(2, kD, kB),
                          frame(3, kB, kA)};  // pkts[2] shows B behind port 1
  fwd_.forward(port(1), pkts, 4, ports_, 2 * kSec);
  using V = std::vector<net::Packet*>;
  ASSERT_EQ(port(2).bursts.size(), 1u);
  EXPECT_EQ(port(2).bursts[0], (V{pkts[0], pkts[1], pkts[2]}));  // pkts[3] not
  EXPECT_EQ(fwd_.counters().unicast.get(), 2u);
  EXPECT_EQ(fwd_.counters().same_port.get(), 1u);
  EXPECT_EQ(fwd_.fdb().lookup(mac(kB), 0, 2 * kSec), 1);
}

TEST_F(ForwarderTest, RunOfMulticastSourceFramesCountsEachFrame) {
  send(2, kBcast, kB);
  clear();
  net::Packet* pkts[3];
  for (uint32_t i = 0; i < 3; ++i) pkts[i] = frame(i, kB, "01:00:5e:00:00:01");
  fwd_.forward(port(1), pkts, 3, ports_, 2 * kSec);
  EXPECT_EQ(port(2).frames().size(), 3u);
  EXPECT_EQ(fwd_.counters().src_multicast.get(), 3u);
  EXPECT_EQ(fwd_.counters().unicast.get(), 3u);
}

TEST_F(ForwarderTest, FullBurstFloodedToEveryPort) {
  net::Packet* pkts[net::kBurst];
  for (uint32_t i = 0; i < net::kBurst; ++i) pkts[i] = frame(i, kBcast, kA);
  fwd_.forward(port(4), pkts, net::kBurst, ports_, kSec);
  for (uint16_t id = 1; id <= 3; ++id) {
    ASSERT_EQ(port(id).bursts.size(), 1u);
    EXPECT_EQ(port(id).bursts[0], std::vector<net::Packet*>(pkts, pkts + net::kBurst));
  }
  EXPECT_TRUE(port(4).bursts.empty());
}

TEST_F(ForwarderTest, PortRemovedForgetsItsEntries) {
  send(2, kBcast, kB);
  ASSERT_EQ(fwd_.fdb().lookup(mac(kB), 0, kSec), 2);
  // What Worker::remove_port does: drop it from the list, tell the forwarder.
  ports_.erase(ports_.begin() + 1);
  fwd_.port_removed(port(2));
  fwd_.set_ports(ports_);
  EXPECT_EQ(fwd_.fdb().lookup(mac(kB), 0, kSec), 0);
  clear();
  send(1, kB, kA);  // unknown again: flooded to the remaining ports
  EXPECT_TRUE(port(2).bursts.empty());
  EXPECT_EQ(port(3).frames().size(), 1u);
  EXPECT_EQ(port(4).frames().size(), 1u);
}

TEST_F(ForwarderTest, EntryOnAPortNotInTheListFloods) {
  fwd_.fdb().learn(mac(kB), 0, 9, kSec);  // port 9 is not attached to this worker
  send(1, kB, kA);
  for (uint16_t id = 2; id <= 4; ++id) EXPECT_EQ(port(id).frames().size(), 1u) << id;
  EXPECT_EQ(fwd_.counters().stale_port.get(), 1u);
  EXPECT_EQ(fwd_.counters().flooded.get(), 1u);
}

TEST_F(ForwarderTest, TickAgesEntriesWithBoundedWork) {
  send(2, kBcast, kB, kSec);
  send(3, kBcast, kC, 200 * kSec);
  ASSERT_EQ(fwd_.fdb().size(), 2u);
  uint64_t now = 302 * kSec;  // B expired, C did not
  const uint32_t ticks = fwd_.fdb().slots() / Forwarder::kAgeBudget + 1;
  for (uint32_t i = 0; i < ticks; ++i) {
    fwd_.tick(now);
    fwd_.tick(now);  // within kTickIntervalNs: no work
    now += Forwarder::kTickIntervalNs;
  }
  EXPECT_EQ(fwd_.fdb().size(), 1u);
  EXPECT_EQ(fwd_.fdb().counters().aged.get(), 1u);
  EXPECT_EQ(fwd_.fdb().lookup(mac(kC), 0, now), 3);
}

TEST_F(ForwarderTest, TickIsRateLimited) {
  for (int i = 0; i < 200; ++i) {
    char m[18];
    snprintf(m, sizeof(m), "52:54:00:00:10:%02x", i);
    send(2, kBcast, m, kSec);
  }
  const uint64_t now = 400 * kSec;  // all expired
  fwd_.tick(now);
  const uint64_t after_one = fwd_.fdb().counters().aged.get();
  for (int i = 0; i < 100; ++i) fwd_.tick(now);  // same instant: nothing more
  EXPECT_EQ(fwd_.fdb().counters().aged.get(), after_one);
  EXPECT_LE(after_one, Forwarder::kAgeBudget);
}

// Workers share one table: however many of them tick, it is swept at one rate.
TEST(ForwarderShared, TwoWorkersSweepAtOneRate) {
  Forwarder::Config cfg;
  cfg.fdb_capacity = 800;  // 1024 slots: two sweeps of kAgeBudget cover the table
  auto fdb = Forwarder::make_fdb(cfg);
  ASSERT_EQ(fdb->slots(), 2 * Forwarder::kAgeBudget);
  Forwarder a(fdb), b(fdb);
  for (int i = 0; i < 800; ++i) {
    char m[18];
    snprintf(m, sizeof(m), "52:54:00:00:%02x:%02x", i >> 8, i & 0xff);
    fdb->learn(mac(m), 0, 2, kSec);
  }
  const uint32_t learned = fdb->size();
  ASSERT_GT(learned, 700u);
  // All expired. Both tick at the same instant, each past its own interval: one sweep
  // of half the table, not two of all of it.
  uint64_t now = 400 * kSec;
  a.tick(now);
  b.tick(now);
  EXPECT_GT(fdb->counters().aged.get(), 0u);
  EXPECT_GT(fdb->size(), 0u);
  // The next interval's sweep takes the other half, whoever runs it.
  now += Forwarder::kTickIntervalNs;
  b.tick(now);
  a.tick(now);
  EXPECT_EQ(fdb->size(), 0u);
  EXPECT_EQ(fdb->counters().aged.get(), learned);
}

TEST_F(ForwarderTest, DumpAndFlush) {
  send(3, kBcast, kC, 5 * kSec);
  send(2, kBcast, kB, 1 * kSec);
  auto d = fwd_.dump(11 * kSec);
  ASSERT_EQ(d.size(), 2u);
  EXPECT_EQ(d[0].mac, "52:54:00:00:00:0b");
  EXPECT_EQ(d[0].port, 2);
  EXPECT_EQ(d[0].vlan, 0);
  EXPECT_EQ(d[0].age, 10u);
  EXPECT_EQ(d[1].mac, "52:54:00:00:00:0c");
  EXPECT_EQ(d[1].port, 3);
  EXPECT_EQ(d[1].age, 6u);
  EXPECT_TRUE(fwd_.dump(400 * kSec).empty());  // expired entries are not shown
  fwd_.flush();
  EXPECT_TRUE(fwd_.dump(11 * kSec).empty());
  EXPECT_EQ(fwd_.fdb().size(), 0u);
}

TEST_F(ForwarderTest, DumpWithoutArgumentUsesTheMonotonicClock) {
  send(2, kBcast, kB, Forwarder::monotonic_ns());
  auto d = fwd_.dump();
  ASSERT_EQ(d.size(), 1u);
  EXPECT_LE(d[0].age, 1u);
}

TEST_F(ForwarderTest, PortListChangeWithoutSetPortsIsHandled) {
  auto extra = std::make_unique<FakePort>("p5", 5);
  ports_.push_back(extra.get());  // no set_ports(): forward() notices the new size
  send(1, kBcast, kA);
  EXPECT_EQ(extra->frames().size(), 1u);
  net::Packet* p = frame(0, kA, kD);
  fwd_.forward(*extra, &p, 1, ports_, kSec);
  EXPECT_EQ(port(1).frames().size(), 1u);
  EXPECT_EQ(fwd_.fdb().lookup(mac(kD), 0, kSec), 5);
  EXPECT_EQ(fwd_.counters().unicast.get(), 1u);
}

}  // namespace
}  // namespace vnet::dataplane
