// vpnmasq_tun: the only native code in vpnmasq. It opens Linux TUN devices
// and moves packets between the kernel and a caller-supplied ArrayBuffer
// (the WebAssembly.Memory buffer of the NAT engine), in batches, so that the
// hot path creates no JS objects per packet: one JS->native call reads or
// writes a whole batch.
//
// Everything here runs on the JS thread. The fds are non-blocking and the
// only asynchronous piece is Poller, a uv_poll_t that tells JS "readable".
//
// Compiled with NODE_ADDON_API_DISABLE_CPP_EXCEPTIONS: every throw is
// ThrowAsJavaScriptException() followed by an immediate return.

#include <napi.h>
#include <uv.h>

#include "fastpath.h"
#include "ringclock.h"

#include <atomic>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <ctime>

#include <fcntl.h>
#include <sched.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/uio.h>
#include <unistd.h>

namespace {

// Process-wide (shared by worker threads, hence atomic) counters of packets
// that were dropped rather than transferred; exported as functions so the
// supervisor can turn them into metrics without per-packet callbacks.
std::atomic<uint64_t> g_write_drops{0};
std::atomic<uint64_t> g_read_truncated{0};
// Head drops by packet class (QueueClass below): tcp, udp, icmp, frag, other; queueDrops() is their sum.
constexpr int kQueueClasses = 5;
std::atomic<uint64_t> g_queue_class_drops[kQueueClasses];
// Of the tcp and udp head drops, those that took only a super-packet's last segment (TrimLastSegment).
std::atomic<uint64_t> g_queue_trims{0};
// CoDel's drops that became an ECN CE mark instead (MarkCe).
std::atomic<uint64_t> g_queue_marks{0};

const char* ErrnoName(int e) {
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 32))
  if (const char* n = strerrorname_np(e)) return n;
#else
  switch (e) {  // musl & co: the errnos this file can actually produce
    case EPERM: return "EPERM";
    case ENOENT: return "ENOENT";
    case EINTR: return "EINTR";
    case EIO: return "EIO";
    case EBADF: return "EBADF";
    case EAGAIN: return "EAGAIN";
    case ENOMEM: return "ENOMEM";
    case EACCES: return "EACCES";
    case EFAULT: return "EFAULT";
    case EBUSY: return "EBUSY";
    case ENODEV: return "ENODEV";
    case EINVAL: return "EINVAL";
    case EMFILE: return "EMFILE";
    case ENFILE: return "ENFILE";
    case EBADFD: return "EBADFD";
    case EMSGSIZE: return "EMSGSIZE";
    case ENOBUFS: return "ENOBUFS";
  }
#endif
  return "EUNKNOWN";
}

// Node convention (fs, net): message says what failed, err.code is the errno
// name, err.syscall the call; callers switch on code, humans read message.
void ThrowErrno(Napi::Env env, int e, const std::string& what,
                const char* syscall, const char* hint = "") {
  std::string msg = what + ": " + std::strerror(e) + " (" + ErrnoName(e) + ")";
  if (*hint) msg += std::string(" \xE2\x80\x94 ") + hint;  // em dash
  Napi::Error err = Napi::Error::New(env, msg);
  err.Value().Set("code", ErrnoName(e));
  err.Value().Set("errno", e);
  err.Value().Set("syscall", syscall);
  err.ThrowAsJavaScriptException();
}

void ThrowRange(Napi::Env env, const std::string& msg) {
  Napi::RangeError::New(env, msg).ThrowAsJavaScriptException();
}

// JS numbers are doubles; an offset that is fractional, negative or NaN is a
// caller bug, and silently truncating it would scribble on the wrong packet.
bool ArgU64(const Napi::CallbackInfo& info, size_t i, const char* name,
            uint64_t* out) {
  if (i >= info.Length() || !info[i].IsNumber()) {
    Napi::TypeError::New(info.Env(), std::string(name) + " must be a number")
        .ThrowAsJavaScriptException();
    return false;
  }
  double d = info[i].As<Napi::Number>().DoubleValue();
  if (!(d >= 0) || d > 9007199254740991.0 || std::floor(d) != d) {
    ThrowRange(info.Env(), std::string(name) + " must be a non-negative integer");
    return false;
  }
  *out = static_cast<uint64_t>(d);
  return true;
}

bool ArgFd(const Napi::CallbackInfo& info, size_t i, int* fd) {
  uint64_t v;
  if (!ArgU64(info, i, "fd", &v)) return false;
  if (v > INT32_MAX) {
    ThrowRange(info.Env(), "fd out of range");
    return false;
  }
  *fd = static_cast<int>(v);
  return true;
}

bool ArgBuffer(const Napi::CallbackInfo& info, size_t i, uint8_t** data,
               uint64_t* len, const char* name = "buf") {
  // SharedArrayBuffer (shared wasm memory) is not an ArrayBuffer to Node-API
  // on Node 20, so it is rejected here rather than misread.
  if (i >= info.Length() || !info[i].IsArrayBuffer()) {
    Napi::TypeError::New(info.Env(), std::string(name) + " must be an ArrayBuffer")
        .ThrowAsJavaScriptException();
    return false;
  }
  Napi::ArrayBuffer ab = info[i].As<Napi::ArrayBuffer>();
  *data = static_cast<uint8_t*>(ab.Data());
  *len = ab.ByteLength();  // 0 once detached (e.g. after memory.grow())
  return true;
}

// True when [base, base + n*stride) lies inside a buffer of len bytes,
// written with divisions so no product can overflow.
bool Fits(uint64_t len, uint64_t base, uint64_t n, uint64_t stride) {
  if (n == 0) return base <= len;
  return base <= len && n <= (len - base) / stride;
}

// Lengths are stored little-endian whatever the host is, because the wasm
// engine reads them with i32.load, which is always little-endian.
inline void StoreLE32(uint8_t* p, uint32_t v) {
  p[0] = v; p[1] = v >> 8; p[2] = v >> 16; p[3] = v >> 24;
}
inline uint32_t LoadLE32(const uint8_t* p) {
  return p[0] | (p[1] << 8) | (p[2] << 16) | (uint32_t(p[3]) << 24);
}

#ifndef TUN_F_USO4
#define TUN_F_USO4 0x20
#endif
#ifndef TUN_F_USO6
#define TUN_F_USO6 0x40
#endif
// The legacy virtio_net_hdr (no num_buffers): TUN's default TUNSETVNETHDRSZ.
constexpr size_t kVnetHdrLen = 10;

// openTun(name, vnet?, multiQueue?) -> fd. vnet: IFF_VNET_HDR, every read
// and write carries a virtio_net_hdr before the packet (needed for
// TUNSETOFFLOAD). multiQueue: IFF_MULTI_QUEUE, each open of the name adds a
// queue (host queues, ringclock.h); EINVAL for a device made without it.
Napi::Value OpenTun(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsString()) {
    Napi::TypeError::New(env, "name must be a string").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  std::string name = info[0].As<Napi::String>().Utf8Value();
  std::string what = "cannot create TUN device \"" + name + "\"";
  // The kernel would silently truncate a long name to IFNAMSIZ-1 and create
  // a device the caller cannot find again; the other rules are the kernel's
  // own (dev_valid_name), checked here so the message stays one line.
  bool valid = !name.empty() && name.size() < IFNAMSIZ && name != "." && name != "..";
  for (unsigned char c : name) valid = valid && c > ' ' && c != '/' && c != ':' && c != 0x7f;
  if (!valid) {
    ThrowErrno(env, EINVAL, what, "ioctl",
               "interface names are 1 to 15 bytes, without spaces, '/' or ':'");
    return env.Undefined();
  }

  int fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) {
    int e = errno;
    const char* hint = (e == ENOENT || e == ENODEV)
                           ? "load the tun module (modprobe tun) or create /dev/net/tun"
                       : (e == EACCES || e == EPERM)
                           ? "run as root with CAP_NET_ADMIN"
                           : "";
    ThrowErrno(env, e, what + ": open /dev/net/tun", "open", hint);
    return env.Undefined();
  }

  struct ifreq ifr;
  std::memset(&ifr, 0, sizeof ifr);
  // IFF_NO_PI: packets are bare IP; the engine never has to skip a 4-byte
  // tun_pi header and the slot offsets line up with the IP header.
  ifr.ifr_flags = IFF_TUN | IFF_NO_PI;
  if (info.Length() > 1 && info[1].ToBoolean().Value()) ifr.ifr_flags |= IFF_VNET_HDR;
  if (info.Length() > 2 && info[2].ToBoolean().Value()) ifr.ifr_flags |= IFF_MULTI_QUEUE;
  std::memcpy(ifr.ifr_name, name.data(), name.size());
  if (ioctl(fd, TUNSETIFF, &ifr) < 0) {
    int e = errno;
    close(fd);
    const char* hint = (e == EPERM || e == EACCES) ? "run as root with CAP_NET_ADMIN"
                       : e == EBUSY ? "the name is taken by another device or process"
                       : e == EINVAL ? "invalid interface name or an existing non-TUN device"
                                     : "";
    ThrowErrno(env, e, what, "ioctl", hint);
    return env.Undefined();
  }
  return Napi::Number::New(env, fd);
}

