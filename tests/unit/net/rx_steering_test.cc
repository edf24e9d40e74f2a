// RxSteering (net/rx_steering.h): a flow keeps its queue, flows spread over the enabled
// queues only, and a flow learnt on TX queue q comes back on RX queue q while q is
// enabled.
#include "net/rx_steering.h"

#include <gtest/gtest.h>

#include <cstring>
#include <map>
#include <vector>

#include "flow_frames.h"
#include "net/flow_hash.h"

namespace vnet::net {
namespace {

using test::Flow4;
using test::ipv4_frame;

uint32_t hash_of(const Flow4& fl) {
  auto f = ipv4_frame(fl);
  return flow_hash(f.data(), uint32_t(f.size()));
}

Flow4 flow(uint32_t i) {
  return Flow4{0x0a000001 + (i >> 8), 0x0a800001, uint16_t(20000 + i), 5201};
}

TEST(RxSteering, OnlyEnabledQueuesAndStablePerFlow) {
  RxSteering s;
  const uint32_t enabled[] = {0, 2, 5};
  s.set_enabled(enabled, 3);
  EXPECT_EQ(s.enabled_count(), 3u);
  std::map<uint32_t, uint32_t> per_queue;
  for (uint32_t i = 0; i < 3000; ++i) {
    const uint32_t h = hash_of(flow(i));
    const uint32_t q = s.pick(h);
    ASSERT_TRUE(q == 0 || q == 2 || q == 5) << q;
    EXPECT_EQ(s.pick(h), q) << "a flow keeps its queue";
    EXPECT_EQ(s.pick(hash_of(flow(i).reversed())), q) << "both directions alike";
    ++per_queue[q];
  }
  for (uint32_t q : enabled) {
    EXPECT_GT(per_queue[q], 800u) << "queue " << q;
    EXPECT_LT(per_queue[q], 1200u) << "queue " << q;
  }
}

TEST(RxSteering, FlowsOfDisabledQueuesSpreadOverTheRest) {
  // 4 -> 2 queues: the flows that were on queues 2 and 3 go to both 0 and 1, not all
  // to one of them.
  RxSteering s;
  const uint32_t four[] = {0, 1, 2, 3}, two[] = {0, 1};
  std::vector<uint32_t> moved;
  s.set_enabled(four, 4);
  for (uint32_t i = 0; i < 2000; ++i)
    if (s.pick(hash_of(flow(i))) >= 2) moved.push_back(hash_of(flow(i)));
  s.set_enabled(two, 2);
  uint32_t on[2] = {0, 0};
  for (uint32_t h : moved) ++on[s.pick(h)];
  EXPECT_GT(on[0], moved.size() * 4 / 10);
  EXPECT_GT(on[1], moved.size() * 4 / 10);
}

TEST(RxSteering, LearntFlowReturnsOnItsTxQueue) {
  RxSteering s;
  const uint32_t all[] = {0, 1, 2, 3};
  s.set_enabled(all, 4);
  // Flows learnt on each TX queue come back on the same RX queue, whatever their hash.
  for (uint32_t i = 0; i < 64; ++i) s.learn(hash_of(flow(i)), i % 4);
  for (uint32_t i = 0; i < 64; ++i) {
    EXPECT_EQ(s.pick(hash_of(flow(i))), i % 4) << "flow " << i;
    EXPECT_EQ(s.pick(hash_of(flow(i).reversed())), i % 4) << "reply of flow " << i;
  }
  // A flow seen later on another queue moves with it (the guest moved it).
  s.learn(hash_of(flow(1)), 3);
  EXPECT_EQ(s.pick(hash_of(flow(1))), 3u);
}

TEST(RxSteering, LearntQueueDisabledFallsBackToHash) {
  RxSteering s;
  const uint32_t all[] = {0, 1, 2, 3};
  s.set_enabled(all, 4);
  const uint32_t h = hash_of(flow(7));
  s.learn(h, 3);
  EXPECT_EQ(s.pick(h), 3u);
  const uint32_t three[] = {0, 1, 2};
  s.set_enabled(three, 3);  // the guest turned pair 3 off (ethtool -L combined 3)
  const uint32_t q = s.pick(h);
  EXPECT_LT(q, 3u);
  EXPECT_EQ(q, three[RxSteering::spread(h, 3)]);
  s.set_enabled(all, 4);  // back on: the learnt entry holds again
  EXPECT_EQ(s.pick(h), 3u);
  s.clear();
  EXPECT_EQ(s.pick(h), RxSteering::spread(h, 4));
}

TEST(RxSteering, CollidingSetKeepsFourFlowsAndDoesNotMisSteer) {
  // Hashes in the same set (same low bits) with different tags: a flow never takes
  // another's queue; four of them are remembered at once, the oldest goes first.
  RxSteering s;
  const uint32_t all[] = {0, 1, 2, 3};
  s.set_enabled(all, 4);
  auto in_set = [](uint32_t tag) { return tag << RxSteering::kBucketBits | 0x123; };
  const uint32_t b = in_set(0x3fffff);  // never learnt
  const uint32_t qb = RxSteering::spread(b, 4);
  for (uint32_t t = 1; t <= 4; ++t) s.learn(in_set(t), (qb + t) % 4);
  EXPECT_EQ(s.pick(b), qb);
  for (uint32_t t = 1; t <= 4; ++t) EXPECT_EQ(s.pick(in_set(t)), (qb + t) % 4) << t;
  // Relearning one moves it first; a fifth flow then pushes out the oldest (tag 2).
  s.learn(in_set(1), (qb + 1) % 4);
  s.learn(in_set(5), (qb + 1) % 4);
  EXPECT_EQ(s.pick(in_set(2)), RxSteering::spread(in_set(2), 4));
  for (uint32_t t : {1u, 3u, 4u}) EXPECT_EQ(s.pick(in_set(t)), (qb + t) % 4) << t;
  EXPECT_EQ(s.pick(in_set(5)), (qb + 1) % 4);
}

TEST(RxSteering, ManyFlowsAllRemembered) {
  // 256 flows (a testpmd multi-flow burst) learnt round-robin on 4 queues: every one
  // comes back on its queue.
  RxSteering s;
  const uint32_t all[] = {0, 1, 2, 3};
  s.set_enabled(all, 4);
  for (uint32_t i = 0; i < 256; ++i) s.learn(hash_of(flow(i)), (i / 32) % 4);
  uint32_t wrong = 0;
  for (uint32_t i = 0; i < 256; ++i) wrong += s.pick(hash_of(flow(i).reversed())) != (i / 32) % 4;
  EXPECT_EQ(wrong, 0u);
}

Packet frame_packet(const Flow4& fl) {
  Packet p;
  auto f = ipv4_frame(fl);
  std::memcpy(p.data, f.data(), f.size());
  p.len = uint32_t(f.size());
  return p;
}

TEST(SendSteered, SubBurstPerQueueInOrderByTheCarriedHash) {
  // 64 frames of 16 flows over 4 queues. Half of them carry their hash from the
  // receive side (Packet::flow), half have it computed here: every frame goes to the
  // queue its flow picks, and each queue gets its frames in the order they came.
  RxSteering s;
  const uint32_t all[] = {0, 1, 2, 3};
  s.set_enabled(all, 4);
  std::vector<Packet> pk;
  for (uint32_t i = 0; i < 64; ++i) {
    pk.push_back(frame_packet(flow(i % 16)));
    pk.back().vlan = uint16_t(i);  // the frame's position, to check the order
    if (i % 2) pk.back().flow = hash_of(flow(i % 16));
  }
  std::vector<Packet*> ptrs;
  for (auto& p : pk) ptrs.push_back(&p);
  std::map<uint32_t, std::vector<uint16_t>> got;
  const uint32_t sent = send_steered(s, ptrs.data(), uint32_t(ptrs.size()),
                                     [&](uint32_t q, Packet* const* p, uint32_t k) {
                                       for (uint32_t j = 0; j < k; ++j)
                                         got[q].push_back(p[j]->vlan);
                                       return k;
                                     });
  EXPECT_EQ(sent, 64u);
  size_t total = 0;
  for (auto& [q, pos] : got) {
    total += pos.size();
    for (size_t j = 0; j < pos.size(); ++j) {
      EXPECT_EQ(s.pick(hash_of(flow(pos[j] % 16))), q) << "frame " << pos[j];
      if (j) {
        EXPECT_LT(pos[j - 1], pos[j]) << "queue " << q;
      }
    }
  }
  EXPECT_EQ(total, 64u);
  EXPECT_GE(got.size(), 3u);  // 16 flows spread over the queues

  // A carried hash is what steers: a packet whose Packet::flow names another flow goes
  // where that flow goes (the receive side computed it from the same bytes).
  Packet odd = frame_packet(flow(0));
  uint32_t other = 1;
  while (s.pick(hash_of(flow(other))) == s.pick(hash_of(flow(0)))) ++other;
  odd.flow = hash_of(flow(other));
  Packet* op = &odd;
  uint32_t queue = 99;
  send_steered(s, &op, 1, [&](uint32_t q, Packet* const*, uint32_t k) {
    queue = q;
    return k;
  });
  EXPECT_EQ(queue, s.pick(hash_of(flow(other))));
}

}  // namespace
}  // namespace vnet::net
