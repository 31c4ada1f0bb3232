// The ring clock: when did the packet a TUN read returns enter the ring?
//
// A TUN ring says nothing about time, so the reader queue (addon.cc) could
// only bound a packet's sojourn by "time since the ring was last empty",
// which under several TCP senders stays above any target while each packet
// waits far less, and CoDel then drops for nothing. Here a tiny eBPF program
// on the device's egress hook (tc clsact, before the qdisc and the ring)
// numbers every packet handed to the device and writes its arrival time
// (CLOCK_MONOTONIC) into an array map that this process has mmap'ed: the
// n-th packet read since the ring was last empty is the n-th stamped, so its
// sojourn is one subtraction, with no system call on the packet path.
//
// A GSO packet the device cannot take whole is cut into segments after the
// hook, so one stamp stands for several ring entries: the program adds the
// packet's gso_segs to the numbering and keeps it beside the stamp, and the
// reader gives that many entries the one stamp. Which GSO packets the kernel
// cuts follows from the TUN's offloads (Segs below).
//
// Numbering drifts only when the kernel drops at the full ring's tail (a
// stamped packet that never reaches a read): the reader then takes an older
// stamp, overestimating the wait while the ring is full (the right side to
// err on there), and realigns whenever a read finds the ring empty.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <linux/bpf.h>

