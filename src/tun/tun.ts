// TUN devices for the supervisor. The native addon (src/tun/addon.cc) moves
// whole batches of packets between the kernel and the engine's
// WebAssembly.Memory, so the hot path allocates no JS objects per packet.
//
// Memory layout shared with the engine (all offsets are byte offsets into
// `mem`, which must be the *current* memory.buffer: after memory.grow() the
// old ArrayBuffer is detached and every call on it throws RangeError):
//   slot i     at slotBase + i * slotSize   (the packet, starting at the IP header)
//   length i   at lenBase + 4 * i           (u32, little-endian)
//   verdict i  at verdictBase + i           (u8; writeBatch sends slot i iff it equals `want`)
//   header i   at hdrBase + hdrStride * i   (a device opened with vnet: the packet's
//                                            10-byte virtio_net_hdr, read and written with it)
//   link i     at linkBase + 2 * i          (u16, option gro, vnet only: the next datagram of
//                                            the UDP GSO write slot i leads, 0 = none; the
//                                            addon appends its bytes from hdr_len on)
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export interface PacketDevice {
  readonly name: string;
  /** true: every packet travels behind a virtio_net_hdr (pass hdrBase/hdrStride) */
  readonly vnet?: boolean;
  /** read up to max packets into memory; returns count */
  readBatch(mem: ArrayBuffer, slotBase: number, slotSize: number, lenBase: number, max: number,
    hdrBase?: number, hdrStride?: number): number;
  /** write every slot i < count whose verdict byte equals want; returns how many were written */
  writeBatch(
    mem: ArrayBuffer,
    slotBase: number,
    slotSize: number,
    lenBase: number,
    verdictBase: number,
    count: number,
    want: number,
    hdrBase?: number,
    hdrStride?: number,
    linkBase?: number,
  ): number;
  /**
   * false when a read would find nothing, known without one (the ring
   * clock's stamps); true when there may be packets. The batch loop asks
   * between two batches of the other device. Absent: not known.
   */
  waiting?(): boolean;
  /** start waking cb when readable */
  onReadable(cb: () => void): void;
  /** idempotent; stops polling, closes fd (kernel removes a non-persistent TUN) */
  close(): void;
}

/** Error thrown by the addon: `code` is the errno name (EPERM, EBUSY, ...). */
export interface TunError extends Error {
  code: string;
  errno: number;
  syscall: string;
}

interface NativePoller {
  start(): void;
  stop(): void;
  close(): void;
}

/** TUNSETOFFLOAD bits (linux/if_tun.h). */
export const TUN_F = { CSUM: 0x01, TSO4: 0x02, TSO6: 0x04, TSO_ECN: 0x08, UFO: 0x10, USO4: 0x20, USO6: 0x40 } as const;
export const IFF_VNET_HDR = 0x4000;

/** Names of the offload bits set in `bits`, e.g. ['csum', 'tso4', 'tso6']. */
export function offloadNames(bits: number): string[] {
  return Object.entries(TUN_F).filter(([, b]) => (bits & b) !== 0).map(([k]) => k.toLowerCase());
}

