// The ring clock (ringclock.h says what and why). Plain C++ over the bpf(2)
// system call and rtnetlink: no libbpf, no compiler for BPF; the program is
// a few dozen instructions written out below.
#include "ringclock.h"

#include "bpf.h"

#include <cerrno>
#include <cstddef>
#include <cstring>
#include <mutex>
#include <vector>

#include <arpa/inet.h>
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/if_tun.h>
#include <linux/netlink.h>
#include <linux/pkt_cls.h>
#include <linux/pkt_sched.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

namespace ringclock {

// The shared helpers (bpf.h), also as ringclock:: for hostqueue below.
using ebpf::Bpf;
using ebpf::Insn;
using ebpf::Labels;
using ebpf::LoadProgram;

namespace {

// Room for the largest layout: kMaxQueueBits queues' counts, then the slots,
// the read positions and the flow buckets, and one more bucket that packets
// that are not IPv4 write to (they are not in any flow's).
constexpr uint32_t kBuckets = 1u << (kMaxHostBits + kFlowBits);
constexpr size_t kValueBytes = 8 * (Clock::kBucketWord + 2 * (kBuckets + 1));  // two words a bucket

// The 64-bit load of a pointer into the map's value: its second half's imm is the byte offset.
void ValueAt(std::vector<bpf_insn>* p, int mapFd, uint8_t reg, int32_t offset) {
  p->push_back(Insn(BPF_LD | BPF_DW | BPF_IMM, reg, BPF_PSEUDO_MAP_VALUE, 0, mapFd));
  p->push_back(Insn(0, 0, 0, 0, offset));
}

// The ring of the packet in r6's context, with host queues (hostqueue in
// ringclock.h), r9 holding its host queue h on entry and its ring on exit;
// the address of its flow's bucket is left at r10 - 8 for EmitRecord, and
// the time at r10 - 16. r7, r8 and r0-r5 are clobbered. A flow's bucket
// holds (its last packet's ring + 1) << 32 | the 32 low bits of that ring's
// entry number after it (0: no packet yet), then that packet's time; the
// flow has a packet unread when that number is past the ring's read
// position, or the position is not known yet.
void EmitRing(std::vector<bpf_insn>* p, int mapFd, uint32_t hostBits) {
  const int32_t hosts = 1 << hostBits;
  enum { kNotIp, kHash, kBucket, kBulk, kSparse, kChosen, kCount };
  Labels l(p, kCount);
  p->push_back(Insn(BPF_JMP | BPF_CALL, 0, 0, 0, BPF_FUNC_ktime_get_ns));
  p->push_back(Insn(BPF_STX | BPF_DW | BPF_MEM, 10, 0, -16, 0));  // now, for the flow's idle time and EmitRecord
  p->push_back(Insn(BPF_LD | BPF_B | BPF_ABS, 0, 0, 0, 0));
  p->push_back(Insn(BPF_ALU | BPF_RSH | BPF_K, 0, 0, 0, 4));
  l.Jump(BPF_JMP | BPF_JNE | BPF_K, 0, 0, 4, kNotIp);
  p->push_back(Insn(BPF_LD | BPF_W | BPF_ABS, 0, 0, 0, 16));  // daddr
  p->push_back(Insn(BPF_ALU64 | BPF_MOV | BPF_X, 8, 0, 0, 0));
  p->push_back(Insn(BPF_LD | BPF_B | BPF_ABS, 0, 0, 0, 9));   // protocol
  p->push_back(Insn(BPF_ALU64 | BPF_MOV | BPF_X, 7, 0, 0, 0));
  p->push_back(Insn(BPF_ALU | BPF_LSH | BPF_K, 0, 0, 0, 24));
  p->push_back(Insn(BPF_ALU | BPF_XOR | BPF_X, 8, 0, 0, 0));
  p->push_back(Insn(BPF_LD | BPF_H | BPF_ABS, 0, 0, 0, 6));   // fragment offset and MF
  p->push_back(Insn(BPF_ALU | BPF_AND | BPF_K, 0, 0, 0, 0x3fff));
  l.Jump(BPF_JMP | BPF_JNE | BPF_K, 0, 0, 0, kHash);
  l.Jump(BPF_JMP | BPF_JNE | BPF_K, 7, 0, IPPROTO_TCP, kHash);
  p->push_back(Insn(BPF_LD | BPF_B | BPF_ABS, 0, 0, 0, 0));
  p->push_back(Insn(BPF_ALU | BPF_AND | BPF_K, 0, 0, 0, 15));
  p->push_back(Insn(BPF_ALU | BPF_LSH | BPF_K, 0, 0, 0, 2));
  p->push_back(Insn(BPF_ALU64 | BPF_MOV | BPF_X, 7, 0, 0, 0));
  // A load past the packet would end the program there (no stamp, no ring):
  // a TCP header too short for its ports is hashed without them.
  p->push_back(Insn(BPF_LDX | BPF_W | BPF_MEM, 1, 6, offsetof(__sk_buff, len), 0));
  p->push_back(Insn(BPF_ALU64 | BPF_MOV | BPF_X, 2, 7, 0, 0));
  p->push_back(Insn(BPF_ALU64 | BPF_ADD | BPF_K, 2, 0, 0, 4));
  l.Jump(BPF_JMP | BPF_JGT | BPF_X, 2, 1, 0, kHash);
  p->push_back(Insn(BPF_LD | BPF_W | BPF_IND, 0, 7, 0, 0));   // both ports
  p->push_back(Insn(BPF_ALU | BPF_MUL | BPF_K, 0, 0, 0, static_cast<int32_t>(0x85EBCA6Bu)));
  p->push_back(Insn(BPF_ALU | BPF_XOR | BPF_X, 8, 0, 0, 0));
  l.Place(kHash);
  p->push_back(Insn(BPF_ALU | BPF_MUL | BPF_K, 8, 0, 0, static_cast<int32_t>(hostqueue::kHashMul)));
  p->push_back(Insn(BPF_ALU | BPF_RSH | BPF_K, 8, 0, 0, 32 - static_cast<int32_t>(kFlowBits)));
  p->push_back(Insn(BPF_ALU64 | BPF_MOV | BPF_X, 7, 9, 0, 0));
  p->push_back(Insn(BPF_ALU64 | BPF_LSH | BPF_K, 7, 0, 0, kFlowBits));
  p->push_back(Insn(BPF_ALU64 | BPF_OR | BPF_X, 7, 8, 0, 0));
  p->push_back(Insn(BPF_ALU64 | BPF_AND | BPF_K, 7, 0, 0, static_cast<int32_t>(kBuckets - 1)));
  p->push_back(Insn(BPF_ALU64 | BPF_MOV | BPF_K, 8, 0, 0, 0));  // r8 = 0: look the flow up
  l.Jump(BPF_JMP | BPF_JA, 0, 0, 0, kBucket);
  l.Place(kNotIp);
  p->push_back(Insn(BPF_ALU64 | BPF_MOV | BPF_K, 7, 0, 0, static_cast<int32_t>(kBuckets)));
  p->push_back(Insn(BPF_ALU64 | BPF_MOV | BPF_K, 8, 0, 0, 1));  // r8 = 1: bulk, no flow
  l.Place(kBucket);
  ValueAt(p, mapFd, 2, static_cast<int32_t>(8 * Clock::kBucketWord));
  p->push_back(Insn(BPF_ALU64 | BPF_LSH | BPF_K, 7, 0, 0, 4));
  p->push_back(Insn(BPF_ALU64 | BPF_ADD | BPF_X, 2, 7, 0, 0));
  p->push_back(Insn(BPF_STX | BPF_DW | BPF_MEM, 10, 2, -8, 0));
  l.Jump(BPF_JMP | BPF_JNE | BPF_K, 8, 0, 0, kBulk);
  p->push_back(Insn(BPF_LDX | BPF_DW | BPF_MEM, 3, 2, 0, 0));
  p->push_back(Insn(BPF_ALU64 | BPF_MOV | BPF_X, 0, 9, 0, 0));
  p->push_back(Insn(BPF_ALU64 | BPF_ADD | BPF_K, 0, 0, 0, hosts));  // the sparse ring, unless:
  l.Jump(BPF_JMP | BPF_JEQ | BPF_K, 3, 0, 0, kSparse);
  p->push_back(Insn(BPF_ALU64 | BPF_MOV | BPF_X, 4, 3, 0, 0));
  p->push_back(Insn(BPF_ALU64 | BPF_RSH | BPF_K, 4, 0, 0, 32));
  p->push_back(Insn(BPF_ALU64 | BPF_SUB | BPF_K, 4, 0, 0, 1));
  p->push_back(Insn(BPF_ALU64 | BPF_AND | BPF_K, 4, 0, 0, (1 << kMaxQueueBits) - 1));
  p->push_back(Insn(BPF_ALU64 | BPF_LSH | BPF_K, 4, 0, 0, 3));
  ValueAt(p, mapFd, 5, static_cast<int32_t>(8 * Clock::kPosWord));
  p->push_back(Insn(BPF_ALU64 | BPF_ADD | BPF_X, 5, 4, 0, 0));
  p->push_back(Insn(BPF_LDX | BPF_DW | BPF_MEM, 4, 5, 0, 0));   // that ring's read position
  p->push_back(Insn(BPF_ALU64 | BPF_MOV | BPF_X, 1, 4, 0, 0));
  p->push_back(Insn(BPF_ALU64 | BPF_RSH | BPF_K, 1, 0, 0, 63));
  l.Jump(BPF_JMP | BPF_JNE | BPF_K, 1, 0, 0, kBulk);             // not known yet
  p->push_back(Insn(BPF_ALU | BPF_SUB | BPF_X, 3, 4, 0, 0));
  l.Jump(BPF_JMP32 | BPF_JSLE | BPF_K, 3, 0, 0, kSparse);        // read up to the last packet
  l.Place(kBulk);
  p->push_back(Insn(BPF_ALU64 | BPF_MOV | BPF_X, 0, 9, 0, 0));
  l.Jump(BPF_JMP | BPF_JA, 0, 0, 0, kChosen);
  // The flow has nothing unread; it is sparse when its last packet came
  // kSparseIdleNs or more ago, and the sparse ring takes it while it holds
  // fewer than kSparseMax unread entries (its read position known).
  l.Place(kSparse);
  p->push_back(Insn(BPF_LDX | BPF_DW | BPF_MEM, 4, 10, -8, 0));
  p->push_back(Insn(BPF_LDX | BPF_DW | BPF_MEM, 5, 4, 8, 0));
  p->push_back(Insn(BPF_LDX | BPF_DW | BPF_MEM, 1, 10, -16, 0));
  p->push_back(Insn(BPF_ALU64 | BPF_SUB | BPF_X, 1, 5, 0, 0));
  l.Jump(BPF_JMP | BPF_JLT | BPF_K, 1, 0, static_cast<int32_t>(kSparseIdleNs), kBulk);
  p->push_back(Insn(BPF_ALU64 | BPF_MOV | BPF_X, 1, 0, 0, 0));
  p->push_back(Insn(BPF_ALU64 | BPF_AND | BPF_K, 1, 0, 0, (1 << kMaxQueueBits) - 1));
  p->push_back(Insn(BPF_ALU64 | BPF_LSH | BPF_K, 1, 0, 0, 3));
  ValueAt(p, mapFd, 2, 0);
  p->push_back(Insn(BPF_ALU64 | BPF_ADD | BPF_X, 2, 1, 0, 0));
  p->push_back(Insn(BPF_LDX | BPF_DW | BPF_MEM, 2, 2, 0, 0));    // its entries numbered
  ValueAt(p, mapFd, 4, static_cast<int32_t>(8 * Clock::kPosWord));
  p->push_back(Insn(BPF_ALU64 | BPF_ADD | BPF_X, 4, 1, 0, 0));
  p->push_back(Insn(BPF_LDX | BPF_DW | BPF_MEM, 4, 4, 0, 0));    // and read
  p->push_back(Insn(BPF_ALU64 | BPF_MOV | BPF_X, 5, 4, 0, 0));
  p->push_back(Insn(BPF_ALU64 | BPF_RSH | BPF_K, 5, 0, 0, 63));
  l.Jump(BPF_JMP | BPF_JNE | BPF_K, 5, 0, 0, kBulk);
  p->push_back(Insn(BPF_ALU64 | BPF_SUB | BPF_X, 2, 4, 0, 0));
  l.Jump(BPF_JMP | BPF_JSGE | BPF_K, 2, 0, static_cast<int32_t>(kSparseMax), kBulk);
  l.Place(kChosen);
  p->push_back(Insn(BPF_ALU64 | BPF_MOV | BPF_X, 9, 0, 0, 0));
  p->push_back(Insn(BPF_ALU | BPF_OR | BPF_K, 0, 0, 0, static_cast<int32_t>(hostqueue::kSteerMark)));
  p->push_back(Insn(BPF_STX | BPF_W | BPF_MEM, 6, 0, offsetof(__sk_buff, queue_mapping), 0));
  l.Patch();
}

// The flow's bucket (r10 - 8, EmitRing) gets ring r9's number r3 + r7
// entries, and the time (r10 - 16) (r2, r4, r5 clobbered; r3 kept).
void EmitRecord(std::vector<bpf_insn>* p) {
  p->push_back(Insn(BPF_LDX | BPF_DW | BPF_MEM, 4, 10, -8, 0));
  p->push_back(Insn(BPF_ALU64 | BPF_MOV | BPF_X, 5, 9, 0, 0));
  p->push_back(Insn(BPF_ALU64 | BPF_ADD | BPF_K, 5, 0, 0, 1));
  p->push_back(Insn(BPF_ALU64 | BPF_LSH | BPF_K, 5, 0, 0, 32));
  p->push_back(Insn(BPF_ALU64 | BPF_MOV | BPF_X, 2, 3, 0, 0));
  p->push_back(Insn(BPF_ALU64 | BPF_ADD | BPF_X, 2, 7, 0, 0));
  p->push_back(Insn(BPF_ALU | BPF_MOV | BPF_X, 2, 2, 0, 0));  // the low 32 bits
  p->push_back(Insn(BPF_ALU64 | BPF_OR | BPF_X, 5, 2, 0, 0));
  p->push_back(Insn(BPF_STX | BPF_DW | BPF_MEM, 4, 5, 0, 0));
  p->push_back(Insn(BPF_LDX | BPF_DW | BPF_MEM, 5, 10, -16, 0));
  p->push_back(Insn(BPF_STX | BPF_DW | BPF_MEM, 4, 5, 8, 0));
}

// The egress program. With host queues (hostBits > 0) r9 = the packet's
// ring: its host queue (hostqueue::EmitQueue, the steering program's own
// instructions), then the ring of that host queue (EmitRing), which the
// steering program is told in skb->queue_mapping. r7 = the ring entries
// this packet makes: 1, or (Segs)
// its gso_segs when the device will cut it (for kUdp only when the IP
// header, IPv4 protocol or IPv6 next header, says UDP; a header outside the
// linear data counts 1). r2 = &count[q] in the map's one value (Clock
// says the layout); r3 = that count, fetched and advanced by r7 atomically
// (two CPUs may send at once), recorded in the flow's bucket (EmitRecord);
// idx = q * slotsPerQueue + seq mod
// slotsPerQueue; its time = bpf_ktime_get_ns() (CLOCK_MONOTONIC, the clock
// the reader reads), its entries = r7. Returns TC_ACT_UNSPEC: the packet
// goes on as if no filter had looked at it. The verifier checks the
// slot's bounds from the AND, the OR and the shifts.
std::vector<bpf_insn> Program(int mapFd, Segs segs, uint32_t hostBits, HostKey key) {
  static_assert((kSlots & (kSlots - 1)) == 0, "kSlots must be a power of two");
  const bool sparse = hostBits > 0 && key == HostKey::kLan;
  const uint32_t queueBits = hostBits + (sparse ? 1 : 0);
  const uint32_t queues = 1u << queueBits;
  const uint32_t slotBits = 15 - queueBits;
  static_assert(kSlots == 1u << 15, "slotBits assumes 2^15 slots");
  std::vector<bpf_insn> p;
  if (hostBits > 0) {
    p.push_back(Insn(BPF_ALU64 | BPF_MOV | BPF_X, 6, 1, 0, 0));
    hostqueue::EmitQueue(&p, hostBits, key);
    p.push_back(Insn(BPF_ALU64 | BPF_MOV | BPF_X, 9, 0, 0, 0));
    // Already below the host queues; the AND tells older verifiers (6.1 lost the bounds in the 32-bit hash) so.
    p.push_back(Insn(BPF_ALU64 | BPF_AND | BPF_K, 9, 0, 0, static_cast<int32_t>((1u << hostBits) - 1)));
    if (sparse) EmitRing(&p, mapFd, hostBits);
    p.push_back(Insn(BPF_ALU64 | BPF_AND | BPF_K, 9, 0, 0, static_cast<int32_t>(queues - 1)));
    p.push_back(Insn(BPF_ALU64 | BPF_MOV | BPF_X, 1, 6, 0, 0));
  }
  std::vector<size_t> toDone;  // forward jumps to `done`, patched below
  auto jumpDone = [&](uint8_t code, uint8_t dst, uint8_t src, int32_t imm) {
    toDone.push_back(p.size());
    p.push_back(Insn(code, dst, src, 0, imm));
  };
  p.push_back(Insn(BPF_ALU64 | BPF_MOV | BPF_K, 7, 0, 0, 1));
  if (segs != Segs::kOne) {
    p.push_back(Insn(BPF_LDX | BPF_W | BPF_MEM, 8, 1, offsetof(__sk_buff, gso_segs), 0));
    jumpDone(BPF_JMP | BPF_JEQ | BPF_K, 8, 0, 0);  // not GSO
    if (segs == Segs::kUdp) {
      p.push_back(Insn(BPF_LDX | BPF_W | BPF_MEM, 2, 1, offsetof(__sk_buff, data), 0));
      p.push_back(Insn(BPF_LDX | BPF_W | BPF_MEM, 3, 1, offsetof(__sk_buff, data_end), 0));
      p.push_back(Insn(BPF_ALU64 | BPF_MOV | BPF_X, 4, 2, 0, 0));
      p.push_back(Insn(BPF_ALU64 | BPF_ADD | BPF_K, 4, 0, 0, 10));
      jumpDone(BPF_JMP | BPF_JGT | BPF_X, 4, 3, 0);  // fewer than 10 bytes of header in the linear data
      p.push_back(Insn(BPF_LDX | BPF_B | BPF_MEM, 5, 2, 0, 0));
      p.push_back(Insn(BPF_ALU64 | BPF_RSH | BPF_K, 5, 0, 0, 4));
      p.push_back(Insn(BPF_LDX | BPF_B | BPF_MEM, 4, 2, 9, 0));   // IPv4 protocol
      p.push_back(Insn(BPF_JMP | BPF_JEQ | BPF_K, 5, 0, 1, 4));  // version 4: skip the next
      p.push_back(Insn(BPF_LDX | BPF_B | BPF_MEM, 4, 2, 6, 0));   // IPv6 next header
      jumpDone(BPF_JMP | BPF_JNE | BPF_K, 4, 0, IPPROTO_UDP);
    }
    p.push_back(Insn(BPF_ALU64 | BPF_MOV | BPF_X, 7, 8, 0, 0));
  }
  const size_t done = p.size();
  for (size_t j : toDone) p[j].off = static_cast<int16_t>(done - (j + 1));
  ValueAt(&p, mapFd, 2, 0);
  if (queueBits > 0) {  // &count[q]
    p.push_back(Insn(BPF_ALU64 | BPF_MOV | BPF_X, 4, 9, 0, 0));
    p.push_back(Insn(BPF_ALU64 | BPF_LSH | BPF_K, 4, 0, 0, 3));
    p.push_back(Insn(BPF_ALU64 | BPF_ADD | BPF_X, 2, 4, 0, 0));
  }
  p.push_back(Insn(BPF_ALU64 | BPF_MOV | BPF_X, 3, 7, 0, 0));
  p.push_back(Insn(BPF_STX | BPF_DW | BPF_ATOMIC, 2, 3, 0, BPF_ADD | BPF_FETCH));
  if (sparse) EmitRecord(&p);
  p.push_back(Insn(BPF_ALU64 | BPF_AND | BPF_K, 3, 0, 0, static_cast<int32_t>((1u << slotBits) - 1)));
  if (queueBits > 0) {  // idx = q << slotBits | seq mod slotsPerQueue
    p.push_back(Insn(BPF_ALU64 | BPF_LSH | BPF_K, 9, 0, 0, static_cast<int32_t>(slotBits)));
    p.push_back(Insn(BPF_ALU64 | BPF_OR | BPF_X, 3, 9, 0, 0));
    // Already below kSlots; 6.1's verifier loses the bounds in the OR, and the AND gives them back.
    p.push_back(Insn(BPF_ALU64 | BPF_AND | BPF_K, 3, 0, 0, static_cast<int32_t>(kSlots - 1)));
  }
  p.push_back(Insn(BPF_ALU64 | BPF_LSH | BPF_K, 3, 0, 0, 4));
  // Slot idx's time is at byte 8 (queues + 2 idx) = 8 (queues - 1) + 16 idx + 8.
  ValueAt(&p, mapFd, 2, static_cast<int32_t>(8 * (queues - 1)));
  const bpf_insn stamp[] = {
      Insn(BPF_ALU64 | BPF_ADD | BPF_X, 2, 3, 0, 0),
      Insn(BPF_ALU64 | BPF_MOV | BPF_X, 6, 2, 0, 0),  // r6 survives the call
      Insn(BPF_STX | BPF_DW | BPF_MEM, 6, 7, 16, 0),
      Insn(BPF_JMP | BPF_CALL, 0, 0, 0, BPF_FUNC_ktime_get_ns),
      Insn(BPF_STX | BPF_DW | BPF_MEM, 6, 0, 8, 0),
      Insn(BPF_ALU64 | BPF_MOV | BPF_K, 0, 0, 0, TC_ACT_UNSPEC),
      Insn(BPF_JMP | BPF_EXIT, 0, 0, 0, 0),
  };
  p.insert(p.end(), std::begin(stamp), std::end(stamp));
  return p;
}

// --- rtnetlink: a request, and the kernel's answers -------------------------

struct Msg {
  alignas(NLMSG_ALIGNTO) uint8_t buf[512];
  nlmsghdr* hdr() { return reinterpret_cast<nlmsghdr*>(buf); }
  tcmsg* tc() { return static_cast<tcmsg*>(NLMSG_DATA(hdr())); }