namespace ringclock {

// Stamp slots, a power of two: 32 times the default txqueuelen, so that
// each of the most rings (kMaxQueueBits) has room for a full ring. A reader
// more than slotsPerQueue packets behind the stamps (a deeper ring, or drift
// from tail drops) finds its stamp overwritten and falls back to the
// ring-empty bound until the ring next empties.
constexpr uint32_t kSlots = 32768;
// Up to 16 host queues, each of two rings (below: sparse flows): 32 rings,
// each with 1024 stamp slots (its ring's 1000 entries fit).
constexpr uint32_t kMaxHostBits = 4;
constexpr uint32_t kMaxQueueBits = kMaxHostBits + 1;
// Flow buckets per host queue: where the clock program keeps, per flow
// hash, which ring the flow's last packet went to and its number there.
constexpr uint32_t kFlowBits = 8;
// Unread entries a sparse ring may hold; a packet that would be the next
// goes to the bulk ring.
constexpr uint32_t kSparseMax = 16;
// How long a flow must have sent nothing to be sparse: its packets of the
// last millisecond (a bulk flow the reader just caught up with) go to the
// bulk ring, where any of them still on its way into the ring waits.
constexpr uint32_t kSparseIdleNs = 1000000;
// Turns in a row a host queue gives its sparse ring while its bulk ring
// has packets; then one turn goes to the bulk ring (hostqueue below).
constexpr uint32_t kSparseTurns = 8;

// What a device's host queues are keyed by (hostqueue below). kLan: the
// LAN TUN's, a LAN host's IPv4 source address, each host queue a bulk and
// a sparse ring. kRemote: the WAN TUN's, an internet host's source address
// and the IPv4 protocol, one ring each: a download's data waits in its
// server's TCP ring, and a ping's reply, a DNS answer or another server's
// packets each in their own, read in turn.
enum class HostKey : int { kLan = 0, kRemote = 1 };

// Which GSO packets reach the ring as segments, by the TUN's offloads:
// kOne none (TSO and USO taken whole), kAll every one (no TSO: a plain TUN),
// kUdp UDP ones (TSO but no USO, kernels before 6.2).
enum class Segs : int { kOne = 0, kAll = 1, kUdp = 2 };

// With host queues (hostqueue below) the program also picks the packet's
// ring: it computes the source's host queue h, and a flow with nothing
// unread in the rings goes to h's sparse ring, any other packet to h's bulk
// ring; it tells the steering program so through skb->queue_mapping (the
// egress hook runs just before the kernel picks the ring), and numbers each
// ring's packets on their own. The reader publishes how far it has read
// each ring (Consumed), which is how the program knows a flow's last packet
// was read.
struct Clock {
  // [q] ring entries of queue q numbered so far (q < queues); then the
  // stamp slots: a packet of queue q numbered seq has the slot idx = q *
  // slotsPerQueue + seq % slotsPerQueue, [queues + 2 idx] its time and
  // [queues + 2 idx + 1] the ring entries it makes (1, or its segments).
  // With one queue that is [0] the count, [1 + 2 slot], [2 + 2 slot].
  // At fixed places after the largest such layout: [kPosWord + q] the ring
  // entries of queue q read so far (kPosUnknown until the reader's numbering
  // is aligned), and from kBucketWord the flow buckets (ringclock.cc).
  volatile uint64_t* mem = nullptr;
  uint32_t queues = 1;
  // Host queues: queues = 2 hosts (bulk ring h, sparse ring hosts + h), else 1 (one ring).
  uint32_t hosts = 1;
  uint32_t slotsPerQueue = kSlots;
  uint64_t Stamped(uint32_t q) const { return __atomic_load_n(&mem[q], __ATOMIC_ACQUIRE); }
  // The slot of queue q's packet numbered seq: its time at [0], its entries at [1].
  const volatile uint64_t* Slot(uint32_t q, uint64_t seq) const {
    return mem + queues + 2 * (q * static_cast<uint64_t>(slotsPerQueue) + (seq & (slotsPerQueue - 1)));
  }
  static constexpr uint64_t kPosUnknown = 1ull << 63;
  static constexpr size_t kPosWord = (1u << kMaxQueueBits) + 2 * static_cast<size_t>(kSlots);
  static constexpr size_t kBucketWord = kPosWord + (1u << kMaxQueueBits);
  // Ring q has been read up to (not including) the entry numbered pos.
  void Consumed(uint32_t q, uint64_t pos) const { __atomic_store_n(&mem[kPosWord + q], pos, __ATOMIC_RELEASE); }
  size_t mapBytes = 0;
  int mapFd = -1;
  int progFd = -1;
  int ifindex = 0;
  bool madeClsact = false;
  // Attach found a killed predecessor's filter on an existing clsact.
  bool adoptedClsact = false;
};

// Loads the program, attaches it to `ifname`'s egress, maps its stamps.
// Returns an id >= 0, or -1 with *err set (errno in *errnum: EPERM without
// CAP_BPF, ENOENT/EOPNOTSUPP for a kernel without clsact or cls_bpf, ...).
// hostBits: 0, one ring; else 1 << hostBits host queues, steered as
// hostqueue says by `key`: with HostKey::kLan two rings each (the device
// has 2 << hostBits), with kRemote one. At most kMaxHostBits.
int Attach(const std::string& ifname, Segs segs, uint32_t hostBits, HostKey key, std::string* err, int* errnum);

// Removes the filter (and the clsact qdisc if Attach added it, or if it
// took over a killed predecessor's filter and no other filter is left on
// it), unmaps.
void Detach(int id);

// The clock of id, or nullptr. Valid until Detach(id).
const Clock* Get(int id);

// What the qdisc filter is called in `tc filter show dev X egress`.
constexpr const char* kFilterName = "vpnmasq_ringclock";
// Its priority: high enough to run after an operator's own filters.
constexpr uint16_t kFilterPrio = 0xfff0;

}  // namespace ringclock

