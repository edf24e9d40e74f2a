// Frontend: a real vhost-user front end against an in-process Endpoint (server and
// client mode) whose Backend starts real virtio::DeviceQueues on the memory the
// session mapped from the front end's memfd. The device pops what the front end's
// DriverQueue added and pushes it back; the front end reaps it. Also the raw
// send_raw()/recv_reply() path with a malformed message.
#include "vhost_user/frontend.h"

#include <gtest/gtest.h>
#include <linux/virtio_config.h>
#include <linux/virtio_ring.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>

#include "common/event_loop.h"
#include "vhost_user/endpoint.h"
#include "vhu_test_util.h"
#include "virtio/packed_device_queue.h"

namespace vnet::vhost_user {
namespace {

using testing::bit;
using testing::readable;

// A Backend with real device queues. Session calls arrive on the loop thread; the
// test body touches the queues from its own thread, under `mu`.
class DeviceBackend : public Backend {
 public:
  static constexpr uint32_t kRings = 2;
  std::mutex mu;
  std::shared_ptr<const memory::GuestMemory> mem;
  virtio::DeviceQueue vq[kRings];
  virtio::PackedDeviceQueue pvq[kRings];  // the ring of index i when it is packed
  bool packed[kRings] = {};
  FrontendFd kick[kRings], call[kRings];
  bool enabled[kRings] = {};
  uint64_t acked = 0;
  std::atomic<int> resets{0};

