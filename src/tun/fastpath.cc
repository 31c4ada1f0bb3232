// The flow fast path (fastpath.h says what and why): its program, written
// out as instructions (bpf.h), its maps and tcx links, and the addon's
// functions over them.
#include "fastpath.h"

#include "bpf.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <unordered_set>

#include <arpa/inet.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <linux/pkt_cls.h>
#include <net/if.h>
#include <net/if_arp.h>
#include <netinet/in.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/utsname.h>
#include <unistd.h>

namespace fastpath {
namespace {

using ebpf::Bpf;
using ebpf::Insn;
using ebpf::Labels;

// The kernel's ABI; the build machine's headers (Debian 12: Linux 6.1) may
// predate tcx (6.6), so the one value it needs is spelled out here.
constexpr uint32_t kTcxIngress = 46;  // BPF_TCX_INGRESS

// Where the headers are: Ethernet (14 bytes, as on the veth, bridge and
// Ethernet devices this runs on) at skb->data, IPv4 without options after
// it (anything else is passed up), TCP, UDP, ICMP, ESP or GRE after that.
constexpr int32_t kIp = 14;
constexpr int32_t kL4 = kIp + 20;
constexpr int32_t kIpCsum = kIp + 10;
constexpr int32_t kTcpCsum = kL4 + 16;
constexpr int32_t kUdpCsum = kL4 + 6;
constexpr int32_t kIcmpCsum = kL4 + 2, kIcmpId = kL4 + 4;
constexpr int32_t kGreProto = kL4 + 2, kGreCallId = kL4 + 6;

// PPTP's enhanced GRE (RFC 2637 4.1), its first 16 bits in host order: C
// (checksum), R (routing), K (key), S (sequence), s (strict source route),
// the recursion control (3 bits), A (ack), 4 flag bits that must be 0, the
// version (3 bits). The program takes only K set, version 1 and every other
// bit clear but S and A, which add their 4 bytes after the Call ID.
constexpr int32_t kGreSeq = 0x1000, kGreAck = 0x0080;
constexpr int32_t kGreMask = 0xffff & ~(kGreSeq | kGreAck), kGreV1Key = 0x2001;
constexpr uint16_t kPppProto = 0x880b;  // GRE's protocol type for PPP

constexpr uint8_t kFin = 0x01, kSyn = 0x02, kRst = 0x04;
constexpr uint8_t kEchoReplyType = 0, kEchoRequestType = 8;

// The program's stack (offsets from r10): the route lookup's parameters,
// the key, a scratch word for helpers that copy from memory, and what it
// read from the packet before the first helper call (a helper that may
// change the packet invalidates every pointer into it).
constexpr int16_t kFib = -64;  // struct bpf_fib_lookup, 64 bytes
constexpr int16_t kKey = -80;
constexpr int16_t kTmp = -88;
// As in the packet; ICMP's old "sport" is its identifier, its old dport 0;
// ESP's are the SPI's two halves (never rewritten); GRE's are 0 and the
// Call ID.
constexpr int16_t kOldSaddr = -92, kOldDaddr = -96, kOldSport = -100, kOldDport = -104;
constexpr int16_t kOldTtl = -108;  // the 16 bits of TTL and protocol, as in the packet
constexpr int16_t kSeq = -112, kSeqEnd = -116;  // TCP's, host order
constexpr int16_t kTcpFlags = -120;  // TCP's flags byte
// The transport header's bytes in each segment of a GSO packet (TCP's data
// offset, UDP's 8); 0 for ICMP, ESP and GRE, which the program never takes as GSO.
constexpr int16_t kL4Len = -124;
constexpr int16_t kProto = -128;  // IPPROTO_TCP, _UDP, _ICMP, _ESP or _GRE: the later steps that differ branch on it
constexpr int16_t kIcmpType = -132;
static_assert(sizeof(bpf_fib_lookup) == 64, "struct bpf_fib_lookup is 64 bytes");

int16_t Fib(size_t field) { return static_cast<int16_t>(kFib + static_cast<int>(field)); }

bpf_insn Ldx(uint8_t size, uint8_t dst, uint8_t src, int16_t off) { return Insn(BPF_LDX | size | BPF_MEM, dst, src, off, 0); }
bpf_insn Stx(uint8_t size, uint8_t dst, uint8_t src, int16_t off) { return Insn(BPF_STX | size | BPF_MEM, dst, src, off, 0); }
bpf_insn St(uint8_t size, uint8_t dst, int16_t off, int32_t imm) { return Insn(BPF_ST | size | BPF_MEM, dst, 0, off, imm); }
bpf_insn Alu(uint8_t op, uint8_t dst, int32_t imm) { return Insn(BPF_ALU64 | op | BPF_K, dst, 0, 0, imm); }
bpf_insn AluX(uint8_t op, uint8_t dst, uint8_t src) { return Insn(BPF_ALU64 | op | BPF_X, dst, src, 0, 0); }
bpf_insn Alu32X(uint8_t op, uint8_t dst, uint8_t src) { return Insn(BPF_ALU | op | BPF_X, dst, src, 0, 0); }
bpf_insn Mov(uint8_t dst, int32_t imm) { return Alu(BPF_MOV, dst, imm); }
bpf_insn MovX(uint8_t dst, uint8_t src) { return AluX(BPF_MOV, dst, src); }
// Network to host order, and back (the same swap); the upper bits cleared.
bpf_insn FromBe(uint8_t reg, int32_t bits) { return Insn(BPF_ALU | BPF_END | BPF_TO_BE, reg, 0, 0, bits); }
bpf_insn Call(int32_t helper) { return Insn(BPF_JMP | BPF_CALL, 0, 0, 0, helper); }
bpf_insn Exit() { return Insn(BPF_JMP | BPF_EXIT, 0, 0, 0, 0); }
// *(u64 *)(dst + off) += src, atomically (BPF_XADD: every kernel with eBPF).
bpf_insn AtomicAdd(uint8_t dst, uint8_t src, int16_t off) { return Insn(BPF_STX | BPF_DW | BPF_ATOMIC, dst, src, off, BPF_ADD); }
// *(u32 *)(dst + off) |= src, atomically (BPF_ATOMIC BPF_OR: Linux 5.12+, below tcx's 6.6).
bpf_insn AtomicOr(uint8_t dst, uint8_t src, int16_t off) { return Insn(BPF_STX | BPF_W | BPF_ATOMIC, dst, src, off, BPF_OR); }

void LoadMap(std::vector<bpf_insn>* p, uint8_t reg, int fd) {
  p->push_back(Insn(BPF_LD | BPF_DW | BPF_IMM, reg, BPF_PSEUDO_MAP_FD, 0, fd));
  p->push_back(Insn(0, 0, 0, 0, 0));
}

// stats[i] += 1 on this CPU (r0-r5 clobbered, kTmp overwritten).
void Count(std::vector<bpf_insn>* p, int statsFd, int i) {
  p->push_back(St(BPF_W, 10, kTmp, 0));
  LoadMap(p, 1, statsFd);
  p->push_back(MovX(2, 10));
  p->push_back(Alu(BPF_ADD, 2, kTmp));
  p->push_back(Call(BPF_FUNC_map_lookup_elem));
  p->push_back(Insn(BPF_JMP | BPF_JEQ | BPF_K, 0, 0, 2, 0));  // no entry (cannot happen): skip the add
  p->push_back(Mov(1, 1));
  p->push_back(AtomicAdd(0, 1, static_cast<int16_t>(8 * i)));
}

}  // namespace

// r6 = the skb, r7 = the flow's value once found; r8, r9 survive calls.
// Every packet the program does not forward or drop it returns with
// TC_ACT_UNSPEC (TCX_NEXT): on to the next tcx program and the device's tc
// filters, then the kernel, as if this program were not there. TC_ACT_OK
// (TCX_PASS) would be "pass" too but would also skip those filters (an
// ingress shaper's mirred to an ifb, say) for every packet of the device.
//
// One program for the five protocols: they share the lookup, the checks
// and the route; where they differ (the key's ports, step 5, the lookup's
// ports and segment length, the checksums of step 8, step 9) the program
// branches on kProto.
std::vector<bpf_insn> Program(int flowsFd, int statsFd) {
  enum {
    kPass, kPassOther, kDrop, kFailed, kClose, kPassClosed, kNotClose, kNonGso, kLen,
    kParseUdp, kParseIcmp, kParseEsp, kParseGre, kKeyed, kEcho, kTtl, kFibPorts,
    kRewriteUdp, kRewriteIcmp, kRewriteEsp, kRewriteGre, kRewritten, kStoreEnd, kCounters, kSkip,
    kLabels = kSkip + 4 + 4 + 3 + 2 + 3  // kSkip...: step 8's, one a rewritten field (TCP 4, UDP 4, ICMP 3, ESP 2, GRE 3)
  };
  std::vector<bpf_insn> p;
  Labels l(&p, kLabels);
  auto I = [&](bpf_insn i) { p.push_back(i); };
  // The transport header's first four bytes, as in the packet, into the
  // key's ports and the old-port slots: TCP's and UDP's ports, ESP's SPI.
  auto KeyPorts = [&]() {
    for (int16_t half : {0, 2}) {
      I(Ldx(BPF_H, 0, 2, static_cast<int16_t>(kL4 + half)));
      I(Stx(BPF_H, 10, 0, static_cast<int16_t>(kKey + 8 + half)));
      I(Stx(BPF_W, 10, 0, half == 0 ? kOldSport : kOldDport));
    }
  };
  const uint8_t jeq = BPF_JMP | BPF_JEQ | BPF_K, jne = BPF_JMP | BPF_JNE | BPF_K;

  I(MovX(6, 1));
  // 1. IPv4 addressed to this host (the kernel drops another host's at
  // ip_rcv), not VLAN-tagged (a tag the device did not take off would be put
  // back on at the egress: the VLAN's own device has its own hook).
  I(Ldx(BPF_W, 0, 6, offsetof(__sk_buff, protocol)));
  l.Jump(jne, 0, 0, htons(ETH_P_IP), kPass);
  I(Ldx(BPF_W, 0, 6, offsetof(__sk_buff, pkt_type)));
  l.Jump(jne, 0, 0, PACKET_HOST, kPass);
  I(Ldx(BPF_W, 0, 6, offsetof(__sk_buff, vlan_present)));
  l.Jump(jne, 0, 0, 0, kPass);
  // 2. Ethernet, IPv4 and the transport header's first 8 bytes (UDP's
  // whole, ICMP echo's, ESP's SPI and sequence number, GRE's header up to
  // its Call ID) in the linear data; IPv4 without options, not a fragment.
  // The IP header's length (skb->len holds an Ethernet frame's padding too)
  // within the frame, or the packet is truncated, and at least the IP header
  // and those 8 bytes (BIG TCP's 0 goes up too; so does an ESP or GRE packet
  // whose IP length leaves less than those 8 bytes, whatever the frame
  // carries after it).
  I(Ldx(BPF_W, 2, 6, offsetof(__sk_buff, data)));
  I(Ldx(BPF_W, 3, 6, offsetof(__sk_buff, data_end)));
  I(MovX(4, 2));
  I(Alu(BPF_ADD, 4, kL4 + 8));
  l.Jump(BPF_JMP | BPF_JGT | BPF_X, 4, 3, 0, kPass);
  I(Ldx(BPF_B, 0, 2, kIp));
  l.Jump(jne, 0, 0, 0x45, kPass);
  I(Ldx(BPF_H, 0, 2, kIp + 6));
  I(FromBe(0, 16));
  I(Alu(BPF_AND, 0, 0x3fff));  // MF and the fragment offset
  l.Jump(jne, 0, 0, 0, kPass);
  I(Ldx(BPF_H, 4, 2, kIp + 2));
  I(FromBe(4, 16));
  I(Ldx(BPF_W, 5, 6, offsetof(__sk_buff, len)));
  I(Alu(BPF_ADD, 5, -kIp));
  l.Jump(BPF_JMP | BPF_JGT | BPF_X, 4, 5, 0, kPass);
  l.Jump(BPF_JMP | BPF_JLT | BPF_K, 4, 0, 20 + 8, kPass);
  // 3. The key; and what the rewrite needs, kept before any helper runs.
  // The addresses and the TTL first, then each protocol's ports.
  I(Ldx(BPF_W, 0, 2, kIp + 12));
  I(Stx(BPF_W, 10, 0, kKey));
  I(Stx(BPF_W, 10, 0, kOldSaddr));
  I(Ldx(BPF_W, 0, 2, kIp + 16));
  I(Stx(BPF_W, 10, 0, kKey + 4));
  I(Stx(BPF_W, 10, 0, kOldDaddr));
  I(St(BPF_W, 10, kKey + 12, 0));
  I(Ldx(BPF_H, 0, 2, kIp + 8));
  I(Stx(BPF_W, 10, 0, kOldTtl));
  // The slots only one protocol's later steps read, zeroed for all: the
  // verifier need not know that kProto, which it may not follow from the
  // branch below to the later ones, never leads UDP into TCP's step 5.
  for (int16_t slot : {kSeq, kSeqEnd, kTcpFlags, kIcmpType}) I(St(BPF_W, 10, slot, 0));
  I(Ldx(BPF_B, 0, 2, kIp + 9));
  I(Stx(BPF_B, 10, 0, kKey + 12));
  I(Stx(BPF_W, 10, 0, kProto));
  l.Jump(jeq, 0, 0, IPPROTO_UDP, kParseUdp);
  l.Jump(jeq, 0, 0, IPPROTO_ICMP, kParseIcmp);
  l.Jump(jeq, 0, 0, IPPROTO_ESP, kParseEsp);
  l.Jump(jeq, 0, 0, IPPROTO_GRE, kParseGre);
  l.Jump(jne, 0, 0, IPPROTO_TCP, kPass);
  // 3 TCP: its first 20 bytes linear; its flags, sequence number and
  // header length; the payload (IP length less both headers, at least 0)
  // for the sender's end (step 9).
  I(MovX(5, 2));
  I(Alu(BPF_ADD, 5, kL4 + 20));
  l.Jump(BPF_JMP | BPF_JGT | BPF_X, 5, 3, 0, kPass);
  KeyPorts();
  I(Ldx(BPF_B, 0, 2, kL4 + 13));
  I(Stx(BPF_W, 10, 0, kTcpFlags));
  I(Ldx(BPF_W, 8, 2, kL4 + 4));
  I(FromBe(8, 32));
  I(Stx(BPF_W, 10, 8, kSeq));
  I(Ldx(BPF_B, 0, 2, kL4 + 12));
  I(Alu(BPF_RSH, 0, 4));
  I(Alu(BPF_LSH, 0, 2));
  l.Jump(BPF_JMP | BPF_JLT | BPF_K, 0, 0, 20, kPass);  // data offset below 5: not TCP
  I(Stx(BPF_W, 10, 0, kL4Len));
  I(Alu(BPF_ADD, 0, 20));
  l.Jump(BPF_JMP | BPF_JLT | BPF_X, 4, 0, 0, kPass);  // r4: the IP length, from step 2
  I(AluX(BPF_SUB, 4, 0));
  I(Alu32X(BPF_ADD, 8, 4));  // seq + payload, modulo 2^32
  I(Stx(BPF_W, 10, 8, kSeqEnd));
  l.Jump(BPF_JMP | BPF_JA, 0, 0, 0, kKeyed);
  // 3 UDP: the ports; an 8-byte header in every segment.
  l.Place(kParseUdp);
  KeyPorts();
  I(St(BPF_W, 10, kL4Len, 8));
  l.Jump(BPF_JMP | BPF_JA, 0, 0, 0, kKeyed);
  // 3 ICMP: an echo request or reply only; every other message (the errors
  // above all: they quote another flow's packet) is the engine's, unlooked
  // up. The identifier is the key's sport, its dport 0.
  l.Place(kParseIcmp);
  I(Ldx(BPF_B, 0, 2, kL4 + 1));
  l.Jump(jne, 0, 0, 0, kPass);  // code
  I(Ldx(BPF_B, 0, 2, kL4));
  I(Insn(jeq, 0, 0, 1, kEchoReplyType));
  l.Jump(jne, 0, 0, kEchoRequestType, kPass);
  I(Stx(BPF_W, 10, 0, kIcmpType));
  I(Ldx(BPF_H, 0, 2, kIcmpId));
  I(Stx(BPF_H, 10, 0, kKey + 8));
  I(Stx(BPF_W, 10, 0, kOldSport));
  I(St(BPF_H, 10, kKey + 10, 0));
  I(St(BPF_W, 10, kOldDport, 0));
  I(St(BPF_W, 10, kL4Len, 0));
  l.Jump(BPF_JMP | BPF_JA, 0, 0, 0, kKeyed);
  // 3 ESP (RFC 4303; NAT-T's is UDP 4500, above): the SPI is the key's
  // ports, its first two bytes sport and its last two dport, as they are in
  // the packet, so that one SA's packets from one host to another are one
  // entry: the addresses are in the key, so another host's packet with the
  // same SPI (a spoofed source, another LAN host) has no entry. No segment
  // length: step 7 passes a GSO ESP skb up.
  l.Place(kParseEsp);
  KeyPorts();
  I(St(BPF_W, 10, kL4Len, 0));
  l.Jump(BPF_JMP | BPF_JA, 0, 0, 0, kKeyed);
  // 3 GRE: PPTP's data channel only (RFC 2637 4.1: version 1, the key field
  // its payload length and the peer's Call ID). Plain GRE (version 0: a
  // tunnel, its key no Call ID), a checksum or routing present (the rewrite
  // would have to mend a checksum, the header's length would be another),
  // another payload than PPP: the engine's. The Call ID names the call at
  // the receiver, as the SPI names an SA, so it is the key's dport as in
  // the packet and sport is 0; with the addresses in the key, another
  // host's packet with the same Call ID has no entry. S's and A's numbers
  // are the ends' (PPTP's sliding window), left as they are. No segment
  // length: step 7 passes a GSO GRE skb up.
  l.Place(kParseGre);
  I(Ldx(BPF_H, 0, 2, kL4));
  I(FromBe(0, 16));
  I(Alu(BPF_AND, 0, kGreMask));
  l.Jump(jne, 0, 0, kGreV1Key, kPass);
  I(Ldx(BPF_H, 0, 2, kGreProto));
  l.Jump(jne, 0, 0, htons(kPppProto), kPass);
  I(St(BPF_H, 10, kKey + 8, 0));
  I(St(BPF_W, 10, kOldSport, 0));
  I(Ldx(BPF_H, 0, 2, kGreCallId));
  I(Stx(BPF_H, 10, 0, kKey + 10));
  I(Stx(BPF_W, 10, 0, kOldDport));
  I(St(BPF_W, 10, kL4Len, 0));
  l.Place(kKeyed);
  LoadMap(&p, 1, flowsFd);
  I(MovX(2, 10));
  I(Alu(BPF_ADD, 2, kKey));
  I(Call(BPF_FUNC_map_lookup_elem));
  l.Jump(jeq, 0, 0, 0, kPass);
  I(MovX(7, 0));
  // 4. It arrived where the flow's packets of this direction arrive.
  I(Ldx(BPF_W, 1, 6, offsetof(__sk_buff, ingress_ifindex)));
  I(Ldx(BPF_W, 2, 7, kInIfindex));
  l.Jump(BPF_JMP | BPF_JNE | BPF_X, 1, 2, 0, kPassOther);
  // 4b. A direction that passed a FIN, RST or SYN up (kClosed) stays with
  // the engine: its entry is kept only for the counts and the end, which the
  // thread's sync reads before it withdraws the flow (deleting it here lost
  // the bytes moved since the last sync). UDP's and ICMP's entries honour
  // the flag too (only userland sets it there), so that a closed direction
  // means the same for every flow.
  I(Ldx(BPF_W, 3, 7, kFlags));
  I(Alu(BPF_AND, 3, kClosed));
  l.Jump(jne, 3, 0, 0, kPassClosed);
  // 5. UDP, ESP and GRE have nothing to judge (ESP's sequence numbers and
  // replay window are the receiving SA's, GRE's the PPTP call's, end to
  // end; the call's end is its control connection's, TCP). TCP: a FIN or RST
  // within the window (or before the end is known), or a SYN: the engine's
  // (its direction marked kClosed); one far outside is dropped.
  I(Ldx(BPF_W, 0, 10, kProto));
  l.Jump(jeq, 0, 0, IPPROTO_ICMP, kEcho);
  l.Jump(jne, 0, 0, IPPROTO_TCP, kTtl);  // UDP, ESP, GRE
  I(Ldx(BPF_W, 1, 10, kTcpFlags));
  I(MovX(2, 1));
  I(Alu(BPF_AND, 2, kFin | kRst));
  l.Jump(jeq, 2, 0, 0, kNotClose);
  I(Ldx(BPF_W, 3, 7, kFlags));
  I(Alu(BPF_AND, 3, kEndKnown));
  l.Jump(jeq, 3, 0, 0, kClose);
  I(Ldx(BPF_W, 4, 10, kSeq));
  I(Ldx(BPF_W, 5, 7, kEnd));
  I(Alu32X(BPF_SUB, 4, 5));  // d = seq - end, as s32 below
  I(Ldx(BPF_W, 5, 7, kWin));
  l.Jump(BPF_JMP32 | BPF_JSGT | BPF_X, 4, 5, 0, kDrop);
  I(Insn(BPF_ALU | BPF_NEG, 5, 0, 0, 0));
  l.Jump(BPF_JMP32 | BPF_JSLT | BPF_X, 4, 5, 0, kDrop);
  l.Jump(BPF_JMP | BPF_JA, 0, 0, 0, kClose);
  l.Place(kNotClose);
  I(Alu(BPF_AND, 1, kSyn));
  l.Jump(jne, 1, 0, 0, kClose);
  l.Jump(BPF_JMP | BPF_JA, 0, 0, 0, kTtl);
  // 5 ICMP: an entry carries one way of an echo exchange, the requests
  // (kEchoReply clear) or the replies (set): a request that matches a
  // reply's entry (one from outside, with the NATed identifier, to the
  // router's address) is the router's own to answer, not the LAN host's.
  l.Place(kEcho);
  I(Ldx(BPF_W, 1, 10, kIcmpType));
  I(Ldx(BPF_W, 2, 7, kFlags));
  I(Alu(BPF_AND, 2, kEchoReply));
  I(Insn(jeq, 2, 0, 2, 0));
  l.Jump(jne, 1, 0, kEchoReplyType, kPassOther);
  l.Jump(BPF_JMP | BPF_JA, 0, 0, 0, kTtl);
  l.Jump(jne, 1, 0, kEchoRequestType, kPassOther);
  // 6. TTL <= 1: the kernel sends the ICMP time exceeded.
  l.Place(kTtl);
  I(Ldx(BPF_W, 1, 10, kOldTtl));
  I(FromBe(1, 16));  // TTL << 8 | protocol
  l.Jump(BPF_JMP | BPF_JLT | BPF_K, 1, 0, 2 << 8, kPassOther);
  // 7. The route in the main table (BPF_FIB_LOOKUP_DIRECT: the policy rules
  // that send everything into the TUN devices are skipped) from the packet
  // as it will leave (ICMP, ESP and GRE without ports: an SPI or a Call ID
  // is no port for a rule's sport or dport to match). Its MTU check: the lookup itself
  // compares tot_len with the route's MTU (the device's, a route's `mtu`, a
  // learnt path MTU) and answers FRAG_NEEDED when it is larger, so tot_len
  // is the largest packet that will go on the wire: this one, or for a GSO
  // super-packet one segment (IP and transport header and gso_size: TCP's
  // segments and UDP_SEGMENT's datagrams alike), as the device (or the
  // kernel's GSO before it) will cut it. A GSO ICMP packet (none is made)
  // goes up, and so does a GSO ESP or GRE one (kL4Len 0 too: the length of
  // an ESP segment is its SA's, a GRE segment's the inner packet's, neither
  // known here). The lookup fails too when
  // forwarding is off on the ingress device, and when the neighbour is not
  // known (NO_NEIGH: the kernel's path resolves it).
  for (int i = 0; i < 8; i++) I(St(BPF_DW, 10, static_cast<int16_t>(kFib + 8 * i), 0));
  I(St(BPF_B, 10, Fib(offsetof(bpf_fib_lookup, family)), AF_INET));
  I(Ldx(BPF_W, 1, 10, kProto));
  I(Stx(BPF_B, 10, 1, Fib(offsetof(bpf_fib_lookup, l4_protocol))));
  // Ports for TCP and UDP only (ICMP, ESP and GRE have none a route could match).
  I(Insn(jeq, 1, 0, 1, IPPROTO_TCP));
  l.Jump(jne, 1, 0, IPPROTO_UDP, kFibPorts);
  I(Ldx(BPF_H, 1, 7, kNewSport));
  I(Stx(BPF_H, 10, 1, Fib(offsetof(bpf_fib_lookup, sport))));
  I(Ldx(BPF_H, 1, 7, kNewDport));
  I(Stx(BPF_H, 10, 1, Fib(offsetof(bpf_fib_lookup, dport))));
  l.Place(kFibPorts);
  I(Ldx(BPF_W, 1, 6, offsetof(__sk_buff, gso_size)));
  l.Jump(jeq, 1, 0, 0, kNonGso);
  I(Ldx(BPF_W, 2, 10, kL4Len));
  l.Jump(jeq, 2, 0, 0, kPassOther);
  I(AluX(BPF_ADD, 1, 2));
  I(Alu(BPF_ADD, 1, 20));
  l.Jump(BPF_JMP | BPF_JA, 0, 0, 0, kLen);
  l.Place(kNonGso);
  I(Ldx(BPF_W, 1, 6, offsetof(__sk_buff, len)));
  I(Alu(BPF_ADD, 1, -kIp));
  l.Place(kLen);
  l.Jump(BPF_JMP | BPF_JGT | BPF_K, 1, 0, 0xffff, kPassOther);
  I(Stx(BPF_H, 10, 1, Fib(offsetof(bpf_fib_lookup, tot_len))));
  I(Ldx(BPF_W, 1, 6, offsetof(__sk_buff, ingress_ifindex)));
  I(Stx(BPF_W, 10, 1, Fib(offsetof(bpf_fib_lookup, ifindex))));
  I(Ldx(BPF_W, 1, 7, kNewSaddr));
  I(Stx(BPF_W, 10, 1, Fib(offsetof(bpf_fib_lookup, ipv4_src))));
  I(Ldx(BPF_W, 1, 7, kNewDaddr));
  I(Stx(BPF_W, 10, 1, Fib(offsetof(bpf_fib_lookup, ipv4_dst))));
  I(MovX(1, 6));
  I(MovX(2, 10));
  I(Alu(BPF_ADD, 2, kFib));
  I(Mov(3, sizeof(bpf_fib_lookup)));
  I(Mov(4, BPF_FIB_LOOKUP_DIRECT));
  I(Call(BPF_FUNC_fib_lookup));
  l.Jump(jne, 0, 0, BPF_FIB_LKUP_RET_SUCCESS, kPassOther);
  I(Ldx(BPF_W, 1, 10, Fib(offsetof(bpf_fib_lookup, ifindex))));
  I(Ldx(BPF_W, 2, 7, kOutIfindex));
  l.Jump(BPF_JMP | BPF_JNE | BPF_X, 1, 2, 0, kPassOther);
  // 8. The rewrite, by helpers with offsets (each may move the packet's
  // data, so no pointer into it is used from here on). For a CHECKSUM_PARTIAL
  // skb (a GSO super-packet, or a local sender's with offloads) the TCP or
  // UDP field holds the pseudo-header's sum: an address change moves it
  // (BPF_F_PSEUDO_HDR), a port change leaves it; for any other skb the
  // helpers update the full checksum. A helper that fails leaves the packet
  // half rewritten: dropped and counted (kRewriteFailed). csumOff < 0: the
  // field is in no transport checksum (an address, for ICMP, ESP and GRE;
  // GRE's Call ID).
  int skip = kSkip;
  auto rewrite = [&](int16_t oldSlot, int16_t valueOff, bool address, int32_t packetOff, int32_t csumOff, int32_t csumFlags) {
    if (skip >= kLabels) std::abort();  // Labels has room for kLabels only: a rewrite more needs kLabels one higher
    const uint8_t size = address ? BPF_W : BPF_H;
    const int32_t bytes = address ? 4 : 2;
    I(Ldx(BPF_W, 8, 10, oldSlot));
    I(Ldx(size, 9, 7, valueOff));
    l.Jump(BPF_JMP | BPF_JEQ | BPF_X, 8, 9, 0, skip);
    if (csumOff >= 0) {
      I(MovX(1, 6));
      I(Mov(2, csumOff));
      I(MovX(3, 8));
      I(MovX(4, 9));
      I(Mov(5, csumFlags | bytes));
      I(Call(BPF_FUNC_l4_csum_replace));
      l.Jump(jne, 0, 0, 0, kFailed);
    }
    if (address) {
      I(MovX(1, 6));
      I(Mov(2, kIpCsum));
      I(MovX(3, 8));
      I(MovX(4, 9));
      I(Mov(5, 4));
      I(Call(BPF_FUNC_l3_csum_replace));
      l.Jump(jne, 0, 0, 0, kFailed);
    }
    I(Stx(size, 10, 9, kTmp));
    I(MovX(1, 6));
    I(Mov(2, packetOff));
    I(MovX(3, 10));
    I(Alu(BPF_ADD, 3, kTmp));
    I(Mov(4, bytes));
    I(Mov(5, 0));
    I(Call(BPF_FUNC_skb_store_bytes));
    l.Jump(jne, 0, 0, 0, kFailed);
    l.Place(skip++);
  };
  I(Ldx(BPF_W, 0, 10, kProto));
  l.Jump(jeq, 0, 0, IPPROTO_UDP, kRewriteUdp);
  l.Jump(jeq, 0, 0, IPPROTO_ICMP, kRewriteIcmp);
  l.Jump(jeq, 0, 0, IPPROTO_ESP, kRewriteEsp);
  l.Jump(jeq, 0, 0, IPPROTO_GRE, kRewriteGre);
  rewrite(kOldSaddr, kNewSaddr, true, kIp + 12, kTcpCsum, BPF_F_PSEUDO_HDR);
  rewrite(kOldDaddr, kNewDaddr, true, kIp + 16, kTcpCsum, BPF_F_PSEUDO_HDR);
  rewrite(kOldSport, kNewSport, false, kL4, kTcpCsum, 0);
  rewrite(kOldDport, kNewDport, false, kL4 + 2, kTcpCsum, 0);
  l.Jump(BPF_JMP | BPF_JA, 0, 0, 0, kRewritten);
  // UDP: a checksum of 0 is "none" and stays 0; a sum that comes out 0 is
  // sent as 0xffff (BPF_F_MARK_MANGLED_0), as the kernel's own NAT does. A
  // CHECKSUM_PARTIAL skb's field is never 0 (a pseudo-header's sum does not
  // fold to 0), so none is left unmoved.
  l.Place(kRewriteUdp);
  rewrite(kOldSaddr, kNewSaddr, true, kIp + 12, kUdpCsum, BPF_F_PSEUDO_HDR | BPF_F_MARK_MANGLED_0);
  rewrite(kOldDaddr, kNewDaddr, true, kIp + 16, kUdpCsum, BPF_F_PSEUDO_HDR | BPF_F_MARK_MANGLED_0);
  rewrite(kOldSport, kNewSport, false, kL4, kUdpCsum, BPF_F_MARK_MANGLED_0);
  rewrite(kOldDport, kNewDport, false, kL4 + 2, kUdpCsum, BPF_F_MARK_MANGLED_0);
  l.Jump(BPF_JMP | BPF_JA, 0, 0, 0, kRewritten);
  // ICMP's checksum covers no pseudo-header: the addresses are the IP
  // header's alone; the identifier is in the ICMP sum (newDport unused).
  l.Place(kRewriteIcmp);
  rewrite(kOldSaddr, kNewSaddr, true, kIp + 12, -1, 0);
  rewrite(kOldDaddr, kNewDaddr, true, kIp + 16, -1, 0);
  rewrite(kOldSport, kNewSport, false, kIcmpId, kIcmpCsum, 0);
  l.Jump(BPF_JMP | BPF_JA, 0, 0, 0, kRewritten);
  // ESP: no transport checksum (its integrity check covers only the ESP
  // bytes, which stay as they are), so only the IP header's; the SPI is the
  // SA's name at the receiver and is never rewritten (newSport and newDport
  // unread: userland writes the key's there).
  l.Place(kRewriteEsp);
  rewrite(kOldSaddr, kNewSaddr, true, kIp + 12, -1, 0);
  rewrite(kOldDaddr, kNewDaddr, true, kIp + 16, -1, 0);
  l.Jump(BPF_JMP | BPF_JA, 0, 0, 0, kRewritten);
  // GRE: version 1 has no checksum (step 3 passed one with C up), so the
  // addresses are the IP header's alone. The Call ID becomes the value's
  // newDport: inbound, the LAN host's own Call ID in place of the one the
  // engine gave the call outside; outbound, the key's (the server's Call
  // ID), which the rewrite skips as unchanged. newSport is unread.
  l.Place(kRewriteGre);
  rewrite(kOldSaddr, kNewSaddr, true, kIp + 12, -1, 0);
  rewrite(kOldDaddr, kNewDaddr, true, kIp + 16, -1, 0);
  rewrite(kOldDport, kNewDport, false, kGreCallId, -1, 0);
  l.Place(kRewritten);
  // TTL - 1, with the IP checksum over its 16-bit word (TTL, protocol).
  I(Ldx(BPF_W, 8, 10, kOldTtl));
  I(MovX(9, 8));
  I(FromBe(9, 16));
  I(Alu(BPF_ADD, 9, -(1 << 8)));
  I(FromBe(9, 16));  // back to network order
  I(MovX(1, 6));
  I(Mov(2, kIpCsum));
  I(MovX(3, 8));
  I(MovX(4, 9));
  I(Mov(5, 2));
  I(Call(BPF_FUNC_l3_csum_replace));
  l.Jump(jne, 0, 0, 0, kFailed);
  I(Stx(BPF_H, 10, 9, kTmp));
  I(MovX(1, 6));
  I(Mov(2, kIp + 8));
  I(MovX(3, 10));
  I(Alu(BPF_ADD, 3, kTmp));
  I(Mov(4, 2));
  I(Mov(5, 0));
  I(Call(BPF_FUNC_skb_store_bytes));
  l.Jump(jne, 0, 0, 0, kFailed);
  // 11 (before the counts, so that they count only what leaves). The
  // Ethernet header: the route's next hop, the egress device's address
  // (bpf_fib_lookup holds them smac first; two copies, no unaligned loads).
  for (auto [packetOff, field] : {std::pair<int32_t, size_t>{0, offsetof(bpf_fib_lookup, dmac)},
                                   std::pair<int32_t, size_t>{ETH_ALEN, offsetof(bpf_fib_lookup, smac)}}) {
    I(MovX(1, 6));
    I(Mov(2, packetOff));
    I(MovX(3, 10));
    I(Alu(BPF_ADD, 3, Fib(field)));
    I(Mov(4, ETH_ALEN));
    I(Mov(5, 0));
    I(Call(BPF_FUNC_skb_store_bytes));
    l.Jump(jne, 0, 0, 0, kFailed);
  }
  // 9. TCP's: the sender's end, for step 5: advanced when seq_end is past it.
  // Plain loads and stores: two CPUs forwarding the same direction at once
  // (the device's receive queues) may each store theirs, and the later
  // store may be the lower end. That loses a little progress only, which
  // the window absorbs and the next packet makes up.
  I(Ldx(BPF_W, 0, 10, kProto));
  l.Jump(jne, 0, 0, IPPROTO_TCP, kCounters);
  I(Ldx(BPF_W, 1, 10, kSeqEnd));
  I(Ldx(BPF_W, 2, 7, kFlags));
  I(MovX(3, 2));
  I(Alu(BPF_AND, 3, kEndKnown));
  l.Jump(jeq, 3, 0, 0, kStoreEnd);
  I(Ldx(BPF_W, 4, 7, kEnd));
  I(MovX(5, 1));
  I(Alu32X(BPF_SUB, 5, 4));
  l.Jump(BPF_JMP32 | BPF_JSLE | BPF_K, 5, 0, 0, kCounters);
  l.Place(kStoreEnd);
  I(Stx(BPF_W, 7, 1, kEnd));
  I(Mov(2, kEndKnown));
  I(AtomicOr(7, 2, kFlags));  // atomic: a kClosed another CPU sets meanwhile stays
  l.Place(kCounters);
  // 10. The flow's counts (one skb, a GSO super-packet too; its IP bytes) and ours.
  I(Mov(1, 1));
  I(AtomicAdd(7, 1, kPackets));
  I(Ldx(BPF_W, 1, 6, offsetof(__sk_buff, len)));
  I(Alu(BPF_ADD, 1, -kIp));
  I(AtomicAdd(7, 1, kBytes));
  Count(&p, statsFd, kForwarded);
  I(Ldx(BPF_W, 1, 10, Fib(offsetof(bpf_fib_lookup, ifindex))));
  I(Mov(2, 0));
  I(Call(BPF_FUNC_redirect));  // to that device's egress: TC_ACT_REDIRECT
  I(Exit());

  l.Place(kClose);
  I(Mov(1, kClosed));
  I(AtomicOr(7, 1, kFlags));
  l.Place(kPassClosed);
  Count(&p, statsFd, kPassedClose);
  I(Mov(0, TC_ACT_UNSPEC));
  I(Exit());
  l.Place(kDrop);
  Count(&p, statsFd, kOutOfWindow);
  I(Mov(0, TC_ACT_SHOT));
  I(Exit());
  l.Place(kFailed);
  Count(&p, statsFd, kRewriteFailed);
  I(Mov(0, TC_ACT_SHOT));
  I(Exit());
  l.Place(kPassOther);
  Count(&p, statsFd, kPassedOther);
  l.Place(kPass);
  I(Mov(0, TC_ACT_UNSPEC));
  I(Exit());
  l.Patch();
  return p;
}

namespace {

int MapCreate(bpf_map_type type, uint32_t keySize, uint32_t valueSize, uint32_t maxEntries, const char* name,
              uint32_t flags = 0) {
  union bpf_attr a;
  std::memset(&a, 0, sizeof a);
  a.map_type = type;
  a.map_flags = flags;
  a.key_size = keySize;
  a.value_size = valueSize;
  a.max_entries = maxEntries;
  std::memcpy(a.map_name, name, std::min(std::strlen(name), sizeof a.map_name - 1));
  return static_cast<int>(Bpf(BPF_MAP_CREATE, &a));
}

int LinkCreate(int progFd, int ifindex) {
  union bpf_attr a;
  std::memset(&a, 0, sizeof a);
  a.link_create.prog_fd = static_cast<uint32_t>(progFd);
  a.link_create.target_ifindex = static_cast<uint32_t>(ifindex);
  a.link_create.attach_type = kTcxIngress;
  // flags 0 and tcx.relative_fd / expected_revision 0 (the union after
  // `flags`, zeroed): appended after the device's other tcx programs.
  return static_cast<int>(Bpf(BPF_LINK_CREATE, &a));
}

// The running kernel is older than 6.6 (no tcx).
bool BeforeTcx(std::string* release) {
  utsname u{};
  if (uname(&u) != 0) return false;
  *release = u.release;
  int major = 0, minor = 0;
  if (std::sscanf(u.release, "%d.%d", &major, &minor) != 2) return false;
  return major < 6 || (major == 6 && minor < 6);
}

// The device's link type (ARPHRD_*), or -errno.
int LinkType(const std::string& dev) {
  int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -errno;
  ifreq ifr{};
  std::memcpy(ifr.ifr_name, dev.c_str(), std::min(dev.size(), sizeof ifr.ifr_name - 1));
  int rc = ioctl(fd, SIOCGIFHWADDR, &ifr) < 0 ? -errno : ifr.ifr_hwaddr.sa_family;
  close(fd);
  return rc;
}

int Fail(Handle* h, std::string* err, const std::string& what, int e) {
  *err = what;
  Close(h);
  return e;
}

}  // namespace

int Open(const std::string& lan, const std::string& wan, uint32_t maxFlows, Handle* h, std::string* err) {
  const std::string devs[2] = {lan, wan};
  int ifindex[2];
  for (int i = 0; i < 2; i++) {
    ifindex[i] = static_cast<int>(if_nametoindex(devs[i].c_str()));
    if (ifindex[i] == 0) return Fail(h, err, "flow fast path: no device " + devs[i], errno ? errno : ENODEV);
    // The program reads a 14-byte Ethernet header at skb->data and writes
    // one before the redirect: on a device without one (PPP, a TUN,
    // WireGuard: the IP header is at skb->data) it would take other bytes
    // for the addresses.
    int type = LinkType(devs[i]);
    if (type != ARPHRD_ETHER) {
      return Fail(h, err, "flow fast path: " + devs[i] + " is not an Ethernet device (link type " + std::to_string(type) + ")",
                  type < 0 ? -type : EINVAL);
    }
  }
  // Not preallocated: a preallocated table of 131,072 entries is about 15 MB
  // of kernel memory up front, which the 256 MiB image refused (ENOMEM); an
  // entry now takes memory while its flow lives, and an insert the kernel
  // cannot serve fails like a full table (the flow stays with the engine).
  // A deleted entry is also freed after an RCU grace period, not handed to
  // the next insert while a CPU may still be adding to its counts.
  h->flowsFd = MapCreate(BPF_MAP_TYPE_HASH, kKeyBytes, kValueBytes, maxFlows, "vpnmasq_flows", BPF_F_NO_PREALLOC);
  if (h->flowsFd < 0) return Fail(h, err, "flow fast path: table of " + std::to_string(maxFlows) + " flows (bpf hash map)", errno);
  h->statsFd = MapCreate(BPF_MAP_TYPE_PERCPU_ARRAY, 4, 8 * kStatCount, 1, "vpnmasq_fpstats");
  if (h->statsFd < 0) return Fail(h, err, "flow fast path: counters (bpf per-CPU array)", errno);
  std::string why;
  h->progFd = ebpf::LoadProgram(BPF_PROG_TYPE_SCHED_CLS, Program(h->flowsFd, h->statsFd), &why, "vpnmasq_fastpth");
  if (h->progFd < 0) {
    return Fail(h, err, "flow fast path: program load" + (why.empty() ? "" : " (" + why + ")"), errno);
  }
  for (int i = 0; i < 2; i++) {
    h->links[i] = LinkCreate(h->progFd, ifindex[i]);
    if (h->links[i] < 0) {
      int e = errno;
      std::string release;
      if (BeforeTcx(&release) && (e == EINVAL || e == EOPNOTSUPP || e == 524 /* the kernel's ENOTSUPP */)) {
        return Fail(h, err, "flow fast path needs tcx (Linux 6.6+; this is " + release + "), attaching to " + devs[i], e);
      }
      return Fail(h, err, "flow fast path: tcx ingress of " + devs[i] + " (bpf link)", e);
    }
  }
  return 0;
}

void Close(Handle* h) {
  for (int& fd : h->links) {
    if (fd >= 0) close(fd);
    fd = -1;
  }
  for (int* fd : {&h->progFd, &h->flowsFd, &h->statsFd}) {
    if (*fd >= 0) close(*fd);
    *fd = -1;
  }
}

// --- the addon's functions ---------------------------------------------------

namespace {

const char* ErrnoName(int e) {
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 32))
  if (const char* n = strerrorname_np(e)) return n;
#endif
  switch (e) {
    case EPERM: return "EPERM";
    case ENOENT: return "ENOENT";
    case EBADF: return "EBADF";
    case ENOMEM: return "ENOMEM";
    case EACCES: return "EACCES";
    case EEXIST: return "EEXIST";
    case ENODEV: return "ENODEV";
    case EINVAL: return "EINVAL";
    case E2BIG: return "E2BIG";
    case EOPNOTSUPP: return "EOPNOTSUPP";
  }
  return "EUNKNOWN";
}

