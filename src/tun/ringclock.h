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

namespace ringclock {

// Stamp slots, a power of two: 16 times the default txqueuelen. A reader
// more than this many packets behind the stamps (a deeper ring, or drift
// from tail drops) finds its stamp overwritten and falls back to the
// ring-empty bound until the ring next empties.
constexpr uint32_t kSlots = 16384;

// Which GSO packets reach the ring as segments, by the TUN's offloads:
// kOne none (TSO and USO taken whole), kAll every one (no TSO: a plain TUN),
// kUdp UDP ones (TSO but no USO, kernels before 6.2).
enum class Segs : int { kOne = 0, kAll = 1, kUdp = 2 };

struct Clock {
  // [0] ring entries numbered so far; for a packet numbered seq, at slot =
  // seq & (kSlots - 1): [1 + 2 slot] its time, [2 + 2 slot] the ring
  // entries it makes (1, or its segments).
  const volatile uint64_t* mem = nullptr;
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
int Attach(const std::string& ifname, Segs segs, std::string* err, int* errnum);

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