// Host queues: which ring of a multi-queue LAN TUN a packet waits in.
//
// One ring shared by every LAN host is one FIFO: a host that floods it (or
// bulk TCP that fills it) makes every other host's packets wait behind its
// own, and lose them at the full ring's tail. With host queues the inside
// TUN is opened with IFF_MULTI_QUEUE and each packet waits in a ring of its
// IPv4 source address's host queue; the reader takes the host queues
// round-robin, one packet each in turn, and runs CoDel on each ring of its
// own (fq_codel's idea, per host rather than per flow: cake's host
// isolation). A host's flood fills only its own rings.
//
// Each host queue has two rings, so that a host's own sparse flows do not
// wait behind its own bulk ones either (fq_codel's new-flow queue, with the
// flows of one host): a packet whose flow has nothing unread in either ring
// goes to the sparse ring (if it sent nothing for kSparseIdleNs, and while
// the ring holds fewer than kSparseMax), every
// other packet to the bulk ring, and the reader takes the host's turn from
// the sparse ring first, but after kSparseTurns such turns in a row while
// the bulk ring has packets gives one to the bulk ring: a stream of new
// flows (a scan, DHT lookups, from this host or another hashed to the same
// host queue) cannot starve the bulk ring. A flow's packets keep their
// order but for those turns: a packet goes to the sparse ring only when
// every earlier packet of its flow has been read, so only the flow's later
// packets, in the bulk ring, can overtake it, and only at such a turn,
// which needs kSparseTurns sparse packets read in a row while the bulk
// ring waited (a ping, a DNS query, the first segment after a pause do not
// make that: a stream of new flows does); and as a sparse ring holds at
// most kSparseMax = 2 kSparseTurns, by at most 2 packets. A flow is its IPv4
// destination and protocol, and for TCP that is not a fragment its ports.
// Not UDP's: a host's ESP-in-UDP (NAT-T) to a server mixes fragments,
// which carry no ports, with whole datagrams, and all of them must keep
// their order (the receiver's replay window drops an ESP packet overtaken
// by more than its width). It is hashed into
// one of 1 << kFlowBits buckets of its host queue, and flows sharing a
// bucket are one flow for this purpose (bulk sooner, never reordered). Not
// IPv4: the bulk ring of host queue 0.
//
// The host queue is a multiplicative (Fibonacci) hash of the source
// address, so neighbouring addresses spread over the queues. The ring
// clock's program (ringclock.cc) decides the ring, as the flow's state is
// there, and hands it to the steering program in skb->queue_mapping
// (kSteerMark | ring); a packet that bypassed the egress hook (a packet
// socket's) is steered to its host's bulk ring by the same hash.

namespace hostqueue {

constexpr uint32_t kHashMul = 0x9E3779B1u;

// The queue of an IPv4 source address (host byte order) among 1 << bits.
inline uint32_t HostQueue(uint32_t saddr, uint32_t bits) {
  return bits == 0 ? 0 : (saddr * kHashMul) >> (32 - bits);
}

// The WAN TUN's (ringclock::HostKey::kRemote): the source address's host
// queue, moved on by protocol + (protocol >> 3). One server's packets of one
// protocol keep their order (a TCP download's, an IPsec peer's ESP, its
// NAT-T datagrams with their fragments: every fragment carries the
// protocol), and its ICMP, TCP, UDP, GRE and ESP (1, 6, 17, 47, 50: moved
// on by 1, 6, 19, 52, 56) sit on five different queues of 8 or 16: a
// download's data and a ping's reply from the same server never share one.
inline uint32_t RemoteQueue(uint32_t saddr, uint32_t protocol, uint32_t bits) {
  return bits == 0 ? 0 : (HostQueue(saddr, bits) + protocol + (protocol >> 3)) & ((1u << bits) - 1);
}

// Appends instructions that leave HostQueue(saddr, bits), or with kRemote
// RemoteQueue(saddr, protocol, bits), in r0, reading the packet with
// BPF_LD_ABS (r6 must hold the context; r1-r5 and r8 are clobbered).
void EmitQueue(std::vector<bpf_insn>* p, uint32_t bits, ringclock::HostKey key);

// What the ring clock's program ORs into skb->queue_mapping with the ring
// it chose (a forwarded packet's queue_mapping holds its receive queue + 1,
// far below): the steering program takes the ring from there.
constexpr uint32_t kSteerMark = 0x4000;

// Loads the steering program for 1 << bits host queues keyed by `key`
// (with kLan 2 << bits rings, with kRemote 1 << bits) and sets it on the
// TUN fd (TUNSETSTEERINGEBPF). 0, or the errno (*err
// says which step).
int Steer(int tunFd, uint32_t bits, ringclock::HostKey key, std::string* err);

// Takes the steering program off the device again (a persistent TUN keeps it otherwise).
void Unsteer(int tunFd);

}  // namespace hostqueue