// As addon.cc's: the message says what failed, err.code is the errno's name.
void ThrowErrno(Napi::Env env, int e, const std::string& what, const char* syscall = "bpf") {
  Napi::Error err = Napi::Error::New(env, what + ": " + std::strerror(e) + " (" + ErrnoName(e) + ")");
  err.Value().Set("code", ErrnoName(e));
  err.Value().Set("errno", e);
  err.Value().Set("syscall", syscall);
  err.ThrowAsJavaScriptException();
}

bool ArgInt(const Napi::CallbackInfo& info, size_t i, const char* name, double max, int64_t* out) {
  if (i >= info.Length() || !info[i].IsNumber()) {
    Napi::TypeError::New(info.Env(), std::string(name) + " must be a number").ThrowAsJavaScriptException();
    return false;
  }
  double d = info[i].As<Napi::Number>().DoubleValue();
  if (!(d >= 0) || d > max || std::floor(d) != d) {
    Napi::RangeError::New(info.Env(), std::string(name) + " must be an integer from 0 to " + std::to_string(static_cast<int64_t>(max)))
        .ThrowAsJavaScriptException();
    return false;
  }
  *out = static_cast<int64_t>(d);
  return true;
}

bool ArgFd(const Napi::CallbackInfo& info, size_t i, int* fd) {
  int64_t v;
  if (!ArgInt(info, i, "fd", INT32_MAX, &v)) return false;
  *fd = static_cast<int>(v);
  return true;
}