// tunOffload(fd, uso) -> the TUN_F_* bits the kernel took. Asks for checksum
// offload and TSO for IPv4 and IPv6, plus USO (Linux 6.2+) when uso is true;
// a kernel that refuses a set (EINVAL) is asked again for less: without USO,
// then checksum offload alone, then nothing (0: plain packets, whole
// checksums, still behind a zero virtio_net_hdr). Only an fd opened with
// vnet can take offloads.
Napi::Value TunOffload(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd;
  if (!ArgFd(info, 0, &fd)) return env.Undefined();
  bool uso = info.Length() > 1 && info[1].ToBoolean().Value();
  const unsigned long base = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6;
  const unsigned long tries[] = {base | TUN_F_USO4 | TUN_F_USO6, base, TUN_F_CSUM, 0};
  for (unsigned long want : tries) {
    if (!uso && (want & TUN_F_USO4)) continue;
    if (ioctl(fd, TUNSETOFFLOAD, want) == 0) return Napi::Number::New(env, static_cast<double>(want));
    int e = errno;
    if (e != EINVAL) {
      ThrowErrno(env, e, "TUNSETOFFLOAD on fd " + std::to_string(fd), "ioctl");
      return env.Undefined();
    }
  }
  return Napi::Number::New(env, 0);
}

// TUNGETIFF on `fd` into *ifr (tunFlags, tunName); false with the JS
// exception thrown when the ioctl fails.
bool GetIff(Napi::Env env, int fd, struct ifreq* ifr) {
  std::memset(ifr, 0, sizeof *ifr);
  if (ioctl(fd, TUNGETIFF, ifr) < 0) {
    ThrowErrno(env, errno, "TUNGETIFF on fd " + std::to_string(fd), "ioctl");
    return false;
  }
  return true;
}

// tunFlags(fd) -> the IFF_* flags of the device (IFF_VNET_HDR = 0x4000).
Napi::Value TunFlags(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd;
  if (!ArgFd(info, 0, &fd)) return env.Undefined();
  struct ifreq ifr;
  if (!GetIff(env, fd, &ifr)) return env.Undefined();
  return Napi::Number::New(env, static_cast<unsigned short>(ifr.ifr_flags));
}

// tunName(fd) -> the name the kernel actually gave (matters for "tun%d").
Napi::Value TunName(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd;
  if (!ArgFd(info, 0, &fd)) return env.Undefined();
  struct ifreq ifr;
  if (!GetIff(env, fd, &ifr)) return env.Undefined();
  ifr.ifr_name[IFNAMSIZ - 1] = '\0';
  return Napi::String::New(env, ifr.ifr_name);
}

// Optional trailing (hdrBase, hdrStride): the fd was opened with vnet, and
// slot i's virtio_net_hdr lives at hdrBase + i * hdrStride (apart from the
// packet, so the packet still starts at its slot and the engine's views are
// the same with and without offloads).
bool ArgVnet(const Napi::CallbackInfo& info, size_t i, uint64_t len, uint64_t n,
             bool* on, uint64_t* hdrBase, uint64_t* hdrStride) {
  *on = false;
  if (info.Length() <= i || info[i].IsUndefined()) return true;
  if (!ArgU64(info, i, "hdrBase", hdrBase) || !ArgU64(info, i + 1, "hdrStride", hdrStride)) return false;
  if (*hdrStride < kVnetHdrLen || !Fits(len, *hdrBase, n, *hdrStride)) {
    ThrowRange(info.Env(), "virtio headers fall outside the buffer or overlap (stride < 10)");
    return false;
  }
  *on = true;
  return true;
}

// The reader's queue discipline (src/tun/tun.ts ReaderQueue): a TUN gives
// no backpressure (tun_net_xmit drops when its ring of txqueuelen entries is
// full and never stops the qdisc), so the ring in front of our reads is the
// router's only queue, and with offloads each entry can be a 64 KB
// super-packet: TCP fills it up to its send buffer (milliseconds), a flood
// of small packets from one host fills it with thousands of entries.
// Each packet's sojourn comes from the ring clock (ringclock.h: an eBPF
// stamp taken as the packet is handed to the device), and CoDel (RFC 8289)
// runs on it: while it stays above target for a whole interval, packets are
// dropped at the head, at CoDel's rising rate. Where the clock cannot be
// attached (no CAP_BPF, no clsact), the reader still sees the ring empty
// (EAGAIN), and "time since the ring was last empty" bounds every queued
// packet's sojourn from above; that bound is what runs then, and it is
// loose: several TCP senders keep a ring from emptying for longer than an
// interval while each packet waits well under the target.
// Every packet class is dropped, as fq_codel does: TCP (and QUIC over UDP)
// answers with a smaller window; an unresponsive flood (UDP, ESP, GRE,
// ICMP, fragments) is thinned at the head until the reader, which drops a
// packet for the cost of one read, empties the ring again, instead of
// every flow behind it waiting out a full ring. No class is exempt: a LAN
// host chooses its packets freely, so an exempt class is what a flood
// would use. A batch also stops after batchBytes, so one side's 64
// super-packets (4 MB, several milliseconds of writes) never hold up the
// other side's packets.
// Layout: Float64Array fields, shared with tun.ts (RQ_*).
enum : int {
  kRqBatchBytes = 0,   // policy: stop a batch at this many IP bytes (0: no limit)
  kRqTargetNs,         // policy: CoDel target; 0 = no dropping
  kRqIntervalNs,       // policy: CoDel interval
  kRqLastEmptyNs,      // state: when a read last found the ring empty
  kRqWasEmpty,         // state: the last call ended on EAGAIN
  kRqFirstAboveNs,     // state: CoDel first_above_time
  kRqDropNextNs,       // state: CoDel drop_next
  kRqCount,            // state: CoDel count
  kRqLastCount,        // state: CoDel lastcount
  kRqDropping,         // state: CoDel dropping
  kRqDropsClass,       // counters: packets dropped here, by QueueClass (kQueueClasses fields)
  kRqClock = kRqDropsClass + kQueueClasses,  // policy: ring clock id (ringclock::Attach), -1: none
  kRqReadSeq,          // state: the stamp number of the next packet read; -1: not aligned yet
  kRqLastSojournNs,    // observed: the sojourn CoDel saw for the last packet read
  kRqMaxSojournNs,     // observed: the largest since the state was made
  kRqTrims,            // counters: of the tcp and udp drops, those that took only a last segment
  kRqMarks,            // counters: drops that became a CE mark
  kRqEmptyKnown,       // counters: batches ended without the read that would have found the ring empty
  kRqStampEnd,         // state: the first ring entry past the stamp in use (a GSO packet's segments share one)
  kRqStampAt,          // state: the time of the stamp in use
  kRqHostQueue,        // policy: which host queue of the device (and of its ring clock) this state reads
  kRqSparseRun,        // state (a host queue's bulk ring): the host's turns in a row that took its sparse ring's packet while this one had packets
  kRqFields
};

inline double MonoNs() {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<double>(ts.tv_sec) * 1e9 + static_cast<double>(ts.tv_nsec);
}

// CoDel's "ok to drop" for a packet read at `now` that waited `sojourn` (its
// dodequeue). A packet with nothing queued behind it is never above: one
// packet is not a standing queue, however late the reader woke for it
// (RFC 8289's "backlog ≤ one MTU" rule, here in packets).
bool CodelAbove(double* q, double now, double sojourn, bool alone) {
  if (alone || sojourn < q[kRqTargetNs]) {
    q[kRqFirstAboveNs] = 0;
    return false;
  }
  if (q[kRqFirstAboveNs] == 0) {
    q[kRqFirstAboveNs] = now + q[kRqIntervalNs];
    return false;
  }
  return now >= q[kRqFirstAboveNs];
}