  Msg(uint16_t type, uint16_t flags) {
    std::memset(buf, 0, sizeof buf);
    hdr()->nlmsg_len = NLMSG_LENGTH(sizeof(tcmsg));
    hdr()->nlmsg_type = type;
    hdr()->nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK | flags;
    tc()->tcm_family = AF_UNSPEC;
  }
  rtattr* put(uint16_t type, const void* data, size_t len) {
    rtattr* a = reinterpret_cast<rtattr*>(buf + NLMSG_ALIGN(hdr()->nlmsg_len));
    a->rta_type = type;
    a->rta_len = RTA_LENGTH(len);
    if (len) std::memcpy(RTA_DATA(a), data, len);
    hdr()->nlmsg_len = NLMSG_ALIGN(hdr()->nlmsg_len) + RTA_ALIGN(a->rta_len);
    return a;
  }
  void putStr(uint16_t type, const char* s) { put(type, s, std::strlen(s) + 1); }
  void putU32(uint16_t type, uint32_t v) { put(type, &v, sizeof v); }
  void end(rtattr* nest) { nest->rta_len = static_cast<unsigned short>(buf + hdr()->nlmsg_len - reinterpret_cast<uint8_t*>(nest)); }
};

// Sends m and hands each answer to `each` (false: not what was asked for)
// until the kernel's acknowledgement, error or end of dump. 0, or the errno
// of the system or the kernel's answer; EPROTO when `each` refused one.
template <class Each>
int Exchange(Msg& m, Each each) {
  int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
  if (fd < 0) return errno;
  sockaddr_nl kernel{};
  kernel.nl_family = AF_NETLINK;
  int rc = -1;
  if (sendto(fd, m.buf, m.hdr()->nlmsg_len, 0, reinterpret_cast<sockaddr*>(&kernel), sizeof kernel) < 0) rc = errno;
  while (rc < 0) {
    alignas(NLMSG_ALIGNTO) uint8_t reply[16384];
    ssize_t n = recv(fd, reply, sizeof reply, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      rc = n < 0 ? errno : EPROTO;
      break;
    }
    int len = static_cast<int>(n);
    for (nlmsghdr* h = reinterpret_cast<nlmsghdr*>(reply); rc < 0 && NLMSG_OK(h, len); h = NLMSG_NEXT(h, len)) {
      if (h->nlmsg_type == NLMSG_ERROR) rc = -static_cast<nlmsgerr*>(NLMSG_DATA(h))->error;
      else if (h->nlmsg_type == NLMSG_DONE) rc = 0;
      else if (!each(h)) rc = EPROTO;
    }
  }
  close(fd);
  return rc;
}

// One request, its acknowledgement: 0, or the errno the kernel answered with.
int Talk(Msg& m) {
  return Exchange(m, [](const nlmsghdr*) { return false; });
}

int Clsact(int ifindex, uint16_t type, uint16_t flags) {
  Msg m(type, flags);
  m.tc()->tcm_ifindex = ifindex;
  m.tc()->tcm_parent = TC_H_CLSACT;
  m.tc()->tcm_handle = TC_H_MAKE(TC_H_CLSACT, 0);
  m.putStr(TCA_KIND, "clsact");
  return Talk(m);
}

Msg EgressFilter(int ifindex, uint16_t type, uint16_t flags) {
  Msg m(type, flags);
  m.tc()->tcm_ifindex = ifindex;
  m.tc()->tcm_parent = TC_H_MAKE(TC_H_CLSACT, TC_H_MIN_EGRESS);
  m.tc()->tcm_info = TC_H_MAKE(static_cast<uint32_t>(kFilterPrio) << 16, htons(ETH_P_ALL));
  return m;
}

// Every filter at our priority: a predecessor's, left on a persistent TUN
// by a process that was killed, or ours. True when there was one.
bool DeleteFilters(int ifindex) {
  Msg m = EgressFilter(ifindex, RTM_DELTFILTER, 0);
  return Talk(m) == 0;
}

// How many filters sit on the device's clsact, ingress and egress together
// (a dump of each), or -1 when the kernel did not answer a dump.
int CountFilters(int ifindex) {
  int total = 0;
  for (uint32_t side : {TC_H_MIN_INGRESS, TC_H_MIN_EGRESS}) {
    Msg m(RTM_GETTFILTER, 0);
    m.hdr()->nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
    m.tc()->tcm_ifindex = ifindex;
    m.tc()->tcm_parent = TC_H_MAKE(TC_H_CLSACT, side);
    int rc = Exchange(m, [&](const nlmsghdr* h) {
      if (h->nlmsg_type == RTM_NEWTFILTER) total++;
      return true;
    });
    if (rc != 0) return -1;
  }
  return total;
}

int AddFilter(int ifindex, int progFd) {
  Msg m = EgressFilter(ifindex, RTM_NEWTFILTER, NLM_F_CREATE | NLM_F_EXCL);
  m.putStr(TCA_KIND, "bpf");
  rtattr* opts = m.put(TCA_OPTIONS | NLA_F_NESTED, nullptr, 0);
  m.putU32(TCA_BPF_FD, static_cast<uint32_t>(progFd));
  m.putStr(TCA_BPF_NAME, kFilterName);
  m.putU32(TCA_BPF_FLAGS, TCA_BPF_FLAG_ACT_DIRECT);
  m.end(opts);
  return Talk(m);
}

std::mutex g_mu;
std::vector<Clock*> g_clocks;  // by id; nullptr once detached

void Release(Clock* c) {
  if (c->mem) munmap(const_cast<uint64_t*>(c->mem), c->mapBytes);
  if (c->progFd >= 0) close(c->progFd);
  if (c->mapFd >= 0) close(c->mapFd);
  delete c;
}

int Fail(Clock* c, std::string* err, int* errnum, const std::string& what, int e) {
  *errnum = e;
  *err = what + ": " + std::strerror(e);
  Release(c);
  return -1;
}

}  // namespace

int Attach(const std::string& ifname, Segs segs, uint32_t hostBits, HostKey key, std::string* err, int* errnum) {
  Clock* c = new Clock();
  if (hostBits > kMaxHostBits) return Fail(c, err, errnum, "more than 16 host queues", EINVAL);
  const uint32_t queueBits = hostBits + (hostBits > 0 && key == HostKey::kLan ? 1 : 0);
  c->queues = 1u << queueBits;
  c->hosts = hostBits ? 1u << hostBits : 1;
  c->slotsPerQueue = kSlots >> queueBits;
  c->ifindex = static_cast<int>(if_nametoindex(ifname.c_str()));
  if (c->ifindex == 0) return Fail(c, err, errnum, "no device " + ifname, errno);

  union bpf_attr a;
  std::memset(&a, 0, sizeof a);
  a.map_type = BPF_MAP_TYPE_ARRAY;
  a.key_size = 4;
  a.value_size = static_cast<uint32_t>(kValueBytes);
  a.max_entries = 1;
  a.map_flags = BPF_F_MMAPABLE;
  c->mapFd = static_cast<int>(Bpf(BPF_MAP_CREATE, &a));
  if (c->mapFd < 0) return Fail(c, err, errnum, "bpf map", errno);

  const long page = sysconf(_SC_PAGESIZE);
  c->mapBytes = (kValueBytes + page - 1) / page * page;
  // Writable: the reader publishes its read positions here (Consumed).
  void* mem = mmap(nullptr, c->mapBytes, PROT_READ | PROT_WRITE, MAP_SHARED, c->mapFd, 0);
  if (mem == MAP_FAILED) return Fail(c, err, errnum, "mmap of the bpf map", errno);
  c->mem = static_cast<volatile uint64_t*>(mem);
  for (uint32_t q = 0; q < c->queues; q++) c->Consumed(q, Clock::kPosUnknown);

  std::string why;
  c->progFd = LoadProgram(BPF_PROG_TYPE_SCHED_CLS, Program(c->mapFd, segs, hostBits, key), &why);
  if (c->progFd < 0) return Fail(c, err, errnum, "bpf program load" + (why.empty() ? "" : " (" + why + ")"), errno);

  // A predecessor's filter means a predecessor's clsact too, most likely:
  // it is removed on close if nothing else is left on it.
  c->adoptedClsact = DeleteFilters(c->ifindex);
  int rc = Clsact(c->ifindex, RTM_NEWQDISC, NLM_F_CREATE | NLM_F_EXCL);
  if (rc == 0) c->madeClsact = true;
  else if (rc != EEXIST) return Fail(c, err, errnum, "tc qdisc clsact on " + ifname, rc);
  rc = AddFilter(c->ifindex, c->progFd);
  if (rc != 0) {
    if (c->madeClsact) Clsact(c->ifindex, RTM_DELQDISC, 0);
    return Fail(c, err, errnum, "tc filter bpf on " + ifname + " egress", rc);
  }

  std::lock_guard<std::mutex> lock(g_mu);
  g_clocks.push_back(c);
  return static_cast<int>(g_clocks.size() - 1);
}

void Detach(int id) {
  Clock* c;
  {
    std::lock_guard<std::mutex> lock(g_mu);
    if (id < 0 || static_cast<size_t>(id) >= g_clocks.size() || !g_clocks[id]) return;
    c = g_clocks[id];
    g_clocks[id] = nullptr;
  }
  // The device may be gone already (a TUN dies with its last fd): then so
  // are its qdiscs and filters, and these fail harmlessly.
  if (c->madeClsact) {
    Clsact(c->ifindex, RTM_DELQDISC, 0);
  } else {
    DeleteFilters(c->ifindex);
    // Taken over from a killed predecessor: an operator's filters (any,
    // ingress or egress) keep the clsact; an empty one is ours to remove.
    if (c->adoptedClsact && CountFilters(c->ifindex) == 0) Clsact(c->ifindex, RTM_DELQDISC, 0);
  }
  Release(c);
}

const Clock* Get(int id) {
  std::lock_guard<std::mutex> lock(g_mu);
  if (id < 0 || static_cast<size_t>(id) >= g_clocks.size()) return nullptr;
  return g_clocks[id];
}

}  // namespace ringclock