// A Buffer of exactly `len` bytes (any length when len is 0).
bool ArgBuffer(const Napi::CallbackInfo& info, size_t i, const char* name, size_t len, uint8_t** data, size_t* size) {
  if (i >= info.Length() || !info[i].IsBuffer()) {
    Napi::TypeError::New(info.Env(), std::string(name) + " must be a Buffer").ThrowAsJavaScriptException();
    return false;
  }
  auto b = info[i].As<Napi::Buffer<uint8_t>>();
  if (len != 0 && b.Length() != len) {
    Napi::RangeError::New(info.Env(), std::string(name) + " must be " + std::to_string(len) + " bytes, not " + std::to_string(b.Length()))
        .ThrowAsJavaScriptException();
    return false;
  }
  *data = b.Data();
  *size = b.Length();
  return true;
}

int MapOp(int cmd, int fd, const void* key, void* valueOrNext, uint64_t flags = 0) {
  union bpf_attr a;
  std::memset(&a, 0, sizeof a);
  a.map_fd = static_cast<uint32_t>(fd);
  a.key = reinterpret_cast<uintptr_t>(key);
  if (cmd == BPF_MAP_GET_NEXT_KEY) a.next_key = reinterpret_cast<uintptr_t>(valueOrNext);
  else a.value = reinterpret_cast<uintptr_t>(valueOrNext);
  a.flags = flags;
  return Bpf(cmd, &a) == 0 ? 0 : errno;
}