interface Native {
  openTun(name: string, vnet?: boolean, multiQueue?: boolean): number;
  tunName(fd: number): string;
  tunOffload(fd: number, uso: boolean): number;
  tunFlags(fd: number): number;
  readBatch(fd: number, buf: ArrayBuffer, slotBase: number, slotSize: number, lenBase: number, max: number,
    hdrBase?: number, hdrStride?: number, queue?: ArrayBuffer): number;
  writeBatch(
    fd: number,
    buf: ArrayBuffer,
    slotBase: number,
    slotSize: number,
    lenBase: number,
    verdictBase: number,
    count: number,
    want: number,
    hdrBase?: number,
    hdrStride?: number,
    linkBase?: number,
  ): number;
  readQueues(fds: ArrayBuffer, buf: ArrayBuffer, slotBase: number, slotSize: number, lenBase: number, max: number,
    hdrBase: number | undefined, hdrStride: number | undefined, states: ArrayBuffer, start: number, hints: boolean, hosts?: number): number;
  queueWaiting(states: ArrayBuffer): boolean;
  tunSteer(fd: number, hostBits: number, hostKey?: number): void;
  tunUnsteer(fd: number): void;
  epollOf(fds: ArrayBuffer): number;
  writeDrops(): number;
  queueDrops(): number;
  queueDropsByClass(): number[];
  queueTrims(): number;
  queueMarks(): number;
  readTruncated(): number;
  setNonBlocking(fd: number, on?: boolean): void;
  setRealtime(prio: number): void;
  closeFd(fd: number): void;
  ringClockAttach(ifname: string, segs: number, hostBits?: number, hostKey?: number): number;
  ringClockDetach(id: number): void;
  adviseHugePages(buf: ArrayBuffer, hugeBytes: number): [advised: number, errno: number, address: number];
  Poller: new (fd: number, cb: () => void) => NativePoller;
}

// src/tun/tun.ts and dist/tun/tun.js both sit two levels below the package
// root, which is where node-gyp-build looks for build/Release or prebuilds/.
const packageRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

let native: Native | undefined;

/**
 * Loaded on first use rather than at import, so code that only needs the
 * types or FakeTun runs without a compiled addon.
 */
export function loadNative(): Native {
  if (native) return native;
  const require = createRequire(import.meta.url);
  try {
    const load = require('node-gyp-build') as (dir: string) => unknown;
    native = load(packageRoot) as Native;
  } catch (err) {
    throw new Error(
      `cannot load the vpnmasq_tun addon from ${packageRoot}: ${(err as Error).message.split('\n')[0]} ` +
        '— build it with `npm run build:addon`',
      { cause: err },
    );
  }
  return native;
}

/** Packets dropped by writeBatch in this process (full queue, link down, bad length, ...). */
export function writeDrops(): number {
  return loadNative().writeDrops();
}

/** Packets the readers' queue discipline dropped at the head in this process (see ReaderQueue). */
export function queueDrops(): number {
  return loadNative().queueDrops();
}

/** The classes head drops are counted under (addon.cc QueueClass): frag is an IPv4 fragment of any protocol; other: ESP, GRE, IPv6, short reads. */
export const QUEUE_CLASSES = ['tcp', 'udp', 'icmp', 'frag', 'other'] as const;
export type QueueClass = (typeof QUEUE_CLASSES)[number];

/** The head drops of queueDrops() by packet class. */
export function queueDropsByClass(): Record<QueueClass, number> {
  const a = loadNative().queueDropsByClass();
  return Object.fromEntries(QUEUE_CLASSES.map((c, i) => [c, a[i] ?? 0])) as Record<QueueClass, number>;
}

/** Of the head drops, those that took only a TCP or UDP super-packet's last segment (addon.cc TrimLastSegment). */
export function queueTrims(): number {
  return loadNative().queueTrims();
}

/** CoDel's drops that became an ECN CE mark on an ECN-capable packet instead (addon.cc MarkCe). */
export function queueMarks(): number {
  return loadNative().queueMarks();
}

/** Packets dropped by readBatch because they were larger than slotSize. */
export function readTruncated(): number {
  return loadNative().readTruncated();
}

/**
 * The reader's queue discipline (src/tun/addon.cc explains it): a TUN has
 * no qdisc that holds packets (it drops at its ring instead of stopping the
 * queue), so the ring toward our reads is the queue: TCP fills it, and so
 * does a flood of small packets. Each device's reads run CoDel on each
 * packet's time in the ring (the ring clock, src/tun/ringclock.h; where it
 * cannot be attached, on "time since the ring was last found empty") and
 * drop packets of every class at the head; batches stop after batchBytes.
 */
export interface ReaderQueue {
  /** a batch stops after this many IP bytes (one 64 KB super-packet more at most); 0: only the slot count */
  batchBytes: number;
  /** CoDel target in µs (0: never drop) */
  targetUs: number;
  /** CoDel interval in µs */
  intervalUs: number;
}

