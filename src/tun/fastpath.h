// The flow fast path: the kernel forwards an established TCP flow, a UDP
// flow, an ICMP echo exchange, a bound IPsec SA's ESP or a PPTP call's GRE
// itself.
//
// The userland engine decides every flow. For a flow it has seen
// established it writes two entries into the `flows` hash map (one per
// direction: the packet's 5-tuple as key, the NAT rewrite as value), and an
// eBPF program on the tc ingress hook (tcx) of the LAN device and of the WAN
// device forwards that flow's packets without them ever reaching the
// engine: it rewrites addresses and ports (checksums with the kernel's
// helpers, so GSO super-packets stay right), decrements the TTL, looks the
// route up in the main table (bpf_fib_lookup, the router's policy rules
// skipped: they send everything into the TUN devices), writes the Ethernet
// header and redirects the packet to the egress of the device the route
// names. Whatever it does not handle it passes on to the kernel untouched,
// and the kernel hands it to the engine as before (OpenWrt's software flow
// offloading, for this router).
//
// A packet is forwarded only if its entry exists, it arrived on the entry's
// inIfindex and the route sends it out of the entry's outIfindex; every
// packet of a direction marked closed (kClosed) goes up; a TCP SYN, FIN or
// RST marks its direction closed (it and every later packet of that
// direction go up to the engine, which sees the connection close; the
// entry stays for its counts until userland withdraws the flow; a FIN or
// RST far outside the sender's window, a blind injection, is dropped
// instead); a packet with TTL <= 1, or too large for the route's MTU, or
// whose route or neighbour is not known goes up.
//
// UDP: no state at all, the entry is the flow (userland times it out; a
// checksum of 0, "none", stays 0). ICMP: echo requests and replies only
// (errors and every other type go up unlooked up, as they quote another
// flow's packet), keyed by the identifier, which the rewrite may change;
// an entry carries one type, the request (flags bit 2 clear) or the reply
// (set): the other type with its key goes up. ESP (IP protocol 50, RFC
// 4303; NAT-T is UDP 4500 and plain UDP here): keyed by the addresses and
// the SPI, which is never rewritten; the rewrite is the addresses alone (the
// IP header's checksum: ESP has no other), no state either (the SA's
// sequence numbers are the ends'); a GSO ESP skb goes up. GRE (IP
// protocol 47): PPTP's enhanced GRE only (RFC 2637 4.1: version 1, K set,
// C, R, s, the recursion control and the reserved flags clear, S and A
// either way, protocol type 0x880B; anything else goes up), keyed by the
// addresses and the Call ID (the receiver's name for the call), which the
// rewrite may change (the inbound direction's, back to the LAN host's);
// the addresses with the IP header's checksum (GRE v1 has none), S's and
// A's numbers and the PPP payload untouched, no state (the call's is its
// control connection's); a GSO GRE skb goes up.
//
// Attached with tcx links only (BPF_LINK_CREATE, Linux 6.6+): a link lives
// as long as its fd, so when the process dies the kernel detaches the
// program and a dead daemon never leaves a forwarding path behind (the
// router fails closed). No pinning, no netlink tc filters. (The program
// needs nothing newer than 5.12's atomic or: on 6.1 it loads, and the
// attach fails, saying so.)
//
// `flows` (BPF_MAP_TYPE_HASH, max_entries = maxFlows):
//   key, 16 bytes, exactly as in the packet (network order):
//     0 saddr, 4 daddr, 8 sport, 10 dport, 12 protocol (6 TCP, 17 UDP,
//     1 ICMP: sport the echo identifier, dport 0; 50 ESP: sport and dport
//     the SPI's first and last two bytes, i.e. bytes 8..11 are the SPI as
//     in the packet; 47 GRE: sport 0, dport the Call ID, GRE header bytes
//     6..7 as in the packet), 13..15 zero
//   value, 48 bytes:
//     0 newSaddr, 4 newDaddr, 8 newSport, 10 newDport (network order; ICMP:
//       newSport the identifier, newDport unused; ESP: both unread, the
//       SPI is never rewritten, and userland writes the key's there; GRE:
//       newDport the Call ID the packet leaves with (the key's dport: left
//       as it is), newSport unread, userland writes 0)
//     12 inIfindex  u32 (host order; the packet must have arrived here)
//     16 outIfindex u32 (the route must send it out here)
//     20 win u32 (TCP): a FIN or RST is accepted when |(s32)(seq - end)| <= win (below 2^31)
//     24 end u32 (TCP): the sender's highest seq + payload seen (the program advances it)
//     28 flags u32: bit 0 end known (TCP), bit 1 closed (the program sets
//       them; for UDP, ICMP, ESP and GRE only userland does), bit 2 echo reply
//       (ICMP; userland's)
//     32 packets u64, 40 bytes u64 (IP bytes; a GSO super-packet counts once)
// `stats` (BPF_MAP_TYPE_PERCPU_ARRAY, one entry of 8 u64): Stat below.
#pragma once