double CodelNext(const double* q, double t) {
  return t + q[kRqIntervalNs] / std::sqrt(q[kRqCount]);
}

// True when this TCP packet is to be dropped (RFC 8289's dequeue, one
// packet at a time: the caller reads the next one when this returns true).
bool CodelDrop(double* q, double now, double sojourn, bool alone) {
  bool ok = CodelAbove(q, now, sojourn, alone);
  if (q[kRqDropping] != 0) {
    if (!ok) {
      q[kRqDropping] = 0;
      return false;
    }
    if (now < q[kRqDropNextNs]) return false;
    q[kRqCount] += 1;
    // After a stall (the reader away for more than an interval) the schedule
    // goes on from now instead of catching up with a burst of drops.
    double from = q[kRqDropNextNs] < now - q[kRqIntervalNs] ? now : q[kRqDropNextNs];
    q[kRqDropNextNs] = CodelNext(q, from);
    return true;
  }
  if (!ok) return false;
  q[kRqDropping] = 1;
  double delta = q[kRqCount] - q[kRqLastCount];
  q[kRqCount] = (delta > 1 && now - q[kRqDropNextNs] < 16 * q[kRqIntervalNs]) ? delta : 1;
  q[kRqDropNextNs] = CodelNext(q, now);
  q[kRqLastCount] = q[kRqCount];
  return true;
}

// The sojourn of the packet just read at `now` (batch start): its ring
// clock stamp when the numbering is aligned and the stamp still there, else
// the ring-empty bound. Advances the numbering by one ring entry; the
// segments of a GSO packet the kernel cut after the stamp (ringclock.h) share
// its stamp. *alone: nothing was stamped after it, so nothing waits behind it
// (CodelAbove).
inline double Sojourn(double* q, const ringclock::Clock* clk, double now, bool* alone) {
  double sojourn = now - q[kRqLastEmptyNs];
  *alone = false;
  if (clk && q[kRqReadSeq] >= 0) {
    const uint32_t qi = static_cast<uint32_t>(q[kRqHostQueue]);
    const uint64_t seq = static_cast<uint64_t>(q[kRqReadSeq]);
    const uint64_t stamped = clk->Stamped(qi);
    // Numbered past every stamp: a packet the numbering has counted already
    // (stamped before a read found the ring empty and realigned it, but not
    // yet in the ring then) or one that bypassed the hook. Counting it again
    // would put the numbering, and the read position the clock's program
    // decides flows by, one ahead of the ring: a flow's last packet would
    // count as read while it waits, and its next could overtake it.
    if (seq >= stamped) {
      q[kRqLastSojournNs] = sojourn;
      if (sojourn > q[kRqMaxSojournNs]) q[kRqMaxSojournNs] = sojourn;
      return sojourn;
    }
    q[kRqReadSeq] = static_cast<double>(seq + 1);
    clk->Consumed(qi, seq + 1);
    if (stamped - seq <= clk->slotsPerQueue) {
      *alone = seq + 1 == stamped;
      if (static_cast<double>(seq) >= q[kRqStampEnd]) {
        const volatile uint64_t* slot = clk->Slot(qi, seq);
        const uint64_t entries = slot[1];
        q[kRqStampAt] = static_cast<double>(slot[0]);
        q[kRqStampEnd] = static_cast<double>(seq + (entries ? entries : 1));
      }
      const double at = q[kRqStampAt];
      // Stamped after the batch's clock read: it waited (nearly) nothing.
      sojourn = now > at ? now - at : 0;
    }
  }
  q[kRqLastSojournNs] = sojourn;
  if (sojourn > q[kRqMaxSojournNs]) q[kRqMaxSojournNs] = sojourn;
  return sojourn;
}

inline uint32_t Be16(const uint8_t* p) { return static_cast<uint32_t>(p[0]) << 8 | p[1]; }
inline void PutBe16(uint8_t* p, uint32_t v) { p[0] = static_cast<uint8_t>(v >> 8); p[1] = static_cast<uint8_t>(v); }
// One's complement a + b, folded to 16 bits.
inline uint32_t OnesAdd(uint32_t a, uint32_t b) {
  uint32_t s = a + b;
  return (s & 0xffff) + (s >> 16);
}

// A head drop of a TCP/IPv4 GSO super-packet would take up to 44 segments,
// and TCP retransmits every one of them; it needs only one loss to slow
// down. So CoDel's drop takes the super-packet's last segment only: the
// packet is shortened by that segment's bytes, its IPv4 total length and
// header checksum follow, and so does the TCP checksum field, which behind
// VIRTIO_NET_HDR_F_NEEDS_CSUM holds the pseudo-header sum including the TCP
// length. A UDP/IPv4 GSO super-packet (USO: QUIC senders batch up to 64
// datagrams so) loses its last datagram the same way; its UDP length field
// follows too (the kernel's segmentation derives each datagram's from it).
// Returns the bytes taken, 0 when the packet is not such a super-packet of
// at least 3 segments (2 stay, so it stays a super-packet) or carries FIN,
// SYN, RST or URG, whose place in the sequence the last segment holds: then
// the whole packet is dropped. The header's hdr_len (the kernel puts the
// skb's linear length there, which can be the whole packet) is lowered to
// the new length where it was more.
size_t TrimLastSegment(uint8_t* vh, uint8_t* ip, size_t len) {
  const uint32_t gsoType = vh[1] & 0x7f;
  const bool udp = gsoType == 5;  // GSO_UDP_L4; else GSO_TCPV4 (1)
  if ((vh[0] & 1) == 0 || (gsoType != 1 && !udp)) return 0;  // NEEDS_CSUM
  const uint32_t gso = vh[4] | static_cast<uint32_t>(vh[5]) << 8;
  if (gso == 0 || len < 40 || ip[0] >> 4 != 4 || ip[9] != (udp ? 17 : 6) || (Be16(ip + 6) & 0x3fff) != 0) return 0;
  const size_t ihl = (ip[0] & 15) * 4u;
  const size_t total = Be16(ip + 2);
  if (ihl < 20 || total > len || total < ihl + (udp ? 8 : 20)) return 0;
  const uint32_t csumStart = vh[6] | static_cast<uint32_t>(vh[7]) << 8;
  const uint32_t csumOffset = vh[8] | static_cast<uint32_t>(vh[9]) << 8;
  if (csumStart != ihl || csumOffset != (udp ? 6u : 16u)) return 0;
  uint8_t* l4 = ip + ihl;
  size_t headers;
  if (udp) {
    if (Be16(l4 + 4) != total - ihl) return 0;  // a UDP length that is not the super-packet's
    headers = ihl + 8;
  } else {
    headers = ihl + (l4[12] >> 4) * 4u;
    if (headers < ihl + 20 || headers > total || (l4[13] & 0x27) != 0) return 0;  // FIN SYN RST URG
  }
  const size_t payload = total - headers;
  const size_t segments = (payload + gso - 1) / gso;
  if (segments < 3) return 0;
  const size_t last = payload - (segments - 1) * gso;
  const uint32_t newTotal = static_cast<uint32_t>(total - last);
  // RFC 1624: HC' = ~(~HC + ~m + m').
  const uint32_t ipsum = OnesAdd(OnesAdd(~Be16(ip + 10) & 0xffff, ~static_cast<uint32_t>(total) & 0xffff), newTotal);
  PutBe16(ip + 2, newTotal);
  PutBe16(ip + 10, ~ipsum & 0xffff);
  // The partial sum is not inverted: add the new L4 length, take the old one away.
  uint8_t* check = l4 + csumOffset;
  const uint32_t partial = OnesAdd(OnesAdd(Be16(check), ~static_cast<uint32_t>(total - ihl) & 0xffff), newTotal - ihl);
  PutBe16(check, partial);
  if (udp) PutBe16(l4 + 4, newTotal - ihl);
  if ((vh[2] | static_cast<uint32_t>(vh[3]) << 8) > newTotal) {
    vh[2] = static_cast<uint8_t>(newTotal);
    vh[3] = static_cast<uint8_t>(newTotal >> 8);
  }
  return last;
}