/**
 * 256 KB a batch: with offloads 4 super-packets, well under a millisecond of
 * writes, then the other TUN's turn; small packets still come 64 (the slot
 * count) a batch. Target 500 µs and interval 5 ms: a ring that has not been
 * empty for 0.5 ms for 5 ms running is a standing queue (measured in
 * README "Latency under load").
 */
export const READER_QUEUE: ReaderQueue = { batchBytes: 256 * 1024, targetUs: 500, intervalUs: 5000 };

/**
 * The same for a device with host queues: target 2 ms, interval 40 ms. There
 * a ring holds one LAN host's bulk (its sparse flows wait in its sparse
 * ring) or one internet host's packets of one protocol, and the reader takes
 * the rings in turn, so a ring's standing queue delays only its own
 * packets. READER_QUEUE's 0.5 ms there dropped bursts of bulk TCP that were
 * no standing queue (12 % of a 4-stream download's super-packets, 8,500
 * retransmits in 4 s) and the pings were no faster for it; fq_codel's
 * per-flow 5 ms / 100 ms let the tails grow. Of the three, measured side by
 * side, this one had the most throughput and the lowest ping p90 and p99
 * (README "CoDel's target with host queues").
 */
export const READER_QUEUE_HOST_QUEUES: ReaderQueue = { ...READER_QUEUE, targetUs: 2000, intervalUs: 40_000 };

/** Float64Array fields of the queue's state (the RQ enum in addon.cc). */
const RQ_DROPS_CLASS = 10;
const RQ_CLOCK = RQ_DROPS_CLASS + QUEUE_CLASSES.length;
const RQ_READ_SEQ = RQ_CLOCK + 1;
const RQ_LAST_SOJOURN = RQ_CLOCK + 2;
const RQ_MAX_SOJOURN = RQ_CLOCK + 3;
const RQ_TRIMS = RQ_CLOCK + 4;
const RQ_MARKS = RQ_CLOCK + 5;
const RQ_EMPTY_KNOWN = RQ_CLOCK + 6;
const RQ_HOST_QUEUE = RQ_CLOCK + 9; // after the stamp in use: its end and its time (addon.cc)
const RQ_FIELDS = RQ_CLOCK + 11; // the last: a host queue's last turn took its sparse ring

/** ringClockAttach's segs (ringclock.h Segs): which GSO packets reach the ring as their segments. */
const RING_SEGS = { ONE: 0, ALL: 1, UDP: 2 } as const;

/**
 * How a reader queue learns each packet's time in the ring: 'stamps' (the
 * ring clock's eBPF stamps), or 'empty' ("time since the ring was last
 * empty", an upper bound) with the reason the clock is not there.
 */
export interface QueueClock {
  kind: 'stamps' | 'empty';
  reason?: string;
}

/** VPNMASQ_QUEUE_CLOCK=empty: run the reader queue on the ring-empty bound (for A/B comparisons); anything else: the ring clock where it attaches. */
export function queueClockWanted(): boolean {
  return process.env.VPNMASQ_QUEUE_CLOCK !== 'empty';
}

export interface TunOpenOptions {
  /** IFF_VNET_HDR and TUNSETOFFLOAD: GSO super-packets and partial checksums (default off) */
  offload?: boolean;
  /** also ask for UDP segmentation offload (USO, Linux 6.2+); default true with offload */
  uso?: boolean;
  /** the reader's queue discipline (default READER_QUEUE; null: none, plain reads of up to the slot count) */
  queue?: ReaderQueue | null;
  /**
   * Host queues (ringclock.h hostqueue): a multi-queue TUN of this many
   * rings (1, 2, 4, 8 or 16), each IPv4 source address steered to one of
   * them, read round-robin, each with its own CoDel. Needs the queue
   * discipline's ring clock; where the device, the kernel or our privileges
   * refuse a part, the device runs with one ring and hostQueuesNote says
   * why. Default 1.
   */
  hostQueues?: number;
  /**
   * What the host queues are keyed by (ringclock.h HostKey): 'lan' (the
   * default), a LAN host's source address, each host queue a bulk and a
   * sparse ring; 'remote', for the WAN TUN, an internet host's source
   * address and the protocol, one ring each.
   */
  hostQueueKey?: HostQueueKey;
}

