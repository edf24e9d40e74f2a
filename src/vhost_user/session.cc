// Session: message handlers of the vhost-user back end (docs/interop/vhost-user.rst
// in qemu/qemu; section names are quoted in the comments).
#include "vhost_user/session.h"

#include <fcntl.h>
#include <linux/virtio_config.h>
#include <linux/virtio_ring.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "common/log.h"

namespace vnet::vhost_user {

namespace {
// virtio 1.2 section 2.7 (Split Virtqueues): "Queue Size ... a power of 2 ... The
// maximum Queue Size value is 32768".
constexpr uint32_t kMaxRingSize = 32768;
}  // namespace

Session::Session(UniqueFd sock, Backend& backend, std::string name, PortLogLimits* logs)
    : sock_(std::move(sock)),
      backend_(backend),
      name_(std::move(name)),
      own_logs_(logs ? nullptr : std::make_unique<PortLogLimits>()),
      logs_(logs ? *logs : *own_logs_) {
  int fl = fcntl(sock_.get(), F_GETFL);
  if (fl >= 0) fcntl(sock_.get(), F_SETFL, fl | O_NONBLOCK);
  uint64_t rings = 2 * uint64_t(backend_.max_queue_pairs());
  rings_.resize(std::min<uint64_t>(rings, kMaxRings));
}

Session::~Session() {
  backend_.reset();
  VNET_LOG_RL(logs_.session, spdlog::level::info, "vhost-user {}: session ended", name_);
}

Status Session::on_readable() {
  Message m;
  auto r = reader_.read(sock_.get(), m);
  if (!r) {
    counters_.messages.add();
    counters_.bad_messages.add();
    VNET_LOG_RL(logs_.bad_input, spdlog::level::warn, "vhost-user {}: bad message: {}", name_,
                r.message());
    return r.status();
  }
  switch (*r) {
    case MessageReader::Outcome::kNone:
      return Status::ok();
    case MessageReader::Outcome::kClosed:
      peer_closed_ = true;
      VNET_LOG_RL(logs_.session, spdlog::level::info,
                  "vhost-user {}: front end closed the connection", name_);
      return Status::error("peer closed the connection");
    case MessageReader::Outcome::kMessage:
      break;
  }
  counters_.messages.add();
  return dispatch(m);
}

Status Session::dispatch(Message& m) {
  const RequestInfo* info = request_info(m.hdr.request);
  if (!info) return Status::errorf("unknown request code {}", m.hdr.request);  // reader checks
  spdlog::debug("vhost-user {}: {} size {} fds {}", name_, info->name, m.hdr.size, m.fds.size());
  Reply reply;
  Status st = validate(m);
  if (st) st = handle(m, reply);
  // "REPLY_ACK": with the feature negotiated and need_reply set, a request that has
  // no reply of its own is answered with a u64: 0 success, non-zero failure.
  bool ack = !info->has_reply && m.need_reply() && reply_ack();
  if (!st) {
    counters_.bad_messages.add();
    VNET_LOG_RL(logs_.bad_input, spdlog::level::warn, "vhost-user {}: {} refused: {}", name_,
                info->name, st.message());
    if (!ack) return st;
    uint64_t failure = 1;
    Status sent = send_reply(sock_.get(), m.hdr.request, &failure, sizeof(failure));
    // An fd of the wrong kind ends the session even when the front end asked for an ack.
    if (fatal_) return Status::errorf("{} refused: {}", info->name, st.message());
    return sent;
  }
  if (info->has_reply) return send_reply(sock_.get(), m.hdr.request, reply.data, reply.size);
  if (ack) {
    uint64_t success = 0;
    return send_reply(sock_.get(), m.hdr.request, &success, sizeof(success));
  }
  return Status::ok();
}

Status Session::handle(Message& m, Reply& reply) {
  switch (m.request()) {
    case Request::GET_FEATURES:
      reply.set<uint64_t>(backend_.device_features());
      return Status::ok();
    case Request::SET_FEATURES:
      return on_set_features(m.u64());
    case Request::GET_PROTOCOL_FEATURES:
      reply.set<uint64_t>(backend_.protocol_features());
      return Status::ok();
    case Request::SET_PROTOCOL_FEATURES:
      return on_set_protocol_features(m.u64());
    case Request::SET_OWNER:
      owner_ = true;
      return Status::ok();
    case Request::RESET_OWNER:
    case Request::RESET_DEVICE:
      VNET_LOG_RL(logs_.session, spdlog::level::info, "vhost-user {}: {}", name_,
                  request_name(m.hdr.request));
      reset_device_state();
      if (m.request() == Request::RESET_OWNER) owner_ = false;
      return Status::ok();
    case Request::SET_MEM_TABLE:
      return on_set_mem_table(m);
    case Request::GET_MAX_MEM_SLOTS:
      reply.set<uint64_t>(kMaxMemSlots);
      return Status::ok();
    case Request::ADD_MEM_REG:
      return on_add_mem_reg(m);
    case Request::REM_MEM_REG:
      return on_rem_mem_reg(m);
    case Request::SET_VRING_NUM:
      return on_set_vring_num(m.as<VringState>());
    case Request::SET_VRING_ADDR:
      return on_set_vring_addr(m.as<VringAddr>());
    case Request::SET_VRING_BASE:
      return on_set_vring_base(m.as<VringState>());
    case Request::GET_VRING_BASE: {
      auto s = m.as<VringState>();
      auto idx = on_get_vring_base(s);
      if (!idx) return idx.status();
      // Packed rings: bits 16-31 carry the used side's position and wrap counter, equal to
      // the avail side's (every chain taken was completed, in order).
      const bool packed = acked_features_ & (1ULL << VIRTIO_F_RING_PACKED);
      reply.set(VringState{s.index, packed ? uint32_t(*idx) | (uint32_t(*idx) << 16) : *idx});
      return Status::ok();
    }
    case Request::SET_VRING_KICK:
      return on_set_vring_kick(m);
    case Request::SET_VRING_CALL:
      return on_set_vring_call(m);
    case Request::SET_VRING_ERR:
      return on_set_vring_err(m);
    case Request::SET_VRING_ENABLE:
      return on_set_vring_enable(m.as<VringState>());
    case Request::GET_QUEUE_NUM:
      reply.set<uint64_t>(backend_.max_queue_pairs());
      return Status::ok();
    case Request::SET_STATUS: {
      // "SET_STATUS": the virtio device status, a u8 in a u64.
      uint64_t v = m.u64();
      if (v > 0xff) return Status::errorf("device status {:#x} does not fit in 8 bits", v);
      status_ = uint8_t(v);
      return Status::ok();
    }
    case Request::GET_STATUS:
      reply.set<uint64_t>(status_);
      return Status::ok();
    case Request::NET_SET_MTU: {
      uint64_t v = m.u64();
      if (v > UINT32_MAX) return Status::errorf("MTU {} out of range", v);
      Status st = backend_.set_mtu(uint32_t(v));
      if (st) mtu_ = uint32_t(v);
      return st;
    }
    case Request::SET_LOG_BASE: {
      Status st = on_set_log_base(m);
      // "SET_LOG_BASE": with LOG_SHMFD the front end waits for a reply without payload
      // once the log is mapped (QEMU reads one; a failure ends the session, so that the
      // migration fails instead of going on without marks).
      if (st) reply.present = true;
      return st;
    }
    case Request::SET_LOG_FD:
      return Status::errorf("{}: not supported (the log comes with SET_LOG_BASE)",
                            request_name(m.hdr.request));
    case Request::SEND_RARP: {
      if (!(protocol_features_ & protocol::kRarp))
        return Status::error("SEND_RARP without the RARP protocol feature");
      // "SEND_RARP": the guest's MAC in the first 6 bytes of the u64.
      uint8_t mac[6];
      std::memcpy(mac, m.payload.data(), sizeof(mac));
      return backend_.send_rarp(mac);
    }
    case Request::GET_CONFIG:
    case Request::SET_CONFIG:
      return Status::errorf("{}: config space access (CONFIG) is not offered",
                            request_name(m.hdr.request));
    default:
      return Status::errorf("{} is not supported", request_name(m.hdr.request));
  }
}

Status Session::on_set_features(uint64_t f) {
  uint64_t offered = backend_.device_features();
  if (f & ~offered)
    return Status::errorf("features {:#x} include bits {:#x} that were not offered", f,
                          f & ~offered);
  Status st = backend_.set_features(f);
  if (!st) return st;
  acked_features_ = f;
  VNET_LOG_RL(logs_.session, spdlog::level::info, "vhost-user {}: negotiated features {:#x}", name_,
              f);
  return Status::ok();
}

Status Session::on_set_protocol_features(uint64_t f) {
  uint64_t offered = backend_.protocol_features();
  if (f & ~offered)
    return Status::errorf("protocol features {:#x} include bits {:#x} that were not offered", f,
                          f & ~offered);
  protocol_features_ = f;
  VNET_LOG_RL(logs_.session, spdlog::level::info,
              "vhost-user {}: negotiated protocol features {:#x}", name_, f);
  return Status::ok();
}

Status Session::install_memory(memory::GuestMemory::RegionList regions) {
  size_t n = regions.size();
  auto gm = memory::GuestMemory::create(std::move(regions));
  if (!gm) return gm.status();
  // The old table goes when the backend and we drop it: its regions are unmapped
  // unless the new table shares them.
  mem_ = std::move(*gm);
  backend_.set_memory(mem_);
  // The fds of regions no longer in the table go with them.
  std::erase_if(region_fds_, [&](const auto& rf) {
    const auto& list = mem_->regions();
    return std::none_of(list.begin(), list.end(),
                        [&](const auto& r) { return r.get() == rf.first; });
  });
  VNET_LOG_RL(logs_.session, spdlog::level::info,
              "vhost-user {}: memory table of {} regions ({} sealed against shrinking)", name_, n,
              sealed_regions_);
  for (uint32_t i = 0; i < rings_.size(); ++i) {
    if (rings_[i].started || !rings_[i].kick_set) continue;
    Status st = try_start(i);
    if (!st)
      VNET_LOG_RL(logs_.bad_input, spdlog::level::warn, "vhost-user {}: {}", name_, st.message());
  }
  return Status::ok();
}

Result<FrontendFd> Session::adopt_fd(Message& m, size_t i, FdKind kind) {
  // Every fd of a message passes here once: the kind checked, or the session ends.
  UniqueFd fd = i < m.fds.size() ? std::move(m.fds[i]) : UniqueFd();
  auto f = FrontendFd::adopt(std::move(fd), kind);
  if (!f) {
    fatal_ = true;
    counters_.bad_fds.add();
  }
  return f;
}

Result<std::shared_ptr<memory::MappedRegion>> Session::map_region(Message& m, size_t i,
                                                                  const MemoryRegion& r) {
  auto fd = adopt_fd(m, i, FdKind::kMemory);
  if (!fd) return fd.status();
  auto mr = memory::MappedRegion::map(
      {r.guest_phys_addr, r.memory_size, r.userspace_addr, r.mmap_offset}, fd->map_fd());
  if (mr && fd->sealed_against_shrink()) ++sealed_regions_;
  if (mr) region_fds_.emplace_back(mr->get(), std::move(*fd));  // for save()
  return mr;
}

Status Session::on_set_mem_table(Message& m) {
  auto th = m.as<MemoryTableHeader>();  // count, size and fds checked by validate()
  memory::GuestMemory::RegionList list;
  sealed_regions_ = 0;
  region_refs_.clear();
  for (uint32_t i = 0; i < th.nregions; ++i) {
    MemoryRegion r;
    std::memcpy(&r, m.payload.data() + sizeof(MemoryTableHeader) + i * sizeof(MemoryRegion),
                sizeof(r));
    auto mr = map_region(m, i, r);
    if (!mr) return Status::errorf("region {}: {}", i, mr.message());
    list.push_back(std::move(*mr));
  }
  return install_memory(std::move(list));
}

std::vector<Session::RegionRef>::iterator Session::find_region_ref(const MemoryRegion& r) {
  return std::find_if(region_refs_.begin(), region_refs_.end(), [&](const RegionRef& x) {
    return x.guest_phys_addr == r.guest_phys_addr && x.memory_size == r.memory_size &&
           x.userspace_addr == r.userspace_addr;
  });
}

Status Session::on_add_mem_reg(Message& m) {
  auto r = m.as<SingleMemoryRegion>().region;
  memory::GuestMemory::RegionList list;
  if (mem_) list = mem_->regions();
  auto same = [&](const auto& mr) {
    const auto& d = mr->desc();
    return d.guest_phys_addr == r.guest_phys_addr && d.memory_size == r.memory_size &&
           d.userspace_addr == r.userspace_addr && d.mmap_offset == r.mmap_offset;
  };
  if (std::any_of(list.begin(), list.end(), same)) {
    // The same region again (one vhost device per queue pair): one more reference; the
    // fd that came with it is closed unused (with m).
    auto ref = find_region_ref(r);
    if (ref == region_refs_.end()) {
      region_refs_.push_back({r.guest_phys_addr, r.memory_size, r.userspace_addr, 2});
    } else {
      if (ref->refs >= kMaxRegionRefs)
        return Status::errorf("region at gpa {:#x} added {} times, the maximum", r.guest_phys_addr,
                              ref->refs);
      ++ref->refs;
    }
    return Status::ok();
  }
  if (list.size() >= kMaxMemSlots)
    return Status::errorf("already {} regions, the maximum", list.size());
  auto mr = map_region(m, 0, r);
  if (!mr) return mr.status();
  list.push_back(std::move(*mr));
  return install_memory(std::move(list));
}

Status Session::on_rem_mem_reg(const Message& m) {
  // "REM_MEM_REG": the region is identified by guest address, user address and
  // size; the mmap offset is ignored. A passed fd is closed unused (with m).
  auto r = m.as<SingleMemoryRegion>().region;
  memory::GuestMemory::RegionList list;
  if (mem_) list = mem_->regions();
  auto it = std::find_if(list.begin(), list.end(), [&](const auto& mr) {
    const auto& d = mr->desc();
    return d.guest_phys_addr == r.guest_phys_addr && d.memory_size == r.memory_size &&
           d.userspace_addr == r.userspace_addr;
  });
  if (it == list.end())
    return Status::errorf("no region at gpa {:#x} size {:#x} uva {:#x}", r.guest_phys_addr,
                          r.memory_size, r.userspace_addr);
  auto ref = find_region_ref(r);
  if (ref != region_refs_.end()) {  // added more than once: drop one reference
    if (--ref->refs <= 1) region_refs_.erase(ref);
    return Status::ok();
  }
  list.erase(it);
  return install_memory(std::move(list));
}

Status Session::on_set_log_base(Message& m) {
  if (!(protocol_features_ & protocol::kLogShmfd))
    return Status::error("SET_LOG_BASE without the LOG_SHMFD protocol feature");
  // "Log description": mmap_size and mmap_offset of the fd that comes with it.
  uint64_t v[2];
  std::memcpy(v, m.payload.data(), sizeof(v));
  auto fd = adopt_fd(m, 0, FdKind::kMemory);
  if (!fd) return Status::errorf("log: {}", fd.message());
  auto log = memory::DirtyLog::map(fd->map_fd(), v[0], v[1]);
  if (!log) return log.status();
  Status st = backend_.set_log(*log);
  if (!st) return st;
  log_ = std::move(*log);
  log_fd_ = std::move(*fd);
  log_size_ = v[0];
  log_offset_ = v[1];
  VNET_LOG_RL(logs_.session, spdlog::level::info,
              "vhost-user {}: dirty log of {} bytes mapped (guest memory up to {} MiB)", name_,
              v[0], (v[0] * 8) >> (20 - memory::DirtyLog::kPageShift));
  return Status::ok();
}

Status Session::check_ring(uint32_t index) const {
  // Every index is checked at full width against the rings of the device (two per
  // queue pair, GET_QUEUE_NUM).
  if (index >= rings_.size())
    return Status::errorf("vring index {} out of range (device has {} rings)", index,
                          rings_.size());
  return Status::ok();
}

Status Session::on_set_vring_num(const VringState& s) {
  if (Status st = check_ring(s.index); !st) return st;
  if (s.num == 0 || s.num > kMaxRingSize || (s.num & (s.num - 1)) != 0)
    return Status::errorf("ring {} size {} invalid: a power of 2 in 1..{} (virtio 1.2 2.7)",
                          s.index, s.num, kMaxRingSize);
  Ring& r = rings_[s.index];
  bool changed = !r.has_num || r.num != s.num;
  r.num = s.num;
  r.has_num = true;
  if (r.started) return changed ? restart(s.index) : Status::ok();
  return try_start(s.index);
}

Status Session::on_set_vring_addr(const VringAddr& a) {
  if (Status st = check_ring(a.index); !st) return st;
  // "SET_VRING_ADDR": front-end virtual addresses; flags bit 0 (VHOST_VRING_F_LOG)
  // asks for used ring logging at log_guest_addr (done while VHOST_F_LOG_ALL is on). A
  // change of either restarts the ring at the position it reached.
  Ring& r = rings_[a.index];
  bool changed = !r.has_addr || r.addr.desc_user_addr != a.desc_user_addr ||
                 r.addr.avail_user_addr != a.avail_user_addr ||
                 r.addr.used_user_addr != a.used_user_addr || r.addr.flags != a.flags ||
                 r.addr.log_guest_addr != a.log_guest_addr;
  r.addr = a;
  r.has_addr = true;
  if (r.started) return changed ? restart(a.index) : Status::ok();
  return try_start(a.index);
}

Status Session::on_set_vring_base(const VringState& s) {
  if (Status st = check_ring(s.index); !st) return st;
  // "SET_VRING_BASE": split rings, a 16-bit avail index; packed rings
  // (VIRTIO_F_RING_PACKED), bits 0-14 the next descriptor position and bit 15 the
  // driver wrap counter (the queue checks the position against its size at start), and
  // in bits 16-31 the same for the used side, which QEMU sends. vnetd completes chains
  // in the order it took them and resumes the used side where the avail side is (what
  // QEMU itself does after a back end is lost: last_avail = used).
  const bool packed = acked_features_ & (1ULL << VIRTIO_F_RING_PACKED);
  if (s.num > 0xffff && !packed)
    return Status::errorf("ring {} base {:#x} is not a 16-bit index", s.index, s.num);
  Ring& r = rings_[s.index];
  if (r.started) {
    backend_.stop_queue(s.index);
    r.started = false;
  }
  r.base = uint16_t(s.num);
  return try_start(s.index);
}

Result<uint16_t> Session::on_get_vring_base(const VringState& s) {
  if (Status st = check_ring(s.index); !st) return st;
  Ring& r = rings_[s.index];
  // "GET_VRING_BASE": stop the ring and return its index; it stays stopped until
  // the next SET_VRING_KICK.
  uint16_t idx = backend_.stop_queue(s.index);
  if (!r.started) idx = r.base;
  r.started = false;
  r.base = idx;
  r.kick.reset();
  r.kick_set = false;
  VNET_LOG_RL(logs_.session, spdlog::level::info, "vhost-user {}: ring {} stopped at {}", name_,
              s.index, idx);
  return idx;
}

Status Session::on_set_vring_kick(Message& m) {
  uint32_t index = uint32_t(m.u64() & kVringIndexMask);
  if (Status st = check_ring(index); !st) return st;
  Ring& r = rings_[index];
  if (r.started) {
    r.base = backend_.stop_queue(index);
    r.started = false;
  }
  auto kick = adopt_fd(m, 0, FdKind::kEventFd);  // none with the invalid-FD flag: polling
  if (!kick) return Status::errorf("ring {} kick: {}", index, kick.message());
  r.kick = std::move(*kick);
  r.kick_set = true;
  return try_start(index);
}

Status Session::on_set_vring_call(Message& m) {
  uint32_t index = uint32_t(m.u64() & kVringIndexMask);
  if (Status st = check_ring(index); !st) return st;
  auto call = adopt_fd(m, 0, FdKind::kEventFd);
  if (!call) return Status::errorf("ring {} call: {}", index, call.message());
  FrontendFd copy;
  if (call->valid()) {
    auto d = call->dup();
    if (!d) return Status::errorf("ring {} call: {}", index, d.message());
    copy = std::move(*d);
  }
  if (Status st = backend_.set_call(index, std::move(*call)); !st) return st;
  rings_[index].call = std::move(copy);
  rings_[index].call_set = true;
  return Status::ok();
}

Status Session::on_set_vring_err(Message& m) {
  uint32_t index = uint32_t(m.u64() & kVringIndexMask);
  if (Status st = check_ring(index); !st) return st;
  auto err = adopt_fd(m, 0, FdKind::kEventFd);
  if (!err) return Status::errorf("ring {} err: {}", index, err.message());
  rings_[index].err = std::move(*err);  // kept (never signalled); the old one is closed
  return Status::ok();
}

Status Session::on_set_vring_enable(const VringState& s) {
  if (Status st = check_ring(s.index); !st) return st;
  if (s.num > 1) return Status::errorf("ring {} enable value {} is not 0 or 1", s.index, s.num);
  rings_[s.index].enabled = s.num;
  backend_.set_enabled(s.index, s.num);
  VNET_LOG_RL(logs_.session, spdlog::level::info, "vhost-user {}: ring {} {}", name_, s.index,
              s.num ? "enabled" : "disabled");
  return Status::ok();
}

Status Session::try_start(uint32_t index) {
  Ring& r = rings_[index];
  if (r.started || !r.kick_set) return Status::ok();
  if (!r.has_num || !r.has_addr || !mem_) {
    VNET_LOG_RL(logs_.session, spdlog::level::info,
                "vhost-user {}: ring {} kicked before its {} known; it starts then", name_, index,
                !mem_        ? "memory table is"
                : !r.has_num ? "size is"
                             : "addresses are");
    return Status::ok();
  }
  virtio::QueueConfig cfg;
  cfg.size = uint16_t(r.num);
  cfg.desc_addr = r.addr.desc_user_addr;
  cfg.avail_addr = r.addr.avail_user_addr;
  cfg.used_addr = r.addr.used_user_addr;
  cfg.avail_base = r.base;
  cfg.event_idx = acked_features_ & (1ULL << VIRTIO_RING_F_EVENT_IDX);
  cfg.indirect = acked_features_ & (1ULL << VIRTIO_RING_F_INDIRECT_DESC);
  cfg.packed = acked_features_ & (1ULL << VIRTIO_F_RING_PACKED);
  cfg.in_order = acked_features_ & (1ULL << VIRTIO_F_IN_ORDER);
  cfg.log_used = r.addr.flags & kVringFLog;
  cfg.log_guest_addr = r.addr.log_guest_addr;
  auto kick = r.kick.dup();
  if (!kick) return Status::errorf("ring {}: the kick fd: {}", index, kick.message());
  Status st = backend_.start_queue(index, cfg, std::move(*kick));
  if (!st) return Status::errorf("ring {} not started: {}", index, st.message());
  r.started = true;
  // "Ring states": without VHOST_USER_F_PROTOCOL_FEATURES a ring starts enabled;
  // with it, it waits for SET_VRING_ENABLE.
  if (!(acked_features_ & kFeatureProtocolFeatures)) {
    r.enabled = true;
    backend_.set_enabled(index, true);
  }
  VNET_LOG_RL(logs_.session, spdlog::level::info,
              "vhost-user {}: ring {} started (size {}, base {}, {})", name_, index, cfg.size,
              cfg.avail_base, r.kick ? "kick fd" : "polling");
  return Status::ok();
}

Status Session::restart(uint32_t index) {
  Ring& r = rings_[index];
  if (r.started) {
    r.base = backend_.stop_queue(index);
    r.started = false;
  }
  return try_start(index);
}

void Session::reset_device_state() {
  backend_.reset();
  for (auto& r : rings_) r = Ring{};  // closes kick and err fds
  mem_.reset();
  log_.reset();
  log_fd_.reset();
  log_size_ = log_offset_ = 0;
  region_fds_.clear();
  mtu_ = 0;
  region_refs_.clear();
  acked_features_ = 0;
  status_ = 0;
}

// ---- hot upgrade ----

void Session::suspend(bool odd) {
  for (uint32_t i = odd ? 1 : 0; i < rings_.size(); i += 2) {
    Ring& r = rings_[i];
    if (!r.started) continue;
    r.base = backend_.stop_queue(i);
    r.started = false;
    r.suspended = true;
  }
}

void Session::resume() {
  for (uint32_t i = 0; i < rings_.size(); ++i) {
    Ring& r = rings_[i];
    if (!r.suspended) continue;
    r.suspended = false;
    Status st = try_start(i);
    if (st && r.enabled) backend_.set_enabled(i, true);
    if (!st)
      VNET_LOG_RL(logs_.session, spdlog::level::warn, "vhost-user {}: ring {} not resumed: {}",
                  name_, i, st.message());
  }
}

namespace {
Message make_message(Request req, const void* payload, uint32_t size) {
  Message m;
  m.hdr.request = static_cast<uint32_t>(req);
  m.hdr.flags = 1;  // version 1
  m.hdr.size = size;
  m.payload.assign(static_cast<const uint8_t*>(payload),
                   static_cast<const uint8_t*>(payload) + size);
  return m;
}
template <typename T>
Message make_message(Request req, const T& v) {
  return make_message(req, &v, sizeof(T));
}
Status add_fd(Message& m, const FrontendFd& fd) {
  auto d = fd.dup_for_handover();
  if (!d) return d.status();
  m.fds.push_back(std::move(*d));
  return Status::ok();
}
}  // namespace

Result<Session::Saved> Session::save() const {
  Saved s;
  auto& out = s.setup;
  if (owner_) out.push_back(make_message(Request::SET_OWNER, nullptr, 0));
  out.push_back(make_message(Request::SET_PROTOCOL_FEATURES, protocol_features_));
  out.push_back(make_message(Request::SET_FEATURES, acked_features_));
  if (mem_) {
    for (const auto& r : mem_->regions()) {
      auto fd = std::find_if(region_fds_.begin(), region_fds_.end(),
                             [&](const auto& rf) { return rf.first == r.get(); });
      if (fd == region_fds_.end())
        return Status::errorf("region at gpa {:#x} has no fd", r->desc().guest_phys_addr);
      SingleMemoryRegion smr;
      smr.region = {r->desc().guest_phys_addr, r->desc().memory_size, r->desc().userspace_addr,
                    r->desc().mmap_offset};
      uint32_t refs = 1;
      for (const auto& ref : region_refs_)
        if (ref.guest_phys_addr == smr.region.guest_phys_addr &&
            ref.memory_size == smr.region.memory_size &&
            ref.userspace_addr == smr.region.userspace_addr)
          refs = ref.refs;
      for (uint32_t k = 0; k < refs; ++k) {
        Message m = make_message(Request::ADD_MEM_REG, smr);
        if (Status st = add_fd(m, fd->second); !st) return st;
        out.push_back(std::move(m));
      }
    }
  }
  if (mtu_) out.push_back(make_message(Request::NET_SET_MTU, uint64_t(mtu_)));
  if (log_fd_) {
    const uint64_t v[2] = {log_size_, log_offset_};
    Message m = make_message(Request::SET_LOG_BASE, v, sizeof(v));
    if (Status st = add_fd(m, log_fd_); !st) return st;
    out.push_back(std::move(m));
  }
  for (uint32_t i = 0; i < rings_.size(); ++i) {
    const Ring& r = rings_[i];
    if (r.started) return Status::errorf("ring {} is running (not suspended)", i);
    if (r.has_num) out.push_back(make_message(Request::SET_VRING_NUM, VringState{i, r.num}));
    if (r.has_addr) {
      VringAddr a = r.addr;
      a.index = i;
      out.push_back(make_message(Request::SET_VRING_ADDR, a));
    }
    if (r.has_num || r.has_addr || r.kick_set)
      out.push_back(make_message(Request::SET_VRING_BASE, VringState{i, r.base}));
    auto fd_message = [&](Request req, const FrontendFd& fd, std::vector<Message>& to) {
      uint64_t v = i | (fd ? 0 : kVringNoFdFlag);
      Message m = make_message(req, v);
      if (fd)
        if (Status st = add_fd(m, fd); !st) return st;
      to.push_back(std::move(m));
      return Status::ok();
    };
    if (r.call_set)
      if (Status st = fd_message(Request::SET_VRING_CALL, r.call, out); !st) return st;
    if (r.err)
      if (Status st = fd_message(Request::SET_VRING_ERR, r.err, out); !st) return st;
    auto& start = (i & 1) ? s.start_tx : s.start_rx;
    if (r.kick_set)
      if (Status st = fd_message(Request::SET_VRING_KICK, r.kick, start); !st) return st;
    if ((acked_features_ & kFeatureProtocolFeatures) && r.enabled)
      start.push_back(make_message(Request::SET_VRING_ENABLE, VringState{i, 1}));
  }
  if (status_) out.push_back(make_message(Request::SET_STATUS, uint64_t(status_)));
  return s;
}

Status Session::restore(std::vector<Message>& msgs) {
  for (auto& m : msgs) {
    // Only what save() makes: requests that set state.
    switch (m.request()) {
      case Request::SET_OWNER:
      case Request::SET_PROTOCOL_FEATURES:
      case Request::SET_FEATURES:
      case Request::ADD_MEM_REG:
      case Request::NET_SET_MTU:
      case Request::SET_LOG_BASE:
      case Request::SET_VRING_NUM:
      case Request::SET_VRING_ADDR:
      case Request::SET_VRING_BASE:
      case Request::SET_VRING_CALL:
      case Request::SET_VRING_ERR:
      case Request::SET_VRING_KICK:
      case Request::SET_VRING_ENABLE:
      case Request::SET_STATUS:
        break;
      default:
        return Status::errorf("{} is not session state", request_name(m.hdr.request));
    }
    Reply reply;
    Status st = validate(m);
    if (st) st = handle(m, reply);
    if (!st || fatal_)
      return Status::errorf("{}: {}", request_name(m.hdr.request),
                            st ? "an fd of the wrong kind" : st.message());
  }
  return Status::ok();
}

}  // namespace vnet::vhost_user