#include <napi.h>

#include <cstdint>
#include <string>
#include <vector>

#include <linux/bpf.h>

namespace fastpath {

constexpr uint32_t kKeyBytes = 16;
constexpr uint32_t kValueBytes = 48;
constexpr uint32_t kStatCount = 8;

// Value offsets.
constexpr int16_t kNewSaddr = 0, kNewDaddr = 4, kNewSport = 8, kNewDport = 10, kInIfindex = 12,
                  kOutIfindex = 16, kWin = 20, kEnd = 24, kFlags = 28, kPackets = 32, kBytes = 40;
constexpr uint32_t kEndKnown = 1;
// The direction passed a SYN, FIN or RST up (or, for any protocol,
// userland says so): from then on all of its packets go up (the engine's),
// and the entry stays for its counts and end until the thread's sync
// withdraws the flow.
constexpr uint32_t kClosed = 2;
// An ICMP entry's type: set, it carries echo replies; clear, requests. A
// request arriving with a reply's key (to the router's address, from
// outside) is the router's to answer.
constexpr uint32_t kEchoReply = 4;

enum Stat : int {
  kForwarded = 0,      // redirected
  kOutOfWindow = 1,    // FIN or RST far outside the sender's window: dropped
  kPassedClose = 2,    // SYN, FIN or RST, or any packet of a closed direction (kClosed): passed up
  kPassedOther = 3,    // wrong device, an echo of the other type, a GSO ESP or GRE skb, TTL <= 1, MTU, no route, another device's route: passed up
  kRewriteFailed = 4,  // a helper failed half-way through the rewrite: dropped (never seen)
};

struct Handle {
  int flowsFd = -1;
  int statsFd = -1;
  int progFd = -1;
  int links[2] = {-1, -1};  // LAN, WAN
};

// The program's instructions for these two maps.
std::vector<bpf_insn> Program(int flowsFd, int statsFd);

// Makes the maps, loads the program, attaches it to both devices' ingress.
// 0, or the errno with *err saying which step (everything made so far is
// closed again).
int Open(const std::string& lan, const std::string& wan, uint32_t maxFlows, Handle* h, std::string* err);

// Closes the links first (the kernel detaches the program), then the
// program and the maps; every fd becomes -1.
void Close(Handle* h);

// The addon's functions (addon.cc exports them; src/tun/fastpath.ts types them).
Napi::Value NapiOpen(const Napi::CallbackInfo& info);
Napi::Value NapiClose(const Napi::CallbackInfo& info);
Napi::Value NapiPut(const Napi::CallbackInfo& info);
Napi::Value NapiDelete(const Napi::CallbackInfo& info);
Napi::Value NapiGet(const Napi::CallbackInfo& info);
Napi::Value NapiKeys(const Napi::CallbackInfo& info);
Napi::Value NapiReadBatch(const Napi::CallbackInfo& info);
Napi::Value NapiStats(const Napi::CallbackInfo& info);

}  // namespace fastpath