// RFC 8289 (and fq_codel) mark ECN-capable packets instead of dropping
// them: TCP, and QUIC over UDP (RFC 9000), then slow down without losing
// anything, and a tunnel's decapsulator hands the mark on (RFC 6040). Any
// IPv4 packet is marked, as fq_codel does (ECT(0), ECT(1) become CE; CE
// stays CE; the header checksum follows), and only while CoDel's drop
// count in this episode is at most
// kMarkMaxCount: a flow that claims ECN but does not slow down (anything a
// LAN host can forge) keeps the count rising, and from then on it is
// dropped like any other (RFC 7567 section 4.2.1: drop, not mark, under
// overload). At the 5 ms interval that is about 35 ms of marking.
constexpr double kMarkMaxCount = 16;
bool MarkCe(uint8_t* ip, size_t len) {
  if (len < 20 || ip[0] >> 4 != 4 || (ip[0] & 15) < 5) return false;
  const uint32_t ecn = ip[1] & 3;
  if (ecn == 0) return false;  // Not-ECT
  if (ecn == 3) return true;   // already CE
  const uint32_t before = Be16(ip);
  ip[1] |= 3;
  const uint32_t sum = OnesAdd(OnesAdd(~Be16(ip + 10) & 0xffff, ~before & 0xffff), Be16(ip));
  PutBe16(ip + 10, ~sum & 0xffff);
  return true;
}

// The class a head drop is counted under: 0 tcp, 1 udp, 2 icmp, 3 frag (an
// IPv4 fragment of any protocol), 4 other (ESP, GRE, IPv6, anything not a
// whole IPv4 header). Reads only the bytes the read returned.
inline int QueueClass(const uint8_t* ip, size_t len) {
  if (len < 20 || (ip[0] >> 4) != 4) return 4;
  if (((ip[6] << 8 | ip[7]) & 0x3fff) != 0) return 3;
  switch (ip[9]) {
    case 6: return 0;
    case 17: return 1;
    case 1: return 2;
    default: return 4;
  }
}

// Optional Float64Array-sized ArrayBuffer of kRqFields at info[i]; null when absent.
bool ArgQueue(const Napi::CallbackInfo& info, size_t i, double** q) {
  *q = nullptr;
  if (info.Length() <= i || info[i].IsUndefined()) return true;
  if (!info[i].IsArrayBuffer() || info[i].As<Napi::ArrayBuffer>().ByteLength() < kRqFields * sizeof(double)) {
    Napi::TypeError::New(info.Env(), "queue must be an ArrayBuffer of " + std::to_string(kRqFields * sizeof(double)) + " bytes")
        .ThrowAsJavaScriptException();
    return false;
  }
  *q = static_cast<double*>(info[i].As<Napi::ArrayBuffer>().Data());
  return true;
}

// Where a batch's packets go: readBatch's arguments, checked once.
struct Slots {
  uint8_t* data;
  uint64_t slotBase, slotSize, lenBase, hdrBase, hdrStride;
  bool vnet;
};

// One ring's part in a batch: its fd and its queue discipline (q null: none).
struct Ring {
  int fd = -1;
  double* q = nullptr;
  const ringclock::Clock* clk = nullptr;
  bool codel = false;
  bool done = false;  // found empty, or known to be, in this batch
};

// The ring clock a queue state reads: with CoDel on and a clock attached,
// else nullptr. One lookup (a mutex) per call: the host queues of a device
// share its clock, so a batch looks it up once for all of them.
const ringclock::Clock* ClockOf(const double* q) {
  return q && q[kRqTargetNs] > 0 && q[kRqClock] >= 0 ? ringclock::Get(static_cast<int>(q[kRqClock])) : nullptr;
}

// The stamps say ring q is empty: its numbering is aligned and nothing was
// stamped past what was read. False when only a read can tell.
inline bool StampsSayEmpty(const double* q, const ringclock::Clock* clk) {
  return clk && q[kRqReadSeq] >= 0 && static_cast<double>(clk->Stamped(static_cast<uint32_t>(q[kRqHostQueue]))) <= q[kRqReadSeq];
}

// Starts a batch on ring r at now with the device's clock: one clock read
// per batch; a ring found empty at the end of the last call is taken as
// empty until now (we were woken because it no longer is).
void BeginBatch(Ring* r, double now, const ringclock::Clock* clk) {
  double* q = r->q;
  if (!q) return;
  if (q[kRqWasEmpty] != 0) q[kRqLastEmptyNs] = now;
  q[kRqWasEmpty] = 0;
  r->codel = q[kRqTargetNs] > 0;
  r->clk = clk;
}

// The ring is empty from now on: every packet stamped so far has been read
// (or dropped at the tail), which aligns the stamps' numbering.
void MarkEmpty(Ring* r, bool aligned) {
  r->done = true;
  double* q = r->q;
  if (!q) return;
  q[kRqWasEmpty] = 1;
  q[kRqLastEmptyNs] = MonoNs();
  if (aligned && r->clk) {
    const uint32_t qi = static_cast<uint32_t>(q[kRqHostQueue]);
    const uint64_t stamped = r->clk->Stamped(qi);
    q[kRqReadSeq] = q[kRqStampEnd] = static_cast<double>(stamped);
    r->clk->Consumed(qi, stamped);
  }
}

enum class Got { kPacket, kDropped, kEmpty, kError };

// Reads ring r's next packet into slot n and runs the queue discipline on
// it. kPacket: kept, its IP length in *ipLen (the ring may be done: nothing
// was stamped after it); kDropped: read and dropped (truncated, or CoDel's
// head drop), the slot is free again; kEmpty: r->done; kError: *err.
Got ReadOne(const Slots& s, Ring* r, uint64_t n, double now, uint32_t* ipLen, int* err) {
  // A TUN read into a too-small buffer silently truncates and returns the
  // truncated length, so a packet that fills its slot exactly would be
  // indistinguishable from a cut one. One spare byte in a second iovec
  // settles it: if anything lands there, the packet did not fit.
  uint8_t spill;
  struct iovec iovs[3];
  iovs[0].iov_base = s.data + s.hdrBase + n * s.hdrStride;
  iovs[0].iov_len = kVnetHdrLen;
  iovs[1].iov_base = s.data + s.slotBase + n * s.slotSize;
  iovs[1].iov_len = s.slotSize;
  iovs[2].iov_base = &spill;
  iovs[2].iov_len = 1;
  const size_t hdr = s.vnet ? kVnetHdrLen : 0;
  ssize_t got;
  do got = s.vnet ? readv(r->fd, iovs, 3) : readv(r->fd, iovs + 1, 2);
  while (got < 0 && errno == EINTR);
  if (got < 0) {
    *err = errno;
    if (*err != EAGAIN && *err != EWOULDBLOCK) return Got::kError;
    MarkEmpty(r, true);
    return Got::kEmpty;
  }
  if (got == 0) {
    r->done = true;
    return Got::kEmpty;
  }
  double* q = r->q;
  bool alone = false;
  const double sojourn = r->codel ? Sojourn(q, r->clk, now, &alone) : 0;
  // A truncated IP packet is useless to the NAT (and its header lies about
  // its length): drop it, reusing the slot, and count it. So is a read
  // shorter than its virtio header.
  if (static_cast<uint64_t>(got) > s.slotSize + hdr || static_cast<size_t>(got) <= hdr) {
    g_read_truncated.fetch_add(1, std::memory_order_relaxed);
    return Got::kDropped;
  }
  uint8_t* ip = static_cast<uint8_t*>(iovs[1].iov_base);
  if (r->codel && CodelDrop(q, now, sojourn, alone)) {
    const size_t len = static_cast<size_t>(got) - hdr;
    if (q[kRqCount] <= kMarkMaxCount && MarkCe(ip, len)) {
      q[kRqMarks] += 1;
      g_queue_marks.fetch_add(1, std::memory_order_relaxed);
    } else {
      int c = QueueClass(ip, len);
      q[kRqDropsClass + c] += 1;
      g_queue_class_drops[c].fetch_add(1, std::memory_order_relaxed);
      const size_t trimmed = s.vnet ? TrimLastSegment(static_cast<uint8_t*>(iovs[0].iov_base), ip, len) : 0;
      if (trimmed == 0) return Got::kDropped;
      q[kRqTrims] += 1;
      g_queue_trims.fetch_add(1, std::memory_order_relaxed);
      got -= static_cast<ssize_t>(trimmed);
    }
  }
  *ipLen = static_cast<uint32_t>(got - hdr);
  StoreLE32(s.data + s.lenBase + 4 * n, *ipLen);
  // Nothing was stamped after this packet: the ring is empty, and the
  // read that would say so (EAGAIN) is saved. A packet that arrives from
  // now on makes the fd readable again (the poll is level-triggered).
  if (alone) {
    MarkEmpty(r, false);
    q[kRqEmptyKnown] += 1;
  }
  return Got::kPacket;
}

