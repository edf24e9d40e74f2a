// pcapng block writer and reader (see pcapng.h).
#include "net/pcapng.h"

#include <cstring>

namespace vnet::net::pcapng {

namespace {
// Option codes (section 3.5, 4.2, 4.3, 4.6).
constexpr uint16_t kOptEnd = 0, kOptComment = 1;
constexpr uint16_t kShbUserAppl = 4;
constexpr uint16_t kIfName = 2, kIfTsresol = 9;
constexpr uint16_t kEpbFlags = 2;
constexpr uint16_t kIsbStart = 2, kIsbEnd = 3, kIsbIfrecv = 4, kIsbIfdrop = 5, kIsbFilteraccept = 6,
                   kIsbOsdrop = 7, kIsbUsrdeliv = 8;

size_t pad4(size_t n) {
  return (n + 3) & ~size_t(3);
}
template <typename T>
void put(std::string& out, T v) {
  out.append(reinterpret_cast<const char*>(&v), sizeof(v));
}
template <typename T>
T get(std::string_view in, size_t off) {
  T v{};
  if (off + sizeof(T) <= in.size()) std::memcpy(&v, in.data() + off, sizeof(T));
  return v;
}
void put_padded(std::string& out, std::string_view bytes) {
  out.append(bytes);
  out.append(pad4(bytes.size()) - bytes.size(), '\0');
}
void put_option(std::string& out, uint16_t code, std::string_view value) {
  put<uint16_t>(out, code);
  put<uint16_t>(out, uint16_t(value.size()));
  put_padded(out, value);
}
template <typename T>
void put_option_value(std::string& out, uint16_t code, T v) {
  put_option(out, code, std::string_view(reinterpret_cast<const char*>(&v), sizeof(v)));
}
// A 64-bit timestamp as the two 32-bit words of a packet or statistics block.
void put_timestamp(std::string& out, uint64_t ts) {
  put<uint32_t>(out, uint32_t(ts >> 32));
  put<uint32_t>(out, uint32_t(ts));
}
// Starts a block: type and a placeholder length; finish() writes both lengths.
size_t begin(std::string& out, uint32_t type) {
  const size_t at = out.size();
  put<uint32_t>(out, type);
  put<uint32_t>(out, 0);
  return at;
}
void finish(std::string& out, size_t at) {
  const uint32_t total = uint32_t(out.size() - at + 4);
  std::memcpy(out.data() + at + 4, &total, 4);
  put<uint32_t>(out, total);
}
void end_options(std::string& out) {
  put<uint16_t>(out, kOptEnd);
  put<uint16_t>(out, 0);
}
}  // namespace

void append_section_header(std::string& out, std::string_view user_appl) {
  const size_t at = begin(out, kSectionHeader);
  put<uint32_t>(out, kByteOrderMagic);
  put<uint16_t>(out, 1);  // major
  put<uint16_t>(out, 0);  // minor
  put<int64_t>(out, -1);  // section length: not known
  if (!user_appl.empty()) put_option(out, kShbUserAppl, user_appl);
  end_options(out);
  finish(out, at);
}

void append_interface(std::string& out, uint16_t link_type, uint32_t snaplen,
                      std::string_view if_name) {
  const size_t at = begin(out, kInterfaceDescription);
  put<uint16_t>(out, link_type);
  put<uint16_t>(out, 0);  // reserved
  put<uint32_t>(out, snaplen);
  if (!if_name.empty()) put_option(out, kIfName, if_name);
  put_option_value<uint8_t>(out, kIfTsresol, 9);  // 10^-9 s
  end_options(out);
  finish(out, at);
}

void append_packet(std::string& out, uint32_t if_id, uint64_t ts_ns, std::string_view data,
                   uint32_t orig_len, uint32_t flags, std::string_view comment) {
  const size_t at = begin(out, kEnhancedPacket);
  put<uint32_t>(out, if_id);
  put_timestamp(out, ts_ns);
  put<uint32_t>(out, uint32_t(data.size()));
  put<uint32_t>(out, orig_len);
  put_padded(out, data);
  if (flags || !comment.empty()) {
    if (flags) put_option_value<uint32_t>(out, kEpbFlags, flags);
    if (!comment.empty()) put_option(out, kOptComment, comment.substr(0, 0xffff));
    end_options(out);
  }
  finish(out, at);
}

void append_statistics(std::string& out, uint32_t if_id, uint64_t ts_ns, const Statistics& s) {
  const size_t at = begin(out, kInterfaceStatistics);
  put<uint32_t>(out, if_id);
  put_timestamp(out, ts_ns);
  auto ts_option = [&](uint16_t code, uint64_t ts) {
    put<uint16_t>(out, code);
    put<uint16_t>(out, 8);
    put_timestamp(out, ts);
  };
  ts_option(kIsbStart, s.start_ns);
  ts_option(kIsbEnd, s.end_ns);
  put_option_value<uint64_t>(out, kIsbIfrecv, s.ifrecv);
  put_option_value<uint64_t>(out, kIsbIfdrop, s.ifdrop);
  put_option_value<uint64_t>(out, kIsbFilteraccept, s.filteraccept);
  put_option_value<uint64_t>(out, kIsbOsdrop, s.osdrop);
  put_option_value<uint64_t>(out, kIsbUsrdeliv, s.usrdeliv);
  end_options(out);
  finish(out, at);
}

std::optional<BlockView> next_block(std::string_view in, bool* bad) {
  *bad = false;
  if (in.size() < 12) return std::nullopt;
  const uint32_t len = get<uint32_t>(in, 4);
  if (len < 12 || len % 4 != 0) {
    *bad = true;
    return std::nullopt;
  }
  if (in.size() < len) return std::nullopt;
  return BlockView{get<uint32_t>(in, 0), in.substr(0, len)};
}

namespace {
// Calls fn(code, value) for each option from `off` to the block's trailing length.
template <typename Fn>
void for_each_option(std::string_view b, size_t off, Fn fn) {
  const size_t end = b.size() - 4;
  while (off + 4 <= end) {
    const uint16_t code = get<uint16_t>(b, off), len = get<uint16_t>(b, off + 2);
    if (code == kOptEnd || off + 4 + len > end) return;
    fn(code, b.substr(off + 4, len));
    off += 4 + pad4(len);
  }
}
uint64_t read_timestamp(std::string_view v) {
  return uint64_t(get<uint32_t>(v, 0)) << 32 | get<uint32_t>(v, 4);
}
}  // namespace

Statistics read_statistics(const BlockView& b) {
  Statistics s;
  if (b.type != kInterfaceStatistics) return s;
  for_each_option(b.bytes, 16, [&](uint16_t code, std::string_view v) {
    const uint64_t n = get<uint64_t>(v, 0);
    switch (code) {
      case kIsbStart:
        s.start_ns = read_timestamp(v);
        break;
      case kIsbEnd:
        s.end_ns = read_timestamp(v);
        break;
      case kIsbIfrecv:
        s.ifrecv = n;
        break;
      case kIsbIfdrop:
        s.ifdrop = n;
        break;
      case kIsbFilteraccept:
        s.filteraccept = n;
        break;
      case kIsbOsdrop:
        s.osdrop = n;
        break;
      case kIsbUsrdeliv:
        s.usrdeliv = n;
        break;
      default:
        break;
    }
  });
  return s;
}

std::optional<PacketView> read_packet(const BlockView& b) {
  if (b.type != kEnhancedPacket || b.bytes.size() < 32) return std::nullopt;
  PacketView p;
  p.ts_ns = read_timestamp(b.bytes.substr(12, 8));
  const uint32_t caplen = get<uint32_t>(b.bytes, 20);
  p.orig_len = get<uint32_t>(b.bytes, 24);
  if (28 + pad4(caplen) + 4 > b.bytes.size()) return std::nullopt;
  p.data = b.bytes.substr(28, caplen);
  for_each_option(b.bytes, 28 + pad4(caplen), [&](uint16_t code, std::string_view v) {
    if (code == kEpbFlags) p.flags = get<uint32_t>(v, 0);
    if (code == kOptComment) p.comment = v;
  });
  return p;
}

}  // namespace vnet::net::pcapng
