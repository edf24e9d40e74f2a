// Flow hash for receive steering (which of a multiqueue guest's RX queues a frame goes
// to): a symmetric hash of the IPv4/IPv6 addresses and TCP/UDP/SCTP ports, so that
// both directions of a flow hash alike and frames of one flow always pick the same
// queue; frames that are not IP hash by their MAC addresses and ethertype (also
// symmetric). Reads only the first `len` bytes of the frame (hostile: every read is
// bounded); allocates nothing. Not a parser for anything else: it skips what it does
// not understand and falls back to the next coarser key.
#pragma once

#include <cstdint>

namespace vnet::net {

// Ethernet (IEEE 802.3) with up to two 802.1Q/802.1ad tags; IPv4 (RFC 791: IHL,
// fragments hash without ports since only the first carries them); IPv6 (RFC 8200:
// ports only when the next header is TCP/UDP/SCTP directly). Never 0.
uint32_t flow_hash(const uint8_t* frame, uint32_t len);

// Maps a hash onto [0, n) evenly (multiply-shift, no division). n >= 1.
inline uint32_t hash_to_range(uint32_t hash, uint32_t n) {
  return uint32_t((uint64_t(hash) * n) >> 32);
}

}  // namespace vnet::net
