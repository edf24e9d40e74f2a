// pcapng: the blocks of a capture file (draft-ietf-opsawg-pcapng, "PCAP Next
// Generation Dump File Format"), written in host byte order (the Section Header's
// byte-order magic tells readers which). Writers append one block to a string; the
// reader walks a byte stream block by block (vnetctl counts frames and reads the
// final statistics with it). Every block and every option is padded to 32 bits, as
// the format requires (section 3.1 and 3.5).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace vnet::net::pcapng {

// Block types (section 4 and 11.1).
inline constexpr uint32_t kSectionHeader = 0x0A0D0D0A;
inline constexpr uint32_t kInterfaceDescription = 0x00000001;
inline constexpr uint32_t kInterfaceStatistics = 0x00000005;
inline constexpr uint32_t kEnhancedPacket = 0x00000006;
inline constexpr uint32_t kByteOrderMagic = 0x1A2B3C4D;
inline constexpr uint16_t kLinkTypeEthernet = 1;  // LINKTYPE_ETHERNET (DLT_EN10MB)

// epb_flags bits 0-1 (section 4.3.1): the direction of the frame.
inline constexpr uint32_t kFlagInbound = 1;
inline constexpr uint32_t kFlagOutbound = 2;

// Section Header Block (section 4.1): version 1.0, section length unknown (-1).
void append_section_header(std::string& out, std::string_view user_appl);
// Interface Description Block (section 4.2): if_name, if_tsresol = 9 (nanoseconds).
void append_interface(std::string& out, uint16_t link_type, uint32_t snaplen,
                      std::string_view if_name);
// Enhanced Packet Block (section 4.3) on interface `if_id`: ts_ns in nanoseconds
// since the epoch, the captured bytes, the frame's length on the wire, epb_flags
// (omitted when 0) and an opt_comment (omitted when empty).
void append_packet(std::string& out, uint32_t if_id, uint64_t ts_ns, std::string_view data,
                   uint32_t orig_len, uint32_t flags, std::string_view comment = {});

// Interface Statistics Block (section 4.6).
struct Statistics {
  uint64_t start_ns = 0, end_ns = 0;  // isb_starttime, isb_endtime
  uint64_t ifrecv = 0;                // frames the capture saw (before its filter)
  uint64_t ifdrop = 0;                // matching frames lost: the reader was too slow
  uint64_t filteraccept = 0;          // frames the filter accepted (dropped ones too)
  uint64_t osdrop = 0;                // frames lost elsewhere (none today)
  uint64_t usrdeliv = 0;              // frames delivered to the reader
};
void append_statistics(std::string& out, uint32_t if_id, uint64_t ts_ns, const Statistics& s);

// Reading: the next whole block at the start of `in` (its type and total length), or
// nothing while the block is incomplete. A length that is not a multiple of 4 or is
// below 12 is an error (`bad` set).
struct BlockView {
  uint32_t type = 0;
  std::string_view bytes;  // the whole block
};
std::optional<BlockView> next_block(std::string_view in, bool* bad);
// An Interface Statistics Block's counters (the options it has).
Statistics read_statistics(const BlockView& b);
// An Enhanced Packet Block's fields: captured data, length on the wire, epb_flags,
// opt_comment and timestamp (nanoseconds, if_tsresol 9 assumed).
struct PacketView {
  std::string_view data;
  uint32_t orig_len = 0;
  uint32_t flags = 0;
  std::string_view comment;
  uint64_t ts_ns = 0;
};
std::optional<PacketView> read_packet(const BlockView& b);

}  // namespace vnet::net::pcapng