// The possible CPUs: a per-CPU map's value holds one copy for each
// (kernel/bpf: for_each_possible_cpu), 8-byte aligned. From
// /sys/devices/system/cpu/possible ("0-3", "0,2-5"): how many, and room for
// at least one more than the highest (so that a misread list can never let
// the kernel write past the buffer).
struct Cpus {
  int count = 0;
  int room = 0;
};

Cpus PossibleCpus() {
  static Cpus cached;
  if (cached.count > 0) return cached;
  int n = 0, highest = -1;
  if (FILE* f = std::fopen("/sys/devices/system/cpu/possible", "re")) {
    char buf[4096] = {};
    size_t got = std::fread(buf, 1, sizeof buf - 1, f);
    std::fclose(f);
    buf[got] = '\0';
    for (char* s = buf; *s && *s != '\n';) {
      char* end;
      long a = std::strtol(s, &end, 10);
      if (end == s) break;
      long b = a;
      if (*end == '-') b = std::strtol(end + 1, &end, 10);
      if (b >= a) {
        n += static_cast<int>(b - a + 1);
        highest = std::max(highest, static_cast<int>(b));
      }
      s = *end == ',' ? end + 1 : end;
    }
  }
  const int conf = static_cast<int>(sysconf(_SC_NPROCESSORS_CONF));
  if (n <= 0) n = conf > 0 ? conf : 1;
  cached.count = n;
  cached.room = std::max({n, highest + 1, conf});
  return cached;
}

}  // namespace