// The arguments readBatch and readQueues share: (buf, slotBase, slotSize,
// lenBase, max) from info[first], then (hdrBase, hdrStride) if given.
bool ArgSlots(const Napi::CallbackInfo& info, size_t first, Slots* s, uint64_t* max) {
  uint64_t len;
  s->hdrBase = s->hdrStride = 0;
  if (!ArgBuffer(info, first, &s->data, &len) ||
      !ArgU64(info, first + 1, "slotBase", &s->slotBase) || !ArgU64(info, first + 2, "slotSize", &s->slotSize) ||
      !ArgU64(info, first + 3, "lenBase", &s->lenBase) || !ArgU64(info, first + 4, "max", max) ||
      !ArgVnet(info, first + 5, len, *max, &s->vnet, &s->hdrBase, &s->hdrStride))
    return false;
  if (s->slotSize == 0 || s->slotSize > UINT32_MAX) {
    ThrowRange(info.Env(), "slotSize must be between 1 and 2^32-1");
    return false;
  }
  // One check for the whole batch keeps the per-packet loop branch-free.
  if (!Fits(len, s->slotBase, *max, s->slotSize) || !Fits(len, s->lenBase, *max, 4)) {
    ThrowRange(info.Env(), "readBatch: slots or lengths fall outside the buffer (byteLength " +
                               std::to_string(len) + ")");
    return false;
  }
  return true;
}

// readBatch(fd, buf, slotBase, slotSize, lenBase, max[, hdrBase, hdrStride[, queue]]) -> count
Napi::Value ReadBatch(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Slots s;
  Ring r;
  uint64_t max;
  if (!ArgFd(info, 0, &r.fd) || !ArgSlots(info, 1, &s, &max) || !ArgQueue(info, 8, &r.q)) return env.Undefined();
  const double now = r.q ? MonoNs() : 0;
  const double budget = r.q ? r.q[kRqBatchBytes] : 0;
  BeginBatch(&r, now, ClockOf(r.q));
  uint64_t n = 0;
  double bytes = 0;
  while (n < max && !r.done) {
    uint32_t len = 0;
    int e = 0;
    Got got = ReadOne(s, &r, n, now, &len, &e);
    if (got == Got::kError) {
      // Hand back what we already have; a persistent error (EBADFD after
      // the device was deleted) will be thrown by the next call.
      if (n > 0) break;
      ThrowErrno(env, e, "read from TUN fd " + std::to_string(r.fd), "read");
      return env.Undefined();
    }
    if (got != Got::kPacket) continue;
    n++;
    bytes += len;
    if (budget > 0 && bytes >= budget) break;
  }
  return Napi::Number::New(env, static_cast<double>(n));
}

// readQueues(fds, buf, slotBase, slotSize, lenBase, max, hdrBase|undefined,
// hdrStride|undefined, states, start, hints[, hosts]) -> count: one batch
// from the host queues of a multi-queue TUN (ringclock.h hostqueue). fds:
// an Int32Array's buffer, one fd a ring; states: a Float64Array's buffer of
// kRqFields per ring (each its own CoDel, reading its own ring's stamps).
// hosts: the host queues (default: one per ring); with twice as many rings
// as hosts, host h's rings are h (bulk) and hosts + h (sparse). The hosts
// are taken round-robin from `start`, one packet each in turn, so a host
// with a full ring gets one slot a round like a host with one packet; a
// host's turn takes its sparse ring's packet first, but after
// kSparseTurns such turns in a row while the bulk ring had packets the
// bulk ring's, so that a stream of new flows (a scan, or DHT lookups, from
// this host or one hashed to the same host queue) cannot starve the bulk
// ring (ringclock.h says what that costs in order). With hints, a ring
// whose stamps show nothing unread is passed over without a read; when
// that leaves the batch empty, every such ring is read after all. A packet
// that reached a ring without a stamp (a packet socket that bypasses the
// qdisc layer, and with it the clock's hook) is so read when the batch
// finds nothing else, or by a call without hints (the loop makes every
// 64th such a call), so steady traffic on other rings cannot hold it.
Napi::Value ReadQueues(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Slots s;
  uint64_t max, start, fdBytes, stateBytes, hosts = 0;
  uint8_t *fdData, *stateData;
  if (!ArgBuffer(info, 0, &fdData, &fdBytes, "fds") || !ArgSlots(info, 1, &s, &max) ||
      !ArgBuffer(info, 8, &stateData, &stateBytes, "states") || !ArgU64(info, 9, "start", &start))
    return env.Undefined();
  const bool hints = info.Length() > 10 && info[10].ToBoolean().Value();
  if (info.Length() > 11 && !info[11].IsUndefined() && !ArgU64(info, 11, "hosts", &hosts)) return env.Undefined();
  const size_t queues = fdBytes / sizeof(int32_t);
  if (hosts == 0) hosts = queues;
  constexpr size_t kMaxQueues = 1u << ringclock::kMaxQueueBits;
  if (queues == 0 || queues > kMaxQueues || stateBytes < queues * kRqFields * sizeof(double) ||
      (queues != hosts && queues != 2 * hosts)) {
    ThrowRange(env, "readQueues: 1 to 32 fds, one or two per host, and kRqFields doubles of state for each");
    return env.Undefined();
  }
  const int32_t* fds = reinterpret_cast<const int32_t*>(fdData);
  double* states = reinterpret_cast<double*>(stateData);
  Ring rings[kMaxQueues];
  bool hinted[kMaxQueues] = {};
  const double now = MonoNs();
  const double budget = states[kRqBatchBytes];
  const ringclock::Clock* clk = ClockOf(states);
  for (size_t i = 0; i < queues; i++) {
    rings[i].fd = fds[i];
    rings[i].q = states + i * kRqFields;
    BeginBatch(&rings[i], now, clk);
  }
  // A host's rings in the order its turn tries them: sparse, then bulk.
  const size_t perHost = queues / hosts;
  uint64_t n = 0;
  double bytes = 0;
  for (int pass = 0; pass < 2; pass++) {
    bool full = false;
    for (bool more = true; more && !full;) {
      more = false;
      for (size_t k = 0; k < hosts && !full; k++) {
        const size_t h = (start + k) % hosts;
        // perHost 2: j 0 the sparse ring first, 1 the bulk ring; after kSparseTurns sparse turns the other way round
        const bool bulkFirst = perHost == 1 || rings[h].q[kRqSparseRun] >= ringclock::kSparseTurns;
        // A sparse packet stamped since its ring was found empty in this batch goes first, as its flow's next
        // packets wait in the bulk ring behind it: the ring is looked at again (the stamps: no system call).
        if (perHost == 2) {
          Ring* sparse = &rings[h + hosts];
          if (sparse->done && !StampsSayEmpty(sparse->q, sparse->clk)) sparse->done = false;
        }
        for (size_t j = 0; j < perHost; j++) {
          Ring* r = &rings[h + ((j == 0) == bulkFirst ? 0 : hosts)];
          if (r->done) continue;
          if (pass == 0 && hints && StampsSayEmpty(r->q, r->clk)) {
            hinted[r - rings] = true;
            MarkEmpty(r, false);
            continue;
          }
          uint32_t len = 0;
          int e = 0;
          Got got = ReadOne(s, r, n, now, &len, &e);
          if (got == Got::kError) {
            if (n > 0) return Napi::Number::New(env, static_cast<double>(n));
            ThrowErrno(env, e, "read from TUN fd " + std::to_string(r->fd), "read");
            return env.Undefined();
          }
          if (got == Got::kEmpty) continue;
          more = true;
          if (got == Got::kPacket) {
            n++;
            bytes += len;
            full = n == max || (budget > 0 && bytes >= budget);
          }
          // A sparse turn counts only while the bulk ring has packets waiting.
          if (perHost == 2) {
            double& run = rings[h].q[kRqSparseRun];
            run = r != &rings[h] && !StampsSayEmpty(rings[h].q, rings[h].clk) ? run + 1 : 0;
          }
          break;  // the host's turn is taken
        }
      }
    }
    if (n > 0 || full || !hints) break;
    for (size_t i = 0; i < queues; i++) rings[i].done = !hinted[i];
  }
  return Napi::Number::New(env, static_cast<double>(n));
}