/** ringclock.h HostKey: what a device's host queues are keyed by. */
export type HostQueueKey = 'lan' | 'remote';
const HOST_KEY: Record<HostQueueKey, number> = { lan: 0, remote: 1 };

/** The ring counts host queues come in (powers of two: the steering hash takes the top bits; ringclock.h kMaxQueueBits). */
export const HOST_QUEUE_COUNTS: readonly number[] = [1, 2, 4, 8, 16];
/** The same for messages: "1, 2, 4, 8 or 16". */
export const HOST_QUEUE_COUNTS_TEXT = `${HOST_QUEUE_COUNTS.slice(0, -1).join(', ')} or ${HOST_QUEUE_COUNTS.at(-1)}`;

/** readQueues without its hints every this many batches: a packet that reached a ring unstamped is read all the same. */
const FULL_PASS_EVERY = 64;

/** The host queue (ringclock.h hostqueue::HostQueue) of an IPv4 source address (a 32-bit number) among 2^bits. */
export function hostQueueOf(saddr: number, bits: number): number {
  return bits === 0 ? 0 : Math.imul(saddr >>> 0, 0x9e3779b1) >>> (32 - bits);
}

/** The WAN TUN's host queue (ringclock.h hostqueue::RemoteQueue) of a source address and an IPv4 protocol number. */
export function remoteQueueOf(saddr: number, protocol: number, bits: number): number {
  return bits === 0 ? 0 : (hostQueueOf(saddr, bits) + protocol + (protocol >> 3)) & ((1 << bits) - 1);
}

/**
 * The reader queue a TunDevice.open without `queue` gets: VPNMASQ_READER_QUEUE, else READER_QUEUE (and then
 * READER_QUEUE_HOST_QUEUES once the device has its host queues).
 */
export function readerQueueWanted(): ReaderQueue {
  return queueFromEnv() ?? READER_QUEUE;
}

/**
 * The length of each TUN's ring (`txqueuelen`, packets; README "Floods that
 * are not TCP" measures the choice): it bounds the delay a flood the reader
 * cannot keep up with adds for everyone (ring length / packets read per
 * second: 1000 at 120,000 pps is 8 ms, 4096 was 34 ms), and it must hold the
 * bursts senders make while the reader waits for its CPU (with offloads an
 * entry may be a 64 KB super-packet: TCP did not lose throughput at 1000).
 * Ethernet's default.
 */
export const TUN_TXQUEUELEN = 1000;

/** TUN_TXQUEUELEN, or VPNMASQ_TXQUEUELEN for comparisons (an integer 1..65536). */
export function txQueueLenWanted(): number {
  const v = process.env.VPNMASQ_TXQUEUELEN;
  if (!v) return TUN_TXQUEUELEN;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1 || n > 65536) throw new RangeError(`VPNMASQ_TXQUEUELEN must be an integer 1..65536, not ${JSON.stringify(v)}`);
  return n;
}

function queueFromEnv(): ReaderQueue | undefined {
  const v = process.env.VPNMASQ_READER_QUEUE;
  if (!v) return undefined;
  const [batchBytes, targetUs, intervalUs] = v.split(',').map(Number);
  return { batchBytes: batchBytes!, targetUs: targetUs!, intervalUs: intervalUs! };
}

/** Why a device with this reader queue cannot have host queues, known before it is opened ('' when it can). */
function hostQueuesRefused(queue: ReaderQueue | null): string {
  if (!queue || !(queue.targetUs > 0)) return 'no reader queue (CoDel) to run them';
  if (!queueClockWanted()) return 'VPNMASQ_QUEUE_CLOCK=empty (host queues are read by their ring clock stamps)';
  return '';
}