namespace hostqueue {

void EmitQueue(std::vector<bpf_insn>* p, uint32_t bits, ringclock::HostKey key) {
  using ringclock::Insn;
  const bool remote = key == ringclock::HostKey::kRemote;
  p->push_back(Insn(BPF_LD | BPF_B | BPF_ABS, 0, 0, 0, 0));             // r0 = version and IHL
  p->push_back(Insn(BPF_ALU | BPF_RSH | BPF_K, 0, 0, 0, 4));
  p->push_back(Insn(BPF_JMP | BPF_JNE | BPF_K, 0, 0, remote ? 11 : 4, 4));  // not IPv4: queue 0
  p->push_back(Insn(BPF_LD | BPF_W | BPF_ABS, 0, 0, 0, 12));            // r0 = saddr, host order
  p->push_back(Insn(BPF_ALU | BPF_MUL | BPF_K, 0, 0, 0, static_cast<int32_t>(kHashMul)));
  p->push_back(Insn(BPF_ALU | BPF_RSH | BPF_K, 0, 0, 0, static_cast<int32_t>(32 - bits)));
  if (remote) {  // + protocol + (protocol >> 3), within the queues (r8: a BPF_LD_ABS keeps it, not r1-r5)
    p->push_back(Insn(BPF_ALU64 | BPF_MOV | BPF_X, 8, 0, 0, 0));
    p->push_back(Insn(BPF_LD | BPF_B | BPF_ABS, 0, 0, 0, 9));
    p->push_back(Insn(BPF_ALU64 | BPF_MOV | BPF_X, 2, 0, 0, 0));
    p->push_back(Insn(BPF_ALU | BPF_RSH | BPF_K, 2, 0, 0, 3));
    p->push_back(Insn(BPF_ALU | BPF_ADD | BPF_X, 0, 2, 0, 0));
    p->push_back(Insn(BPF_ALU | BPF_ADD | BPF_X, 0, 8, 0, 0));
    p->push_back(Insn(BPF_ALU | BPF_AND | BPF_K, 0, 0, 0, static_cast<int32_t>((1u << bits) - 1)));
  }
  p->push_back(Insn(BPF_JMP | BPF_JA, 0, 0, 1, 0));
  p->push_back(Insn(BPF_ALU64 | BPF_MOV | BPF_K, 0, 0, 0, 0));
}

int Steer(int tunFd, uint32_t bits, ringclock::HostKey key, std::string* err) {
  using ringclock::Insn;
  if (bits == 0 || bits > ringclock::kMaxHostBits) {
    *err = "host queues: 2 to 16";
    return EINVAL;
  }
  // A socket filter: the ring the clock's program chose (kSteerMark in
  // skb->queue_mapping), else the host queue's bulk ring: BPF_LD_ABS reads
  // the packet from skb->data, the IP header on a TUN (no link header); a
  // packet shorter than the load ends the program with 0, ring 0. The TUN
  // takes the result modulo its queues.
  std::vector<bpf_insn> p;
  p.push_back(Insn(BPF_ALU64 | BPF_MOV | BPF_X, 6, 1, 0, 0));
  p.push_back(Insn(BPF_LDX | BPF_W | BPF_MEM, 0, 1, offsetof(__sk_buff, queue_mapping), 0));
  p.push_back(Insn(BPF_ALU64 | BPF_MOV | BPF_X, 2, 0, 0, 0));
  p.push_back(Insn(BPF_ALU | BPF_AND | BPF_K, 2, 0, 0, 0xC000));
  p.push_back(Insn(BPF_JMP | BPF_JNE | BPF_K, 2, 0, 2, static_cast<int32_t>(kSteerMark)));
  p.push_back(Insn(BPF_ALU | BPF_AND | BPF_K, 0, 0, 0, (1 << ringclock::kMaxQueueBits) - 1));
  p.push_back(Insn(BPF_JMP | BPF_EXIT, 0, 0, 0, 0));
  EmitQueue(&p, bits, key);
  p.push_back(Insn(BPF_JMP | BPF_EXIT, 0, 0, 0, 0));
  std::string why;
  int prog = ringclock::LoadProgram(BPF_PROG_TYPE_SOCKET_FILTER, p, &why);
  if (prog < 0) {
    int e = errno;
    *err = "steering program load" + (why.empty() ? "" : " (" + why + ")") + ": " + std::strerror(e);
    return e;
  }
  // The device holds its own reference from here on.
  int rc = ioctl(tunFd, TUNSETSTEERINGEBPF, &prog) < 0 ? errno : 0;
  if (rc) *err = std::string("TUNSETSTEERINGEBPF: ") + std::strerror(rc);
  close(prog);
  return rc;
}

void Unsteer(int tunFd) {
  int none = -1;
  ioctl(tunFd, TUNSETSTEERINGEBPF, &none);
}

}  // namespace hostqueue