// queueWaiting(states) -> whether a read may find a packet: true when a
// ring's stamps show a packet not yet read, or when its numbering is not
// aligned (no clock, or not yet found empty: only a read can tell); false
// when every ring's stamps say it is empty. states: readBatch's queue, or
// readQueues' (kRqFields per host queue). No system call: the batch loop
// asks between two batches of the other TUN.
Napi::Value QueueWaiting(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint8_t* data;
  uint64_t bytes;
  if (!ArgBuffer(info, 0, &data, &bytes, "states")) return env.Undefined();
  const double* states = reinterpret_cast<const double*>(data);
  const size_t rings = bytes / (kRqFields * sizeof(double));
  const ringclock::Clock* clk = rings ? ClockOf(states) : nullptr;
  for (size_t i = 0; i < rings; i++) {
    if (!StampsSayEmpty(states + i * kRqFields, clk)) return Napi::Boolean::New(env, true);
  }
  return Napi::Boolean::New(env, rings == 0);
}

// Per-packet write failures: the packet is dropped and counted, the batch goes
// on. EAGAIN/ENOBUFS = queue full; EINVAL = the kernel rejected this packet
// (e.g. not IPv4/IPv6); EIO = the interface is down; EMSGSIZE = too big.
// Anything else (EBADF, EBADFD, EFAULT) means the fd itself is unusable.
bool IsPacketLevelWriteError(int e) {
  return e == EAGAIN || e == EWOULDBLOCK || e == ENOBUFS || e == ENOMEM ||
         e == EINVAL || e == EIO || e == EMSGSIZE;
}

// writeBatch(fd, buf, slotBase, slotSize, lenBase, verdictBase, count, want[, hdrBase, hdrStride[, linkBase]])
// With virtio headers each packet goes out behind its own header, as read
// (GSO passthrough: the kernel segments the super-packet, or not, further on).
// linkBase (option gro, assembly/nat/gro.ts): u16 per slot, the next
// datagram of a UDP GSO write the slot leads (0 = none). The leader goes out
// with the UDP payload of each linked slot (slot + hdr_len of the leader's
// virtio header) gathered behind it in one writev; linked slots carry
// another verdict and are never written on their own. A chain is checked
// before it is trusted: strictly increasing indices below count, each
// member's length inside its slot and past hdr_len, the whole ≤ 65535 bytes
// and at most kMaxGroSegs datagrams; a bad chain drops the group (counted).
constexpr uint64_t kMaxGroSegs = 64;
Napi::Value WriteBatch(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd;
  uint8_t* data;
  uint64_t len, slotBase, slotSize, lenBase, verdictBase, count, want, hdrBase = 0, hdrStride = 0, linkBase = 0;
  bool vnet;
  if (!ArgFd(info, 0, &fd) || !ArgBuffer(info, 1, &data, &len) ||
      !ArgU64(info, 2, "slotBase", &slotBase) || !ArgU64(info, 3, "slotSize", &slotSize) ||
      !ArgU64(info, 4, "lenBase", &lenBase) || !ArgU64(info, 5, "verdictBase", &verdictBase) ||
      !ArgU64(info, 6, "count", &count) || !ArgU64(info, 7, "want", &want) ||
      !ArgVnet(info, 8, len, count, &vnet, &hdrBase, &hdrStride))
    return env.Undefined();
  const bool links = vnet && info.Length() > 10 && !info[10].IsUndefined();
  if (links && !ArgU64(info, 10, "linkBase", &linkBase)) return env.Undefined();
  if (links && !Fits(len, linkBase, count, 2)) {
    ThrowRange(env, "writeBatch: links fall outside the buffer (byteLength " + std::to_string(len) + ")");
    return env.Undefined();
  }
  if (slotSize == 0 || slotSize > UINT32_MAX) {
    ThrowRange(env, "slotSize must be between 1 and 2^32-1");
    return env.Undefined();
  }
  if (want > 255) {
    ThrowRange(env, "want must be a byte (0..255)");
    return env.Undefined();
  }
  if (!Fits(len, slotBase, count, slotSize) || !Fits(len, lenBase, count, 4) ||
      !Fits(len, verdictBase, count, 1)) {
    ThrowRange(env, "writeBatch: slots, lengths or verdicts fall outside the buffer (byteLength " +
                        std::to_string(len) + ")");
    return env.Undefined();
  }

  uint64_t written = 0;
  for (uint64_t i = 0; i < count; i++) {
    if (data[verdictBase + i] != want) continue;
    uint32_t plen = LoadLE32(data + lenBase + 4 * i);
    // Never trust the engine's length to stay inside its slot.
    if (plen == 0 || plen > slotSize) {
      g_write_drops.fetch_add(1, std::memory_order_relaxed);
      continue;
    }
    struct iovec iov[2 + kMaxGroSegs];
    int iovcnt = 2;
    iov[0].iov_base = data + hdrBase + i * hdrStride;
    iov[0].iov_len = kVnetHdrLen;
    iov[1].iov_base = data + slotBase + i * slotSize;
    iov[1].iov_len = plen;
    uint64_t next = links ? (data[linkBase + 2 * i] | (data[linkBase + 2 * i + 1] << 8)) : 0;
    if (next != 0) {
      const uint8_t* h = data + hdrBase + i * hdrStride;
      const uint64_t hdrLen = h[2] | (h[3] << 8);
      uint64_t total = plen;
      uint64_t prev = i;
      bool ok = hdrLen >= 20 && hdrLen <= plen;
      while (ok && next != 0) {
        uint32_t mlen = LoadLE32(data + lenBase + 4 * next);
        ok = next > prev && next < count && iovcnt < static_cast<int>(1 + kMaxGroSegs) &&
             mlen > hdrLen && mlen <= slotSize && total + (mlen - hdrLen) <= 65535;
        if (!ok) break;
        iov[iovcnt].iov_base = data + slotBase + next * slotSize + hdrLen;
        iov[iovcnt].iov_len = mlen - hdrLen;
        iovcnt++;
        total += mlen - hdrLen;
        prev = next;
        next = data[linkBase + 2 * next] | (data[linkBase + 2 * next + 1] << 8);
      }
      if (!ok) {
        g_write_drops.fetch_add(1, std::memory_order_relaxed);
        continue;
      }
    }
    for (;;) {
      ssize_t r = vnet ? writev(fd, iov, iovcnt) : write(fd, iov[1].iov_base, plen);
      if (r >= 0) {
        written++;
        break;
      }
      int e = errno;
      if (e == EINTR) continue;
      if (IsPacketLevelWriteError(e)) {
        g_write_drops.fetch_add(1, std::memory_order_relaxed);
        break;
      }
      ThrowErrno(env, e, "write to TUN fd " + std::to_string(fd), "write");
      return env.Undefined();
    }
  }
  return Napi::Number::New(env, static_cast<double>(written));
}

Napi::Value WriteDrops(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), static_cast<double>(g_write_drops.load()));
}

Napi::Value QueueDrops(const Napi::CallbackInfo& info) {
  uint64_t sum = 0;
  for (int i = 0; i < kQueueClasses; i++) sum += g_queue_class_drops[i].load();
  return Napi::Number::New(info.Env(), static_cast<double>(sum));
}

// [tcp, udp, icmp, frag, other] head drops in this process.
Napi::Value QueueMarks(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), static_cast<double>(g_queue_marks.load()));
}

Napi::Value QueueTrims(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), static_cast<double>(g_queue_trims.load()));
}

Napi::Value QueueDropsByClass(const Napi::CallbackInfo& info) {
  Napi::Array a = Napi::Array::New(info.Env(), kQueueClasses);
  for (int i = 0; i < kQueueClasses; i++) a.Set(i, static_cast<double>(g_queue_class_drops[i].load()));
  return a;
}

Napi::Value ReadTruncated(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), static_cast<double>(g_read_truncated.load()));
}

Napi::Value SetNonBlocking(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd;
  if (!ArgFd(info, 0, &fd)) return env.Undefined();
  bool on = info.Length() < 2 || info[1].ToBoolean().Value();
  int fl = fcntl(fd, F_GETFL);
  if (fl < 0 || fcntl(fd, F_SETFL, on ? (fl | O_NONBLOCK) : (fl & ~O_NONBLOCK)) < 0) {
    ThrowErrno(env, errno, "fcntl on fd " + std::to_string(fd), "fcntl");
  }
  return env.Undefined();
}