export class TunDevice implements PacketDevice {
  readonly name: string;
  /** Opened with IFF_VNET_HDR: reads and writes carry a virtio_net_hdr. */
  vnet = false;
  /** TUN_F_* bits the kernel accepted (0 without offloads). */
  offloads = 0;
  /** The queue discipline's policy and state (RQ_FIELDS doubles per host queue), or null. */
  #queue: Float64Array | null = null;
  /**
   * Host queues: the rings' fds (the first is #fd; host h's bulk ring is
   * #fds[h], its sparse ring #fds[#hosts + h], or with 'remote' keys its one
   * ring #fds[h]), the epoll set the poller watches, the batches read.
   */
  #fds: Int32Array;
  #hosts = 1;
  #hostKey: HostQueueKey = 'lan';
  #epfd = -1;
  #calls = 0;
  /** Why the device has fewer host queues than asked for ('' when it has them all). */
  hostQueuesNote = '';
  /** The ring clock's id in the addon, or -1. */
  #clock = -1;
  #queueClock: QueueClock | null = null;
  #fd: number;
  #poller: NativePoller | null = null;
  #cb: (() => void) | null = null;
  readonly #native: Native;

  private constructor(nat: Native, fd: number) {
    this.#native = nat;
    this.#fd = fd;
    this.#fds = Int32Array.of(fd);
    try {
      // The kernel's name, which differs from the request for patterns like "tun%d".
      this.name = nat.tunName(fd);
    } catch (err) {
      nat.closeFd(fd);
      throw err;
    }
  }