  uint64_t device_features() const override {
    return bit(VIRTIO_F_VERSION_1) | bit(VIRTIO_RING_F_EVENT_IDX) |
           bit(VIRTIO_RING_F_INDIRECT_DESC) | bit(VIRTIO_F_RING_PACKED) | kFeatureProtocolFeatures;
  }
  uint64_t protocol_features() const override {
    return protocol::kMq | protocol::kReplyAck | protocol::kConfigureMemSlots;
  }
  uint32_t max_queue_pairs() const override { return 1; }
  Status set_features(uint64_t f) override {
    std::lock_guard lk(mu);
    acked = f;
    return Status::ok();
  }
  void set_memory(std::shared_ptr<const memory::GuestMemory> m) override {
    std::lock_guard lk(mu);
    mem = std::move(m);
  }
  Status start_queue(uint32_t i, const virtio::QueueConfig& cfg, FrontendFd k) override {
    std::lock_guard lk(mu);
    if (i >= kRings) return Status::error("ring out of range");
    vq[i].stop();
    pvq[i].stop();
    packed[i] = cfg.packed;
    Status st = cfg.packed ? pvq[i].start(mem, cfg) : vq[i].start(mem, cfg);
    if (!st) return st;
    kick[i] = std::move(k);
    return Status::ok();
  }
  uint16_t stop_queue(uint32_t i) override {
    std::lock_guard lk(mu);
    if (i >= kRings) return 0;
    vq[i].stop();
    pvq[i].stop();
    kick[i].reset();
    return packed[i] ? pvq[i].last_avail_idx() : vq[i].last_avail_idx();
  }
  Status set_call(uint32_t i, FrontendFd c) override {
    std::lock_guard lk(mu);
    if (i < kRings) call[i] = std::move(c);
    return Status::ok();
  }
  void set_enabled(uint32_t i, bool e) override {
    std::lock_guard lk(mu);
    if (i < kRings) enabled[i] = e;
  }
  void reset() override {
    std::lock_guard lk(mu);
    for (uint32_t i = 0; i < kRings; ++i) {
      vq[i].stop();
      kick[i].reset();
      call[i].reset();
      enabled[i] = false;
    }
    mem.reset();
    acked = 0;
    ++resets;
  }
};

bool eventually(const std::function<bool()>& cond, int ms = 5000) {
  for (int i = 0; i < ms / 5 && !cond(); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  return cond();
}

class FrontendTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = ::testing::TempDir() + "vnet-fe-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
    path_ = dir_ + "/vhu.sock";
    wake_.reset(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    ASSERT_TRUE(wake_.valid());
    ASSERT_TRUE(loop_.add(wake_.get(), EPOLLIN, [this](uint32_t) { loop_.stop(); }));
  }
  void TearDown() override {
    stop_loop();
    endpoint_.reset();
    ::rmdir(dir_.c_str());
  }
  // The endpoint is created before the loop thread runs; afterwards only that thread
  // touches the loop.
  void start_endpoint(bool client) {
    EndpointConfig ec;
    ec.path = path_;
    ec.client = client;
    ec.name = "fe-test";
    ec.reconnect_interval = std::chrono::milliseconds(20);
    auto ep = Endpoint::create(loop_, ec, backend_);
    ASSERT_TRUE(ep) << ep.message();
    endpoint_ = std::move(*ep);
    thread_ = std::thread([this] { loop_.run(); });
  }
  void stop_loop() {
    if (!thread_.joinable()) return;
    uint64_t one = 1;
    ASSERT_EQ(::write(wake_.get(), &one, sizeof(one)), ssize_t(sizeof(one)));
    thread_.join();
  }
  FrontendConfig config(bool listen = false) {
    FrontendConfig c;
    c.socket_path = path_;
    c.listen = listen;
    c.mem_size = 4ULL << 20;
    c.features = bit(VIRTIO_F_VERSION_1) | bit(VIRTIO_RING_F_EVENT_IDX);
    c.required_features = bit(VIRTIO_F_VERSION_1);
    c.queue_size = 64;
    c.timeout_ms = 3000;
    return c;
  }

  std::string dir_, path_;
  EventLoop loop_;
  UniqueFd wake_;
  DeviceBackend backend_;
  std::unique_ptr<Endpoint> endpoint_;
  std::thread thread_;
};

// Device side of one round trip on ring `q`: waits for the kick, pops one chain,
// lets `work` look at it and returns the bytes it says it wrote; pushes, publishes
// and calls.
void device_round(DeviceBackend& b, uint32_t q,
                  const std::function<uint32_t(virtio::Chain&)>& work) {
  int kick_fd;
  {
    std::lock_guard lk(b.mu);
    kick_fd = b.kick[q].watch_fd();
  }
  ASSERT_GE(kick_fd, 0);
  ASSERT_TRUE(readable(kick_fd, 2000)) << "no kick on ring " << q;
  uint64_t v;
  ASSERT_EQ(::read(kick_fd, &v, sizeof(v)), ssize_t(sizeof(v)));
  std::lock_guard lk(b.mu);
  auto chain = std::make_unique<virtio::Chain>();
  ASSERT_EQ(b.vq[q].available(), 1u);
  ASSERT_EQ(b.vq[q].pop(*chain), virtio::PopStatus::kOk);
  uint32_t written = work(*chain);
  b.vq[q].push(chain->head, written);
  b.vq[q].publish();
  ASSERT_TRUE(b.vq[q].should_notify());
  ASSERT_EQ(eventfd_write(b.call[q].watch_fd(), 1), 0);
}

TEST_F(FrontendTest, NegotiatesAndRoundTripsBothRings) {
  start_endpoint(false);
  auto fe = Frontend::connect_and_start(config());
  ASSERT_TRUE(fe) << fe.message();
  Frontend& f = **fe;

  // Negotiation: what was asked and offered, and PROTOCOL_FEATURES because protocol
  // features were asked for; the session agrees.
  const uint64_t want =
      bit(VIRTIO_F_VERSION_1) | bit(VIRTIO_RING_F_EVENT_IDX) | kFeatureProtocolFeatures;
  EXPECT_EQ(f.features(), want);
  EXPECT_EQ(f.offered_features(), backend_.device_features());
  EXPECT_EQ(f.protocol_features(), protocol::kMq | protocol::kReplyAck);
  EXPECT_EQ(f.backend_queue_pairs(), 1u);
  {
    std::lock_guard lk(backend_.mu);
    EXPECT_EQ(backend_.acked, want);
    ASSERT_TRUE(backend_.mem);
    ASSERT_EQ(backend_.mem->size(), 1u);
    const auto& d = backend_.mem->regions()[0]->desc();
    EXPECT_EQ(d.guest_phys_addr, 0u);
    EXPECT_EQ(d.memory_size, f.mem_size());
    EXPECT_EQ(d.userspace_addr, f.uva());
    for (uint32_t q = 0; q < 2; ++q) {
      EXPECT_TRUE(backend_.vq[q].started()) << q;
      EXPECT_EQ(backend_.vq[q].size(), 64u);
      EXPECT_TRUE(backend_.enabled[q]) << q;
      EXPECT_TRUE(backend_.kick[q].valid()) << q;
      EXPECT_TRUE(backend_.call[q].valid()) << q;
    }
  }

  // TX direction (ring 1): a device-readable buffer with a pattern.
  auto out = f.alloc(100);
  ASSERT_TRUE(out);
  for (uint32_t i = 0; i < 100; ++i) out->host[i] = uint8_t(i * 7 + 1);
  virtio::Buf ob{out->gpa, 100};
  int head = f.queue(1).add(&ob, 1, nullptr, 0);
  ASSERT_GE(head, 0);
  f.queue(1).publish();
  f.queue(1).enable_interrupts();
  ASSERT_TRUE(f.queue(1).should_kick());  // a fresh ring asks for the first kick
  f.kick(1);
  device_round(backend_, 1, [&](virtio::Chain& c) {
    EXPECT_EQ(c.head, uint16_t(head));
    EXPECT_EQ(c.n_out, 1u);
    EXPECT_EQ(c.n_in, 0u);
    EXPECT_EQ(c.out_len, 100u);
    const uint8_t* p = static_cast<const uint8_t*>(c.segs[0].iov_base);
    for (uint32_t i = 0; i < 100; ++i) EXPECT_EQ(p[i], uint8_t(i * 7 + 1)) << i;
    return 0u;
  });
  ASSERT_TRUE(f.wait_call(1, 2000));
  virtio::Used u;
  ASSERT_TRUE(f.queue(1).reap(u));
  EXPECT_EQ(u.id, uint16_t(head));
  EXPECT_EQ(u.len, 0u);
  EXPECT_FALSE(f.queue(1).reap(u));
  EXPECT_EQ(f.queue(1).num_free(), 64u);

  // RX direction (ring 0): the device writes into a device-writable buffer.
  auto in = f.alloc(256);
  ASSERT_TRUE(in);
  virtio::Buf ib{in->gpa, 256};
  head = f.queue(0).add(nullptr, 0, &ib, 1);
  ASSERT_GE(head, 0);
  f.queue(0).publish();
  f.queue(0).enable_interrupts();
  ASSERT_TRUE(f.queue(0).should_kick());
  f.kick(0);
  device_round(backend_, 0, [&](virtio::Chain& c) {
    EXPECT_EQ(c.n_in, 1u);
    EXPECT_EQ(c.in_len, 256u);
    std::memset(c.in_segs()[0].iov_base, 0xab, 40);
    return 40u;
  });
  ASSERT_TRUE(f.wait_call(0, 2000));
  ASSERT_TRUE(f.queue(0).reap(u));
  EXPECT_EQ(u.id, uint16_t(head));
  EXPECT_EQ(u.len, 40u);
  EXPECT_EQ(in->host[0], 0xab);
  EXPECT_EQ(in->host[39], 0xab);
  EXPECT_EQ(in->host[40], 0);

  // GET_VRING_BASE stops the ring where the device got to.
  auto base = f.get_vring_base(1);
  ASSERT_TRUE(base) << base.message();
  EXPECT_EQ(*base, 1u);
  {
    std::lock_guard lk(backend_.mu);
    EXPECT_FALSE(backend_.vq[1].started());
    EXPECT_TRUE(backend_.vq[0].started());
  }
  // Setting the ring up again restarts it (fresh, base 0).
  ASSERT_TRUE(f.setup_queue(1));
  {
    std::lock_guard lk(backend_.mu);
    EXPECT_TRUE(backend_.vq[1].started());
    EXPECT_EQ(backend_.vq[1].last_avail_idx(), 0u);
  }

  // Closing the front end ends the session: the back end is reset.
  int resets = backend_.resets;
  fe->reset();
  EXPECT_TRUE(eventually([&] { return backend_.resets > resets; }));
}

// VIRTIO_F_RING_PACKED: the front end lays out packed rings and starts them at base
// 0x8000 (position 0, wrap counter 1); a chain goes through the device's packed queue
// and back; GET_VRING_BASE reports the position with the wrap counter in bit 15.
TEST_F(FrontendTest, PackedRingRoundTripAndBase) {
  start_endpoint(false);
  FrontendConfig c = config();
  c.features |= bit(VIRTIO_F_RING_PACKED);
  auto fe = Frontend::connect_and_start(c);
  ASSERT_TRUE(fe) << fe.message();
  Frontend& f = **fe;
  ASSERT_TRUE(f.packed());
  {
    std::lock_guard lk(backend_.mu);
    ASSERT_TRUE(backend_.packed[1]);
    EXPECT_TRUE(backend_.pvq[1].started());
    EXPECT_EQ(backend_.pvq[1].last_avail_idx(), 0x8000u);
  }
  auto out = f.alloc(100);
  ASSERT_TRUE(out);
  std::memset(out->host, 0x3c, 100);
  virtio::Buf ob{out->gpa, 100};
  int id = f.packed_queue(1).add(&ob, 1, nullptr, 0);
  ASSERT_GE(id, 0);
  f.packed_queue(1).publish();
  ASSERT_TRUE(f.packed_queue(1).should_kick());
  f.kick(1);
  {
    int kick_fd;
    {
      std::lock_guard lk(backend_.mu);
      kick_fd = backend_.kick[1].watch_fd();
    }
    ASSERT_TRUE(readable(kick_fd, 2000));
    std::lock_guard lk(backend_.mu);
    auto chain = std::make_unique<virtio::Chain>();
    ASSERT_EQ(backend_.pvq[1].pop(*chain), virtio::PopStatus::kOk);
    EXPECT_EQ(chain->head, uint16_t(id));
    EXPECT_EQ(chain->out_len, 100u);
    EXPECT_EQ(static_cast<const uint8_t*>(chain->segs[0].iov_base)[99], 0x3c);
    backend_.pvq[1].push(chain->head, 0);
    backend_.pvq[1].publish();
  }
  virtio::Used u;
  ASSERT_TRUE(f.packed_queue(1).reap(u));
  EXPECT_EQ(u.id, uint16_t(id));
  auto base = f.get_vring_base(1);
  ASSERT_TRUE(base) << base.message();
  EXPECT_EQ(*base, 0x8001u);
}

TEST_F(FrontendTest, RawMalformedMessageIsRefusedAndSessionGoesOn) {
  start_endpoint(false);
  auto fe = Frontend::connect_and_start(config());
  ASSERT_TRUE(fe) << fe.message();
  Frontend& f = **fe;
  // SET_VRING_NUM with a 4-byte payload (needs 8), asking for an ack.
  ASSERT_TRUE(
      f.send_raw(uint32_t(Request::SET_VRING_NUM), {1, 0, 0, 0}, {}, kVersion | kFlagNeedReply));
  auto r = f.recv_reply();
  ASSERT_TRUE(r) << r.message();
  EXPECT_EQ(r->hdr.request, uint32_t(Request::SET_VRING_NUM));
  EXPECT_EQ(r->hdr.flags, kVersion | kFlagReply);
  ASSERT_EQ(r->hdr.size, 8u);
  EXPECT_NE(r->u64(), 0u);  // failure
  // The request helper turns a refusal into an error: ring 7 does not exist.
  VringState bad{7, 64};
  auto refused = f.request(Request::SET_VRING_NUM, &bad, sizeof(bad));
  EXPECT_FALSE(refused);
  // Still the same session: a GET answers.
  auto base = f.get_vring_base(0);
  ASSERT_TRUE(base) << base.message();
  EXPECT_EQ(*base, 0u);
  EXPECT_EQ(endpoint_->counters().connections.get(), 1u);

  // A header that lies about its size beyond the limit ends the session.
  int resets = backend_.resets;
  ASSERT_TRUE(f.send_raw(uint32_t(Request::GET_FEATURES), {}, {}, kVersion, 1u << 20));
  EXPECT_TRUE(eventually([&] { return backend_.resets > resets; }));
  auto gone = f.recv_reply(2000);
  EXPECT_FALSE(gone);  // closed, no reply
}

TEST_F(FrontendTest, ListensForAClientModeBackEnd) {
  start_endpoint(true);  // the endpoint connects to us, retrying every 20 ms
  auto fe = Frontend::connect_and_start(config(true));
  ASSERT_TRUE(fe) << fe.message();
  // Endpoint state belongs to the loop thread; its counters and the backend (under
  // its mutex) may be read from here (endpoint_->connected() raced, found by TSan).
  EXPECT_TRUE(eventually([&] { return endpoint_->counters().connections.get() == 1; }));
  EXPECT_TRUE(eventually([&] {
    std::lock_guard lk(backend_.mu);
    return backend_.vq[0].started() && backend_.vq[1].started();
  }));
}

TEST_F(FrontendTest, RequiredFeatureMissingIsAnError) {
  start_endpoint(false);
  FrontendConfig c = config();
  c.required_features |= bit(VIRTIO_F_ACCESS_PLATFORM);
  auto fe = Frontend::connect_and_start(c);
  ASSERT_FALSE(fe);
  EXPECT_NE(fe.message().find("required"), std::string::npos) << fe.message();
}

TEST_F(FrontendTest, AllocatorStaysInsideTheMemory) {
  start_endpoint(false);
  auto fe = Frontend::create(config());
  ASSERT_TRUE(fe) << fe.message();
  Frontend& f = **fe;
  auto a = f.alloc(10, 4096);
  ASSERT_TRUE(a);
  EXPECT_EQ(a->gpa % 4096, 0u);
  EXPECT_EQ(f.host(a->gpa, 10), a->host);
  EXPECT_EQ(f.host(f.mem_size() - 1, 2), nullptr);
  EXPECT_EQ(f.host(UINT64_MAX, 2), nullptr);
  EXPECT_FALSE(f.alloc(f.mem_size()));
  auto rest = f.alloc(f.mem_free(), 1);
  ASSERT_TRUE(rest);
  EXPECT_EQ(f.mem_free(), 0u);
  EXPECT_FALSE(f.alloc(1, 1));
}

}  // namespace
}  // namespace vnet::vhost_user