// setRealtime(prio): the calling thread (Linux: scheduling is per thread)
// runs SCHED_FIFO at prio (1..99), or back to SCHED_OTHER with 0. For the
// data path's thread: woken by a packet, it runs at once, ahead of every
// ordinary process, as the kernel's own forwarding (softirq) does.
Napi::Value SetRealtime(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint64_t prio;
  if (!ArgU64(info, 0, "prio", &prio)) return env.Undefined();
  if (prio > 99) {
    ThrowRange(env, "prio must be between 0 and 99");
    return env.Undefined();
  }
  struct sched_param sp;
  std::memset(&sp, 0, sizeof sp);
  sp.sched_priority = static_cast<int>(prio);
  if (sched_setscheduler(0, prio ? SCHED_FIFO : SCHED_OTHER, &sp) < 0) {
    ThrowErrno(env, errno, "sched_setscheduler", "sched_setscheduler",
               errno == EPERM ? "needs CAP_SYS_NICE (root) and an RT runtime budget (cgroup cpu.rt_runtime_us)" : "");
  }
  return env.Undefined();
}

// adviseHugePages(buf, hugeBytes): asks for transparent huge pages under
// the hugeBytes-aligned middle of an ArrayBuffer (the engine's Wasm memory:
// its tables are hashed into at random, so with 4 KiB pages nearly every
// lookup beyond the first few MiB is also a TLB miss). MADV_HUGEPAGE marks
// the range; with THP in "madvise" mode (Debian's default) or "always" the
// kernel then backs each first touch there with a huge page, so the caller
// advises before the engine writes its tables. Returns [bytes advised, errno
// or 0, address of the advised range (to find it in /proc/self/smaps)];
// nothing is thrown: without THP the engine runs on 4 KiB pages as before.
Napi::Value AdviseHugePages(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsArrayBuffer()) {
    Napi::TypeError::New(env, "adviseHugePages(buffer, hugeBytes): buffer must be an ArrayBuffer").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  uint64_t huge;
  if (!ArgU64(info, 1, "hugeBytes", &huge)) return env.Undefined();
  if (huge == 0 || (huge & (huge - 1)) != 0) {
    ThrowRange(env, "hugeBytes must be a power of two");
    return env.Undefined();
  }
  Napi::ArrayBuffer ab = info[0].As<Napi::ArrayBuffer>();
  uintptr_t start = reinterpret_cast<uintptr_t>(ab.Data());
  uintptr_t first = (start + huge - 1) & ~(huge - 1);
  uintptr_t end = (start + ab.ByteLength()) & ~(huge - 1);
  double advised = 0;
  int err = 0;
  if (end > first) {
    if (madvise(reinterpret_cast<void*>(first), end - first, MADV_HUGEPAGE) == 0) advised = static_cast<double>(end - first);
    else err = errno;
  }
  Napi::Array r = Napi::Array::New(env, 3);
  r.Set(0u, advised);
  r.Set(1u, err);
  r.Set(2u, static_cast<double>(first));  // user addresses fit in 53 bits (47/48-bit VAs)
  return r;
}

// Optional argument i: a host queue key (ringclock::HostKey: 0 LAN, 1 remote), 0 when absent.
bool ArgHostKey(const Napi::CallbackInfo& info, size_t i, ringclock::HostKey* key) {
  uint64_t k = 0;
  if (info.Length() > i && !info[i].IsUndefined() && !ArgU64(info, i, "hostKey", &k)) return false;
  if (k > 1) {
    ThrowRange(info.Env(), "hostKey must be 0 (LAN hosts) or 1 (remote hosts)");
    return false;
  }
  *key = static_cast<ringclock::HostKey>(k);
  return true;
}

// ringClockAttach(ifname, segs[, hostBits[, hostKey]]) -> id: the ring clock (ringclock.h) on that
// device's egress. Throws with err.code = the errno name when the kernel or
// our privileges do not allow it; the caller falls back to the empty bound.
Napi::Value RingClockAttach(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsString()) {
    Napi::TypeError::New(env, "ifname must be a string").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  std::string err;
  int e = 0;
  uint64_t segs = 0;
  if (!ArgU64(info, 1, "segs", &segs)) return env.Undefined();
  if (segs > 2) {
    ThrowRange(env, "segs must be 0 (one entry a packet), 1 (every GSO packet cut) or 2 (UDP ones cut)");
    return env.Undefined();
  }
  uint64_t hostBits = 0;
  if (info.Length() > 2 && !ArgU64(info, 2, "hostBits", &hostBits)) return env.Undefined();
  if (hostBits > ringclock::kMaxHostBits) {
    ThrowRange(env, "hostBits must be 0 to 4 (1 to 16 host queues)");
    return env.Undefined();
  }
  ringclock::HostKey key;
  if (!ArgHostKey(info, 3, &key)) return env.Undefined();
  int id = ringclock::Attach(info[0].As<Napi::String>().Utf8Value(), static_cast<ringclock::Segs>(segs),
                             static_cast<uint32_t>(hostBits), key, &err, &e);
  if (id < 0) {
    Napi::Error x = Napi::Error::New(env, "ring clock: " + err);
    x.Value().Set("code", ErrnoName(e));
    x.Value().Set("errno", e);
    x.ThrowAsJavaScriptException();
    return env.Undefined();
  }
  return Napi::Number::New(env, id);
}

// ringClockDetach(id): removes the filter and unmaps the stamps; a second call is a no-op.
Napi::Value RingClockDetach(const Napi::CallbackInfo& info) {
  uint64_t id;
  if (!ArgU64(info, 0, "id", &id)) return info.Env().Undefined();
  if (id <= INT32_MAX) ringclock::Detach(static_cast<int>(id));
  return info.Env().Undefined();
}

// tunSteer(fd, hostBits[, hostKey]): the host queues' steering program on the
// multi-queue TUN of fd (ringclock.h hostqueue); throws with the errno.
Napi::Value TunSteer(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd;
  uint64_t bits;
  ringclock::HostKey key;
  if (!ArgFd(info, 0, &fd) || !ArgU64(info, 1, "hostBits", &bits) || !ArgHostKey(info, 2, &key)) return env.Undefined();
  std::string err;
  int e = hostqueue::Steer(fd, static_cast<uint32_t>(bits > 31 ? 0 : bits), key, &err);
  if (e != 0) ThrowErrno(env, e, "host queues on TUN fd " + std::to_string(fd) + ": " + err, "bpf");
  return env.Undefined();
}

// tunUnsteer(fd): the device's steering program off again (a persistent TUN would keep it).
Napi::Value TunUnsteer(const Napi::CallbackInfo& info) {
  int fd;
  if (ArgFd(info, 0, &fd)) hostqueue::Unsteer(fd);
  return info.Env().Undefined();
}

// epollOf(fds: Int32Array buffer) -> an epoll fd, level-triggered, readable
// while any of fds is: one Poller for all the queues of a multi-queue TUN.
Napi::Value EpollOf(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint8_t* data;
  uint64_t bytes;
  if (!ArgBuffer(info, 0, &data, &bytes, "fds")) return env.Undefined();
  const int32_t* fds = reinterpret_cast<const int32_t*>(data);
  int ep = epoll_create1(EPOLL_CLOEXEC);
  if (ep < 0) {
    ThrowErrno(env, errno, "epoll_create1", "epoll_create1");
    return env.Undefined();
  }
  for (size_t i = 0; i < bytes / sizeof(int32_t); i++) {
    struct epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.fd = fds[i];
    if (epoll_ctl(ep, EPOLL_CTL_ADD, fds[i], &ev) < 0) {
      int e = errno;
      close(ep);
      ThrowErrno(env, e, "epoll_ctl add fd " + std::to_string(fds[i]), "epoll_ctl");
      return env.Undefined();
    }
  }
  return Napi::Number::New(env, ep);
}

Napi::Value CloseFd(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd;
  if (!ArgFd(info, 0, &fd)) return env.Undefined();
  // No retry on EINTR: Linux has released the fd already, and a retry could
  // close an fd number that another thread has just been handed.
  if (close(fd) < 0 && errno != EINTR) {
    ThrowErrno(env, errno, "close fd " + std::to_string(fd), "close");
  }
  return env.Undefined();
}