// fastPathOpen(lanIfname, wanIfname, maxFlows) -> { flowsFd, statsFd, progFd, links: [lan, wan] }
Napi::Value NapiOpen(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsString() || !info[1].IsString()) {
    Napi::TypeError::New(env, "lanIfname and wanIfname must be strings").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  int64_t maxFlows;
  if (!ArgInt(info, 2, "maxFlows", 1 << 24, &maxFlows)) return env.Undefined();
  if (maxFlows < 1) {
    Napi::RangeError::New(env, "maxFlows must be at least 1").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  Handle h;
  std::string err;
  int e = Open(info[0].As<Napi::String>().Utf8Value(), info[1].As<Napi::String>().Utf8Value(),
               static_cast<uint32_t>(maxFlows), &h, &err);
  if (e != 0) {
    ThrowErrno(env, e, err);
    return env.Undefined();
  }
  Napi::Object o = Napi::Object::New(env);
  o.Set("flowsFd", h.flowsFd);
  o.Set("statsFd", h.statsFd);
  o.Set("progFd", h.progFd);
  Napi::Array links = Napi::Array::New(env, 2);
  links.Set(0u, h.links[0]);
  links.Set(1u, h.links[1]);
  o.Set("links", links);
  return o;
}

// fastPathClose(handle): links first (the program detaches), then the
// program and the maps; the handle's fds become -1, so a second call does
// nothing (and closes no fd that has been reused since).
Napi::Value NapiClose(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsObject()) {
    Napi::TypeError::New(env, "handle must be what fastPathOpen returned").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  Napi::Object o = info[0].As<Napi::Object>();
  auto take = [](Napi::Object obj, const char* key) {
    Napi::Value v = obj.Get(key);
    int fd = v.IsNumber() ? v.As<Napi::Number>().Int32Value() : -1;
    obj.Set(key, -1);
    return fd;
  };
  Napi::Value links = o.Get("links");
  if (links.IsArray()) {
    Napi::Array a = links.As<Napi::Array>();
    for (uint32_t i = 0; i < a.Length(); i++) {
      Napi::Value v = a.Get(i);
      int fd = v.IsNumber() ? v.As<Napi::Number>().Int32Value() : -1;
      a.Set(i, -1);
      if (fd >= 0) close(fd);
    }
  }
  for (const char* key : {"progFd", "flowsFd", "statsFd"}) {
    int fd = take(o, key);
    if (fd >= 0) close(fd);
  }
  return env.Undefined();
}

// fastPathPut(flowsFd, key: Buffer(16), value: Buffer(48)): BPF_ANY.
Napi::Value NapiPut(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd;
  uint8_t *key, *value;
  size_t n;
  if (!ArgFd(info, 0, &fd) || !ArgBuffer(info, 1, "key", kKeyBytes, &key, &n) ||
      !ArgBuffer(info, 2, "value", kValueBytes, &value, &n)) {
    return env.Undefined();
  }
  uint32_t win;
  std::memcpy(&win, value + kWin, 4);
  if (win > 0x7fffffffu) {  // the program compares it as an s32
    Napi::RangeError::New(env, "value's win must be below 2^31").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  int e = MapOp(BPF_MAP_UPDATE_ELEM, fd, key, value, BPF_ANY);
  if (e == E2BIG) ThrowErrno(env, e, "flow fast path table full");
  else if (e != 0) ThrowErrno(env, e, "flow fast path: table update");
  return env.Undefined();
}

// A keyed table operation's answer: true, false when the key is not there
// (ENOENT), or a thrown error naming `what`.
Napi::Value Found(Napi::Env env, int e, const char* what) {
  if (e == ENOENT) return Napi::Boolean::New(env, false);
  if (e != 0) {
    ThrowErrno(env, e, what);
    return env.Undefined();
  }
  return Napi::Boolean::New(env, true);
}

// fastPathDelete(flowsFd, key) -> false when it was not there.
Napi::Value NapiDelete(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd;
  uint8_t* key;
  size_t n;
  if (!ArgFd(info, 0, &fd) || !ArgBuffer(info, 1, "key", kKeyBytes, &key, &n)) return env.Undefined();
  return Found(env, MapOp(BPF_MAP_DELETE_ELEM, fd, key, nullptr), "flow fast path: table delete");
}

// fastPathGet(flowsFd, key, out: Buffer(48)) -> false when it is not there.
Napi::Value NapiGet(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd;
  uint8_t *key, *out;
  size_t n;
  if (!ArgFd(info, 0, &fd) || !ArgBuffer(info, 1, "key", kKeyBytes, &key, &n) ||
      !ArgBuffer(info, 2, "out", kValueBytes, &out, &n)) {
    return env.Undefined();
  }
  return Found(env, MapOp(BPF_MAP_LOOKUP_ELEM, fd, key, out), "flow fast path: table lookup");
}

// fastPathKeys(flowsFd, out: Buffer) -> how many keys it wrote (at most
// out.length / 16). A walk with BPF_MAP_GET_NEXT_KEY: when the key it
// stands on is deleted meanwhile (userland withdrawing a flow, elsewhere),
// the kernel's hash map starts over from its first key; keys already
// written are skipped, so each key is written once. A key added during the
// walk may be missed.
Napi::Value NapiKeys(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd;
  uint8_t* out;
  size_t size;
  if (!ArgFd(info, 0, &fd) || !ArgBuffer(info, 1, "out", 0, &out, &size)) return env.Undefined();
  const size_t capacity = size / kKeyBytes;
  std::unordered_set<std::string> seen;
  uint8_t cur[kKeyBytes], next[kKeyBytes];
  bool first = true;
  size_t count = 0;
  // Bounded even if deletions kept sending the walk back to the start.
  for (size_t steps = 0; count < capacity && steps < 16 * (capacity + 64); steps++) {
    int e = MapOp(BPF_MAP_GET_NEXT_KEY, fd, first ? nullptr : cur, next);
    if (e == ENOENT) break;
    if (e != 0) {
      ThrowErrno(env, e, "flow fast path: table walk");
      return env.Undefined();
    }
    first = false;
    std::memcpy(cur, next, kKeyBytes);
    if (!seen.emplace(reinterpret_cast<const char*>(next), kKeyBytes).second) continue;
    std::memcpy(out + count * kKeyBytes, next, kKeyBytes);
    count++;
  }
  return Napi::Number::New(env, static_cast<double>(count));
}

// fastPathReadBatch(flowsFd, token: Buffer(8), first, keys: Buffer, values:
// Buffer) -> { count, done }: the next entries of a walk of the whole table
// (BPF_MAP_LOOKUP_BATCH, Linux 5.6+: below tcx's 6.6), keys and values side
// by side, as many as both buffers hold. `first` starts the walk; `token`
// carries where it stands from call to call (the kernel's bucket index).
// One system call for up to thousands of entries where a lookup each costs
// one: a sync of a full table (131,072 entries) took 0.45 s one by one. The
// kernel hands over whole buckets only: a bucket larger than the buffers
// (never, with room for a few hundred) is ENOSPC, thrown. An entry added or
// deleted during the walk may be missed or not, as with the key walk.
Napi::Value NapiReadBatch(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd;
  uint8_t *token, *keys, *values;
  size_t n, keysSize, valuesSize;
  if (!ArgFd(info, 0, &fd) || !ArgBuffer(info, 1, "token", 8, &token, &n)) return env.Undefined();
  if (info.Length() < 3 || !info[2].IsBoolean()) {
    Napi::TypeError::New(env, "first must be a boolean").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  const bool first = info[2].As<Napi::Boolean>().Value();
  if (!ArgBuffer(info, 3, "keys", 0, &keys, &keysSize) || !ArgBuffer(info, 4, "values", 0, &values, &valuesSize)) {
    return env.Undefined();
  }
  const size_t room = std::min(keysSize / kKeyBytes, valuesSize / kValueBytes);
  if (room == 0) {
    Napi::RangeError::New(env, "keys and values must hold at least one entry").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  uint8_t next[8] = {};
  union bpf_attr a;
  std::memset(&a, 0, sizeof a);
  a.batch.in_batch = first ? 0 : reinterpret_cast<uintptr_t>(token);
  a.batch.out_batch = reinterpret_cast<uintptr_t>(next);
  a.batch.keys = reinterpret_cast<uintptr_t>(keys);
  a.batch.values = reinterpret_cast<uintptr_t>(values);
  a.batch.count = static_cast<uint32_t>(std::min<size_t>(room, UINT32_MAX));
  a.batch.map_fd = static_cast<uint32_t>(fd);
  const int e = Bpf(BPF_MAP_LOOKUP_BATCH, &a) == 0 ? 0 : errno;
  if (e != 0 && e != ENOENT) {  // ENOENT: the walk's end (with the last entries, or none)
    ThrowErrno(env, e, e == ENOSPC ? "flow fast path: a table bucket larger than the batch" : "flow fast path: table batch read");
    return env.Undefined();
  }
  std::memcpy(token, next, sizeof next);
  Napi::Object o = Napi::Object::New(env);
  o.Set("count", static_cast<double>(a.batch.count));
  o.Set("done", e == ENOENT);
  return o;
}

// fastPathStats(statsFd) -> the 8 counters, summed over the CPUs.
Napi::Value NapiStats(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd;
  if (!ArgFd(info, 0, &fd)) return env.Undefined();
  const Cpus cpus = PossibleCpus();
  std::vector<uint64_t> values(static_cast<size_t>(cpus.room) * kStatCount);  // each CPU's 64 bytes
  uint32_t zero = 0;
  int e = MapOp(BPF_MAP_LOOKUP_ELEM, fd, &zero, values.data());
  if (e != 0) {
    ThrowErrno(env, e, "flow fast path: counters");
    return env.Undefined();
  }
  Napi::Array sums = Napi::Array::New(env, kStatCount);
  for (uint32_t i = 0; i < kStatCount; i++) {
    uint64_t s = 0;
    for (int c = 0; c < cpus.count; c++) s += values[static_cast<size_t>(c) * kStatCount + i];
    sums.Set(i, Napi::Number::New(env, static_cast<double>(s)));
  }
  return sums;
}

}  // namespace fastpath
