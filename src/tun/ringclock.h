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

// Stamp slots, a power of two: 16 times the default txqueuelen. A reader
// more than this many packets behind the stamps (a deeper ring, or drift
// from tail drops) finds its stamp overwritten and falls back to the
// ring-empty bound until the ring next empties.
constexpr uint32_t kSlots = 16384;
// Up to 16 host queues (each then has 1024 stamp slots: its ring's 1000 entries fit).
constexpr uint32_t kMaxQueueBits = 4;

// Which GSO packets reach the ring as segments, by the TUN's offloads:
// kOne none (TSO and USO taken whole), kAll every one (no TSO: a plain TUN),
// kUdp UDP ones (TSO but no USO, kernels before 6.2).
enum class Segs : int { kOne = 0, kAll = 1, kUdp = 2 };

// With host queues (a multi-queue TUN whose steering program puts each IPv4
// source address on queue hostqueue::HostQueue, below) the program computes
// the same queue and numbers each queue's packets on their own.
struct Clock {
  // [q] ring entries of queue q numbered so far (q < queues); then the
  // stamp slots: a packet of queue q numbered seq has the slot idx = q *
  // slotsPerQueue + seq % slotsPerQueue, [queues + 2 idx] its time and
  // [queues + 2 idx + 1] the ring entries it makes (1, or its segments).
  // With one queue that is [0] the count, [1 + 2 slot], [2 + 2 slot].
  const volatile uint64_t* mem = nullptr;
  uint32_t queues = 1;
  uint32_t slotsPerQueue = kSlots;
  uint64_t Stamped(uint32_t q) const { return __atomic_load_n(&mem[q], __ATOMIC_ACQUIRE); }
  // The slot of queue q's packet numbered seq: its time at [0], its entries at [1].
  const volatile uint64_t* Slot(uint32_t q, uint64_t seq) const {
    return mem + queues + 2 * (q * static_cast<uint64_t>(slotsPerQueue) + (seq & (slotsPerQueue - 1)));
  }
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
// queueBits: the device's queues are 1 << queueBits (0: one ring), steered
// by source address (below); at most kMaxQueueBits.
int Attach(const std::string& ifname, Segs segs, uint32_t queueBits, std::string* err, int* errnum);

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
// TUN is opened with IFF_MULTI_QUEUE and a steering program
// (TUNSETSTEERINGEBPF) puts each packet on the queue of its IPv4 source
// address; the reader takes the queues round-robin, one packet each in
// turn, and runs CoDel on each queue of its own (fq_codel's idea, per host
// rather than per flow: cake's host isolation). A host keeps its order
// (one queue), and its flood fills only its own ring.
//
// The queue is a multiplicative (Fibonacci) hash of the source address, so
// neighbouring addresses spread over the queues. Not IPv4, or a packet
// shorter than its addresses: queue 0. The same instructions run in the
// steering program and in the ring clock's, which must
// number each queue's packets on their own and so must agree with the
// steering exactly.

namespace hostqueue {

constexpr uint32_t kHashMul = 0x9E3779B1u;

// The queue of an IPv4 source address (host byte order) among 1 << bits.
inline uint32_t HostQueue(uint32_t saddr, uint32_t bits) {
  return bits == 0 ? 0 : (saddr * kHashMul) >> (32 - bits);
}

// Appends instructions that leave HostQueue(saddr, bits) in r0, reading the
// packet with BPF_LD_ABS (r6 must hold the context; r1-r5 are clobbered).
void EmitQueue(std::vector<bpf_insn>* p, uint32_t bits);

// Loads the steering program for 1 << bits queues and sets it on the TUN
// fd (TUNSETSTEERINGEBPF). 0, or the errno (*err says which step).
int Steer(int tunFd, uint32_t bits, std::string* err);

// Takes the steering program off the device again (a persistent TUN keeps it otherwise).
void Unsteer(int tunFd);

}  // namespace hostqueue