// Poller: wakes a JS callback when the fd is readable. The uv_poll_t lives in
// its own heap block because libuv owns it until the close callback runs,
// which can be after the JS object (and this C++ object) is gone.
class Poller : public Napi::ObjectWrap<Poller> {
 public:
  static Napi::Function Init(Napi::Env env) {
    return DefineClass(env, "Poller",
                       {InstanceMethod<&Poller::Start>("start"),
                        InstanceMethod<&Poller::Stop>("stop"),
                        InstanceMethod<&Poller::Close>("close")});
  }

  Poller(const Napi::CallbackInfo& info)
      : Napi::ObjectWrap<Poller>(info), async_(info.Env(), "vpnmasq:TunPoller") {
    Napi::Env env = info.Env();
    env_ = env;
    int fd;
    if (!ArgFd(info, 0, &fd)) return;
    if (info.Length() < 2 || !info[1].IsFunction()) {
      Napi::TypeError::New(env, "callback must be a function").ThrowAsJavaScriptException();
      return;
    }
    callback_ = Napi::Persistent(info[1].As<Napi::Function>());
    uv_loop_t* loop = nullptr;
    if (napi_get_uv_event_loop(env, &loop) != napi_ok || loop == nullptr) {
      Napi::Error::New(env, "no libuv loop").ThrowAsJavaScriptException();
      return;
    }
    handle_ = new Handle;
    handle_->owner = this;
    int rc = uv_poll_init(loop, &handle_->poll, fd);
    if (rc != 0) {
      delete handle_;  // never initialised, so libuv does not own it
      handle_ = nullptr;
      ThrowErrno(env, -rc, "cannot poll fd " + std::to_string(fd), "uv_poll_init");
      return;
    }
    handle_->poll.data = handle_;
    // A worker's loop must have no open handles when it is torn down or
    // Node aborts; this hook closes ours if JS never called close().
    napi_add_env_cleanup_hook(env, &Poller::EnvCleanup, this);
    hooked_ = true;
  }

  ~Poller() override { CloseHandle(); }

 private:
  struct Handle {
    uv_poll_t poll;
    Poller* owner;
  };

  Napi::Value Start(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!handle_) {
      Napi::Error::New(env, "Poller is closed").ThrowAsJavaScriptException();
      return env.Undefined();
    }
    if (active_) return env.Undefined();
    int rc = uv_poll_start(&handle_->poll, UV_READABLE, &Poller::OnPoll);
    if (rc != 0) {
      ThrowErrno(env, -rc, "cannot start polling", "uv_poll_start");
      return env.Undefined();
    }
    // While polling, the JS object must not be collected: libuv would call
    // back into freed memory. Strong ref from start() to stop()/close().
    active_ = true;
    Ref();
    return env.Undefined();
  }

  Napi::Value Stop(const Napi::CallbackInfo& info) {
    StopPolling();
    return info.Env().Undefined();
  }

  Napi::Value Close(const Napi::CallbackInfo& info) {
    StopPolling();
    CloseHandle();
    return info.Env().Undefined();
  }

  void StopPolling() {
    if (!active_) return;
    // uv_poll_stop removes the fd from epoll at once, so the caller may
    // close the fd right after stop()/close().
    if (handle_) uv_poll_stop(&handle_->poll);
    active_ = false;
    Unref();
  }

  // Safe from finalizers and cleanup hooks: touches no JS values.
  void CloseHandle() {
    if (handle_) {
      handle_->owner = nullptr;
      uv_close(reinterpret_cast<uv_handle_t*>(&handle_->poll), [](uv_handle_t* h) {
        delete static_cast<Handle*>(h->data);
      });
      handle_ = nullptr;
    }
    if (hooked_) {
      hooked_ = false;
      napi_remove_env_cleanup_hook(env_, &Poller::EnvCleanup, this);
    }
  }

  static void EnvCleanup(void* arg) {
    Poller* self = static_cast<Poller*>(arg);
    self->hooked_ = false;  // the hook is being consumed right now
    self->CloseHandle();
  }

  static void OnPoll(uv_poll_t* h, int status, int /*events*/) {
    Handle* handle = static_cast<Handle*>(h->data);
    Poller* self = handle->owner;
    if (!self) return;
    Napi::Env env = self->env_;
    Napi::HandleScope scope(env);
    if (status < 0 && self->active_) {
      // libuv has already stopped the watcher (POLLERR, e.g. the device was
      // deleted). Wake JS anyway so its readBatch throws the real errno.
      self->active_ = false;
      self->Unref();
    }
    // MakeCallback (not Call) so async_hooks context, process.nextTick and
    // promise jobs run after the callback, as for any libuv-driven event.
    // `self` may be closed by the callback; do not touch it afterwards.
    self->callback_.MakeCallback(self->Value(), {}, self->async_);
    if (env.IsExceptionPending()) {
      // No JS frame to propagate to: route it to 'uncaughtException'.
      Napi::Error err = env.GetAndClearPendingException();
      napi_fatal_exception(env, err.Value());
    }
  }

  napi_env env_ = nullptr;
  Napi::FunctionReference callback_;
  Napi::AsyncContext async_;
  Handle* handle_ = nullptr;
  bool active_ = false;
  bool hooked_ = false;
};

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("openTun", Napi::Function::New<OpenTun>(env, "openTun"));
  exports.Set("tunName", Napi::Function::New<TunName>(env, "tunName"));
  exports.Set("tunOffload", Napi::Function::New<TunOffload>(env, "tunOffload"));
  exports.Set("tunFlags", Napi::Function::New<TunFlags>(env, "tunFlags"));
  exports.Set("readBatch", Napi::Function::New<ReadBatch>(env, "readBatch"));
  exports.Set("readQueues", Napi::Function::New<ReadQueues>(env, "readQueues"));
  exports.Set("queueWaiting", Napi::Function::New<QueueWaiting>(env, "queueWaiting"));
  exports.Set("tunSteer", Napi::Function::New<TunSteer>(env, "tunSteer"));
  exports.Set("tunUnsteer", Napi::Function::New<TunUnsteer>(env, "tunUnsteer"));
  exports.Set("epollOf", Napi::Function::New<EpollOf>(env, "epollOf"));
  exports.Set("writeBatch", Napi::Function::New<WriteBatch>(env, "writeBatch"));
  exports.Set("writeDrops", Napi::Function::New<WriteDrops>(env, "writeDrops"));
  exports.Set("queueDrops", Napi::Function::New<QueueDrops>(env, "queueDrops"));
  exports.Set("queueMarks", Napi::Function::New<QueueMarks>(env, "queueMarks"));
  exports.Set("queueTrims", Napi::Function::New<QueueTrims>(env, "queueTrims"));
  exports.Set("queueDropsByClass", Napi::Function::New<QueueDropsByClass>(env, "queueDropsByClass"));
  exports.Set("readTruncated", Napi::Function::New<ReadTruncated>(env, "readTruncated"));
  exports.Set("setNonBlocking", Napi::Function::New<SetNonBlocking>(env, "setNonBlocking"));
  exports.Set("setRealtime", Napi::Function::New<SetRealtime>(env, "setRealtime"));
  exports.Set("adviseHugePages", Napi::Function::New<AdviseHugePages>(env, "adviseHugePages"));
  exports.Set("ringClockAttach", Napi::Function::New<RingClockAttach>(env, "ringClockAttach"));
  exports.Set("ringClockDetach", Napi::Function::New<RingClockDetach>(env, "ringClockDetach"));
  exports.Set("closeFd", Napi::Function::New<CloseFd>(env, "closeFd"));
  exports.Set("fastPathOpen", Napi::Function::New<fastpath::NapiOpen>(env, "fastPathOpen"));
  exports.Set("fastPathClose", Napi::Function::New<fastpath::NapiClose>(env, "fastPathClose"));
  exports.Set("fastPathPut", Napi::Function::New<fastpath::NapiPut>(env, "fastPathPut"));
  exports.Set("fastPathDelete", Napi::Function::New<fastpath::NapiDelete>(env, "fastPathDelete"));
  exports.Set("fastPathGet", Napi::Function::New<fastpath::NapiGet>(env, "fastPathGet"));
  exports.Set("fastPathKeys", Napi::Function::New<fastpath::NapiKeys>(env, "fastPathKeys"));
  exports.Set("fastPathReadBatch", Napi::Function::New<fastpath::NapiReadBatch>(env, "fastPathReadBatch"));
  exports.Set("fastPathStats", Napi::Function::New<fastpath::NapiStats>(env, "fastPathStats"));
  exports.Set("Poller", Poller::Init(env));
  return exports;
}

}  // namespace

NODE_API_MODULE(vpnmasq_tun, Init)