  /**
   * Creates (or attaches to) the TUN interface `name`, IFF_TUN|IFF_NO_PI,
   * non-blocking. Throws a TunError (code EPERM without CAP_NET_ADMIN, EBUSY
   * when the name is taken, EINVAL for a bad name).
   */
  static open(name: string, opts: TunOpenOptions = {}): TunDevice {
    const nat = loadNative();
    const fromEnv = opts.queue === undefined ? queueFromEnv() : undefined;
    const queue = opts.queue === undefined ? (fromEnv ?? READER_QUEUE) : opts.queue;
    const want = opts.hostQueues ?? 1;
    if (!HOST_QUEUE_COUNTS.includes(want)) throw new RangeError(`host queues must be ${HOST_QUEUE_COUNTS_TEXT}, not ${want}`);
    // What host queues need and can be known before the device exists (a device made multi-queue stays so).
    let note = want > 1 ? hostQueuesRefused(queue) : '';
    let dev: TunDevice;
    if (want > 1 && !note) {
      try {
        dev = new TunDevice(nat, nat.openTun(name, !!opts.offload, true));
      } catch (err) {
        // A device made without IFF_MULTI_QUEUE (ip tuntap add without multi_queue) refuses it: one ring then.
        if ((err as TunError).code !== 'EINVAL') throw err;
        dev = new TunDevice(nat, nat.openTun(name, !!opts.offload));
        note = `${name} is a single-queue device`;
      }
    } else {
      dev = new TunDevice(nat, nat.openTun(name, !!opts.offload));
    }
    try {
      if (opts.offload) {
        dev.vnet = (nat.tunFlags(dev.fd) & IFF_VNET_HDR) !== 0;
        if (dev.vnet) dev.offloads = nat.tunOffload(dev.fd, opts.uso ?? true);
      }
      if (want > 1 && !note) note = dev.#addQueues(want, opts.hostQueueKey ?? 'lan');
    } catch (err) {
      dev.close();
      throw err;
    }
    dev.hostQueuesNote = note;
    // After the offloads: they decide which GSO packets reach the ring as segments (the ring clock counts those).
    // The default queue is READER_QUEUE_HOST_QUEUES on host queues, and READER_QUEUE again where setQueue drops
    // them to one ring (no ring clock).
    const hostDefault = opts.queue === undefined && !fromEnv && dev.#fds.length > 1;
    if (queue) dev.setQueue(hostDefault ? READER_QUEUE_HOST_QUEUES : queue);
    if (hostDefault && dev.#fds.length === 1) dev.setQueue(READER_QUEUE);
    return dev;
  }

  /**
   * The other rings of a multi-queue device, and the steering program that
   * spreads the LAN hosts over them; '' when all is in place, else why the
   * device stays at one ring (the extra rings closed again).
   */
  #addQueues(want: number, key: HostQueueKey): string {
    const nat = this.#native;
    const fds = [this.#fd];
    try {
      // A LAN host queue has two rings, bulk and sparse flows (ringclock.h hostqueue); a remote one, one.
      while (fds.length < (key === 'lan' ? 2 : 1) * want) fds.push(nat.openTun(this.name, this.vnet, true));
      nat.tunSteer(this.#fd, Math.log2(want), HOST_KEY[key]);
    } catch (err) {
      for (const fd of fds.slice(1)) nat.closeFd(fd);
      return (err as Error).message;
    }
    this.#fds = Int32Array.from(fds);
    this.#hosts = want;
    this.#hostKey = key;
    return '';
  }

  /** The device's host queues (1 without them). */
  get hostQueues(): number {
    return this.#hosts;
  }

  /** The device's rings: two a LAN host queue (bulk, sparse), one a remote one, 1 without host queues. */
  get rings(): number {
    return this.#fds.length;
  }

  /**
   * Sets the reader's queue discipline (the state starts afresh); null:
   * none. With a CoDel target the ring clock is attached to the device's
   * egress the first time (and stays until close); where the kernel or our
   * privileges refuse it, queueClock says why and the ring-empty bound runs.
   */
  setQueue(q: ReaderQueue | null): void {
    if (!q) {
      if (this.#fds.length > 1) this.#dropQueues('no reader queue (CoDel) to run them');
      this.#queue = null;
      this.#queueClock = null;
      return;
    }
    for (const [k, v] of Object.entries(q)) {
      if (!Number.isFinite(v) || v < 0) throw new RangeError(`reader queue: ${k} must be a non-negative number`);
    }
    if (q.targetUs > 0 && !(q.intervalUs > 0)) throw new RangeError('reader queue: intervalUs must be positive with a target');
    this.#queueClock = q.targetUs > 0 ? this.#attachClock() : null;
    if (this.#fds.length > 1 && this.#queueClock?.kind !== 'stamps') this.#dropQueues(`no ring clock (${this.#queueClock?.reason ?? 'no CoDel'})`);
    const a = new Float64Array(RQ_FIELDS * this.#fds.length);
    for (let i = 0; i < this.#fds.length; i++) {
      const o = i * RQ_FIELDS;
      a[o] = q.batchBytes;
      a[o + 1] = q.targetUs * 1000;
      a[o + 2] = q.intervalUs * 1000;
      a[o + 4] = 1; // found empty: the first read starts the clock
      a[o + RQ_CLOCK] = this.#queueClock?.kind === 'stamps' ? this.#clock : -1;
      a[o + RQ_READ_SEQ] = -1; // the stamps' numbering aligns when a read first finds the ring empty
      a[o + RQ_HOST_QUEUE] = i;
    }
    this.#queue = a;
  }

  /** Back to one ring: the others closed (their packets lost, as at a device's close), the steering taken off. */
  #dropQueues(why: string): void {
    for (const fd of this.#fds.subarray(1)) this.#native.closeFd(fd);
    this.#fds = Int32Array.of(this.#fd);
    this.#hosts = 1;
    this.#native.tunUnsteer(this.#fd);
    this.hostQueuesNote = why;
    // A clock that numbers by host queue would no longer match the one ring.
    if (this.#clock >= 0) this.#native.ringClockDetach(this.#clock);
    this.#clock = -1;
  }

  /**
   * Which GSO packets the kernel cuts into segments after the ring clock's
   * hook, before the ring (ringclock.h Segs): without TSO every one; with
   * TSO but no USO the UDP ones; with both none.
   */
  #cutBySegs(): number {
    if (!(this.offloads & TUN_F.TSO4)) return RING_SEGS.ALL;
    return this.offloads & TUN_F.USO4 ? RING_SEGS.ONE : RING_SEGS.UDP;
  }

  #attachClock(): QueueClock {
    if (this.#clock >= 0) return { kind: 'stamps' };
    if (!queueClockWanted()) return { kind: 'empty', reason: 'VPNMASQ_QUEUE_CLOCK=empty' };
    try {
      this.#clock = this.#native.ringClockAttach(this.name, this.#cutBySegs(), Math.log2(this.#hosts), HOST_KEY[this.#hostKey]);
      return { kind: 'stamps' };
    } catch (err) {
      return { kind: 'empty', reason: (err as Error).message.replace(/^ring clock: /, '') };
    }
  }

  /** How the queue discipline times packets (null: no CoDel). */
  get queueClock(): QueueClock | null {
    return this.#queueClock;
  }

  /** The sojourn (µs) the queue discipline saw for the last packet read, and the largest since setQueue (over the host queues: the largest of each); null without CoDel. */
  get sojournUs(): { last: number; max: number } | null {
    const q = this.#queue;
    if (!q || !(q[1]! > 0)) return null;
    return { last: this.#fold(RQ_LAST_SOJOURN, Math.max) / 1000, max: this.#fold(RQ_MAX_SOJOURN, Math.max) / 1000 };
  }

  /** Field i of the queue state over the host queues, combined by op (the sum by default); 0 without a queue. */
  #fold(i: number, op: (a: number, b: number) => number = (a, b) => a + b): number {
    const q = this.#queue;
    let acc = 0;
    for (let o = 0; q && o < q.length; o += RQ_FIELDS) acc = op(acc, q[o + i]!);
    return acc;
  }

  /** Packets this device's queue discipline dropped at the head. */
  get queueDrops(): number {
    return QUEUE_CLASSES.reduce((sum, _c, i) => sum + this.#fold(RQ_DROPS_CLASS + i), 0);
  }

  /** Of this device's head drops, those that took only a TCP or UDP super-packet's last segment. */
  get queueTrims(): number {
    return this.#fold(RQ_TRIMS);
  }

  /** Batches that ended knowing from the ring clock that the ring was empty, without the read that would have said EAGAIN. */
  get emptyReadsSaved(): number {
    return this.#fold(RQ_EMPTY_KNOWN);
  }

  /** This device's CoDel drops that became a CE mark instead. */
  get queueMarks(): number {
    return this.#fold(RQ_MARKS);
  }

  /** The same by packet class. */
  get queueDropsByClass(): Record<QueueClass, number> {
    return Object.fromEntries(QUEUE_CLASSES.map((c, i) => [c, this.#fold(RQ_DROPS_CLASS + i)])) as Record<QueueClass, number>;
  }

  /** The reader queue's policy as set (null: none). */
  get readerQueue(): ReaderQueue | null {
    const q = this.#queue;
    return q ? { batchBytes: q[0]!, targetUs: q[1]! / 1000, intervalUs: q[2]! / 1000 } : null;
  }

  /** The sojourn figures per ring (µs; host h's bulk ring at h, its sparse ring at hostQueues + h, a remote host queue's one ring at h; one entry without host queues), null without CoDel. */
  get hostQueueSojournUs(): { last: number; max: number }[] | null {
    const q = this.#queue;
    if (!q || !(q[1]! > 0)) return null;
    return Array.from(this.#fds, (_fd, k) => ({ last: q[k * RQ_FIELDS + RQ_LAST_SOJOURN]! / 1000, max: q[k * RQ_FIELDS + RQ_MAX_SOJOURN]! / 1000 }));
  }

  /** The raw fd, or -1 once closed. */
  get fd(): number {
    return this.#fd;
  }

  get closed(): boolean {
    return this.#fd < 0;
  }

  readBatch(mem: ArrayBuffer, slotBase: number, slotSize: number, lenBase: number, max: number,
    hdrBase?: number, hdrStride?: number): number {
    if (this.vnet && hdrBase === undefined) throw new Error(`TUN device "${this.name}" carries virtio headers: pass hdrBase and hdrStride`);
    if (this.#fds.length > 1) {
      this.#open();
      // The first host turns with each batch; every FULL_PASS_EVERY-th batch reads every ring, whatever its stamps say.
      const calls = this.#calls++;
      return this.#native.readQueues(this.#fds.buffer as ArrayBuffer, mem, slotBase, slotSize, lenBase, max,
        this.vnet ? hdrBase : undefined, this.vnet ? hdrStride : undefined, this.#queue!.buffer as ArrayBuffer,
        calls % this.#hosts, calls % FULL_PASS_EVERY !== 0, this.#hosts);
    }
    return this.#native.readBatch(this.#open(), mem, slotBase, slotSize, lenBase, max,
      this.vnet ? hdrBase : undefined, this.vnet ? hdrStride : undefined, this.#queue?.buffer as ArrayBuffer | undefined);
  }

  waiting(): boolean {
    const q = this.#queue;
    return q ? this.#native.queueWaiting(q.buffer as ArrayBuffer) : true;
  }

  writeBatch(
    mem: ArrayBuffer,
    slotBase: number,
    slotSize: number,
    lenBase: number,
    verdictBase: number,
    count: number,
    want: number,
    hdrBase?: number,
    hdrStride?: number,
    linkBase?: number,
  ): number {
    if (this.vnet && hdrBase === undefined) throw new Error(`TUN device "${this.name}" carries virtio headers: pass hdrBase and hdrStride`);
    return this.#native.writeBatch(this.#open(), mem, slotBase, slotSize, lenBase, verdictBase, count, want,
      this.vnet ? hdrBase : undefined, this.vnet ? hdrStride : undefined, this.vnet ? linkBase : undefined);
  }

  /**
   * Level-triggered: cb runs once per event-loop turn for as long as packets
   * are waiting, so a callback that reads only one batch is simply called
   * again (fair to the other fds). Calling it again replaces cb.
   */
  onReadable(cb: () => void): void {
    const fd = this.#open();
    this.#cb = cb;
    if (!this.#poller) {
      // Host queues: one poll on an epoll set of all the rings.
      if (this.#fds.length > 1 && this.#epfd < 0) this.#epfd = this.#native.epollOf(this.#fds.buffer as ArrayBuffer);
      this.#poller = new this.#native.Poller(this.#epfd >= 0 ? this.#epfd : fd, () => this.#cb?.());
    }
    this.#poller.start();
  }

  /** Stop waking the callback (backpressure) until resumeReading(). */
  pauseReading(): void {
    this.#poller?.stop();
  }

  resumeReading(): void {
    if (this.#poller && !this.closed) this.#poller.start();
  }

  close(): void {
    if (this.#fd < 0) return;
    // Poller first: libuv must forget the fd before the number can be reused.
    this.#poller?.close();
    this.#poller = null;
    this.#cb = null;
    const fd = this.#fd;
    this.#fd = -1;
    if (this.#clock >= 0) this.#native.ringClockDetach(this.#clock);
    this.#clock = -1;
    if (this.#epfd >= 0) this.#native.closeFd(this.#epfd);
    this.#epfd = -1;
    // A persistent device outlives us: it keeps no steering program of ours.
    if (this.#fds.length > 1) this.#native.tunUnsteer(fd);
    for (const other of this.#fds.subarray(1)) this.#native.closeFd(other);
    this.#fds = new Int32Array(0);
    this.#native.closeFd(fd);
  }

  #open(): number {
    if (this.#fd < 0) throw new Error(`TUN device "${this.name}" is closed`);
    return this.#fd;
  }
}
