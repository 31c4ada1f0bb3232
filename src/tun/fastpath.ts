// The flow fast path's kernel part (src/tun/fastpath.h says what and why):
// an eBPF program on the LAN and WAN devices' tc ingress (tcx links) that
// forwards the packets of the established TCP flows, UDP flows, ICMP echo
// exchanges, bound IPsec SAs (ESP, IP protocol 50) and PPTP calls' data
// channels (enhanced GRE, IP protocol 47) it has entries for, NAT rewrite
// and all, without them reaching the engine. This wraps the
// addon's functions and builds and reads the 16-byte keys and 48-byte
// values of its flow table.
//
// The links live as long as this process's fds: when it dies the kernel
// detaches the program, so nothing is forwarded behind a dead daemon.
import { endianness } from 'node:os';
import { loadNative } from './tun.js';

export const FAST_PATH_KEY_BYTES = 16;
export const FAST_PATH_VALUE_BYTES = 48;

/** Indices of fastPathStats()'s counters (sums over the CPUs). */
export const FAST_PATH_STAT = {
  /** packets redirected */
  forwarded: 0,
  /** FIN or RST far outside the sender's window: dropped, the entry kept */
  outOfWindow: 1,
  /** TCP's SYN, FIN or RST, or any packet of a closed direction (any protocol): passed up */
  passedClose: 2,
  /** passed up: wrong ingress device, an ICMP echo of the other type than its entry's, a GSO ESP or GRE packet, TTL <= 1, too big for the route's MTU, no route or neighbour, another device's route */
  passedOther: 3,
  /** a rewrite helper failed half-way (the packet dropped); never seen */
  rewriteFailed: 4,
} as const;

/** What fastPathOpen returns: the fds (links: LAN's, WAN's). */
export interface FastPathHandle {
  flowsFd: number;
  statsFd: number;
  progFd: number;
  links: number[];
}

interface FastPathNative {
  fastPathOpen(lanIfname: string, wanIfname: string, maxFlows: number): FastPathHandle;
  fastPathClose(handle: FastPathHandle): void;
  fastPathPut(flowsFd: number, key: Buffer, value: Buffer): void;
  fastPathDelete(flowsFd: number, key: Buffer): boolean;
  fastPathGet(flowsFd: number, key: Buffer, out: Buffer): boolean;
  fastPathKeys(flowsFd: number, out: Buffer): number;
  fastPathReadBatch(flowsFd: number, token: Buffer, first: boolean, keys: Buffer, values: Buffer): FastPathBatch;
  fastPathStats(statsFd: number): number[];
}

/** What one batch of a table walk read: `count` entries; `done` when the walk has ended (with them). */
export interface FastPathBatch {
  count: number;
  done: boolean;
}

/** The addon (loaded as src/tun/tun.ts loads it, on first use), its fast path functions. */
export function fastPathNative(): FastPathNative {
  return loadNative() as unknown as FastPathNative;
}

/** An open fast path: the program attached to both devices, its table and counters. */
export class FastPath {
  private constructor(readonly handle: FastPathHandle) {}

  /**
   * Makes the table (maxFlows entries: two per flow), loads the program and
   * attaches it to both devices' ingress. Throws (err.code the errno's name)
   * with everything made so far closed again; on a kernel without tcx
   * (before 6.6): "flow fast path needs tcx (Linux 6.6+...".
   */
  static open(lanIfname: string, wanIfname: string, maxFlows: number): FastPath {
    return new FastPath(fastPathNative().fastPathOpen(lanIfname, wanIfname, maxFlows));
  }

  get closed(): boolean {
    return this.handle.flowsFd < 0;
  }

  /** Adds or replaces an entry; throws "flow fast path table full" (E2BIG) when full. */
  put(key: Buffer, value: Buffer): void {
    fastPathNative().fastPathPut(this.handle.flowsFd, key, value);
  }

  /** Copies the entry into out (48 bytes); false when there is none. */
  get(key: Buffer, out: Buffer): boolean {
    return fastPathNative().fastPathGet(this.handle.flowsFd, key, out);
  }

  /** false when it was not there. */
  remove(key: Buffer): boolean {
    return fastPathNative().fastPathDelete(this.handle.flowsFd, key);
  }

  /** Up to max keys of the table (each once, even if entries are deleted during the walk). */
  keys(max: number): Buffer[] {
    const out = Buffer.alloc(max * FAST_PATH_KEY_BYTES);
    const n = fastPathNative().fastPathKeys(this.handle.flowsFd, out);
    const keys: Buffer[] = [];
    for (let i = 0; i < n; i++) keys.push(out.subarray(i * FAST_PATH_KEY_BYTES, (i + 1) * FAST_PATH_KEY_BYTES));
    return keys;
  }

  /**
   * The next entries of a walk of the whole table, one system call
   * (BPF_MAP_LOOKUP_BATCH): entry i's key at keys[16 i], its value at
   * values[48 i], as many as both hold. `first` starts a walk; `token` (8
   * bytes, the caller's) carries its place to the next call. Throws when one
   * of the kernel's buckets does not fit (never with room for a few hundred).
   */
  readBatch(token: Buffer, first: boolean, keys: Buffer, values: Buffer): FastPathBatch {
    return fastPathNative().fastPathReadBatch(this.handle.flowsFd, token, first, keys, values);
  }

  /** The counters, FAST_PATH_STAT says which is which. */
  stats(): number[] {
    return fastPathNative().fastPathStats(this.handle.statsFd);
  }

  /** Detaches (closes the links first), then frees program and table; idempotent. */
  close(): void {
    fastPathNative().fastPathClose(this.handle);
  }
}

export interface FastPathKey {
  saddr: string;
  daddr: string;
  /** ICMP echo: sport is the identifier, dport 0 (the program looks it up so); ESP: the SPI's high and low 16 bits (fastPathEspKey); GRE: sport 0, dport the Call ID (fastPathGreKey) */
  sport: number;
  dport: number;
  /** 6 (TCP) when left out; 17 (UDP), 1 (ICMP echo request or reply), 50 (ESP), 47 (PPTP's enhanced GRE): the program looks up nothing else */
  proto?: number;
}

export interface FastPathValue {
  /** the packet's addresses and ports after the rewrite (ICMP echo: newSport the identifier, newDport unused; ESP: the ports unread, the SPI is never rewritten: write the key's sport and dport here; GRE: newDport the Call ID the packet leaves with, the key's dport to leave it as it is, newSport unread: write 0) */
  newSaddr: string;
  newDaddr: string;
  newSport: number;
  newDport: number;
  /** the device the packet must arrive on, the device the route must send it out of */
  inIfindex: number;
  outIfindex: number;
  /** TCP: a FIN or RST is accepted when |seq - end| <= win (as s32); below 2^31 (UDP, ICMP: unused, 0) */
  win: number;
  /** TCP: the sender's highest seq + payload length so far, if endKnown */
  end?: number;
  endKnown?: boolean;
  /** every packet of the direction goes up (the program sets it when TCP's SYN, FIN or RST passed up) */
  closed?: boolean;
  /** ICMP: the entry carries echo replies (type 0); false, echo requests (type 8). The other type with its key goes up */
  echoReply?: boolean;
  packets?: number;
  bytes?: number;
}

const hostLE = endianness() === 'LE';

function writeU32(b: Buffer, v: number, off: number): void {
  if (hostLE) b.writeUInt32LE(v >>> 0, off);
  else b.writeUInt32BE(v >>> 0, off);
}

function readU32(b: Buffer, off: number): number {
  return hostLE ? b.readUInt32LE(off) : b.readUInt32BE(off);
}

// Two halves, no BigInt: a sync reads two of these an entry. Exact to 2^53.
function readU64(b: Buffer, off: number): number {
  return hostLE ? b.readUInt32LE(off) + b.readUInt32LE(off + 4) * 2 ** 32 : b.readUInt32BE(off) * 2 ** 32 + b.readUInt32BE(off + 4);
}

function writeU64(b: Buffer, v: number, off: number): void {
  if (hostLE) b.writeBigUInt64LE(BigInt(v), off);
  else b.writeBigUInt64BE(BigInt(v), off);
}

// Dotted quads only (src/tun imports nothing outside node: no ipaddr.js here).
const QUAD = /^(0|[1-9]\d{0,2})\.(0|[1-9]\d{0,2})\.(0|[1-9]\d{0,2})\.(0|[1-9]\d{0,2})$/;

function writeAddr(b: Buffer, addr: string, off: number): void {
  const m = QUAD.exec(addr);
  const bytes = m ? m.slice(1).map(Number) : [];
  if (bytes.length !== 4 || bytes.some((x) => x > 255)) throw new RangeError(`'${addr}' is not a dotted-quad IPv4 address`);
  b.set(bytes, off);
}

function readAddr(b: Buffer, off: number): string {
  return `${b[off]}.${b[off + 1]}.${b[off + 2]}.${b[off + 3]}`;
}

/** The key of a packet: its bytes as in the packet (addresses and ports in network order). */
export function fastPathKey(k: FastPathKey): Buffer {
  const b = Buffer.alloc(FAST_PATH_KEY_BYTES);
  writeAddr(b, k.saddr, 0);
  writeAddr(b, k.daddr, 4);
  b.writeUInt16BE(k.sport, 8);
  b.writeUInt16BE(k.dport, 10);
  b[12] = k.proto ?? 6;
  return b;
}

/** IP protocol 50: ESP (RFC 4303) without UDP encapsulation (NAT-T, UDP 4500, is keyed as UDP). */
export const FAST_PATH_PROTO_ESP = 50;

/**
 * The key of an ESP packet from saddr to daddr with this SPI (a number, as
 * the SA is known: 0 to 2^32 - 1): the SPI's four bytes, as in the packet,
 * where TCP's and UDP's keys hold their ports, so sport is its high 16 bits
 * and dport its low 16 (fastPathKey({saddr, daddr, sport: spi >>> 16,
 * dport: spi & 0xffff, proto: 50})). One entry per direction of an SA pair:
 * the LAN host's SPI toward the server, the server's toward the router's WAN
 * address. Its value's newSport and newDport are not read (the program
 * never rewrites an SPI): write the same halves there.
 */
export function fastPathEspKey(saddr: string, daddr: string, spi: number): Buffer {
  if (!Number.isInteger(spi) || spi < 0 || spi > 0xffffffff) throw new RangeError(`SPI ${spi} must be an integer from 0 to 2^32 - 1`);
  return fastPathKey({ saddr, daddr, sport: spi >>> 16, dport: spi & 0xffff, proto: FAST_PATH_PROTO_ESP });
}

/** IP protocol 47: GRE; the program takes PPTP's enhanced GRE only (RFC 2637 4.1). */
export const FAST_PATH_PROTO_GRE = 47;

/**
 * The key of a PPTP data packet (enhanced GRE: version 1, K set, C, R, s,
 * the recursion control and the reserved flags clear, S and A either way,
 * protocol type 0x880B; the program passes every other GRE packet up) from
 * saddr to daddr carrying this Call ID (0 to 65535: the GRE header's bytes
 * 6..7, the Call ID the receiver gave the call, in the packet's byte order
 * as ports are): fastPathKey({saddr, daddr, sport: 0, dport: callId,
 * proto: 47}). One entry per direction of a call: the LAN host's packets
 * toward the server with the server's Call ID, the server's toward the
 * router's WAN address with the Call ID the engine gave the call outside.
 * Its value's newDport is the Call ID the packet leaves with (the
 * outbound entry: the key's own, left as it is; the inbound entry: the LAN
 * host's Call ID); newSport is not read: write 0. Only the addresses (with
 * the IP header's checksum) and the Call ID change; GRE v1 has no checksum.
 */
export function fastPathGreKey(saddr: string, daddr: string, callId: number): Buffer {
  if (!Number.isInteger(callId) || callId < 0 || callId > 0xffff) throw new RangeError(`Call ID ${callId} must be an integer from 0 to 65535`);
  return fastPathKey({ saddr, daddr, sport: 0, dport: callId, proto: FAST_PATH_PROTO_GRE });
}

export function parseFastPathKey(b: Buffer): Required<FastPathKey> {
  return { saddr: readAddr(b, 0), daddr: readAddr(b, 4), sport: b.readUInt16BE(8), dport: b.readUInt16BE(10), proto: b[12]! };
}

/** A value: the rewrite in network order, the rest in host order. */
export function fastPathValue(v: FastPathValue): Buffer {
  const b = Buffer.alloc(FAST_PATH_VALUE_BYTES);
  writeAddr(b, v.newSaddr, 0);
  writeAddr(b, v.newDaddr, 4);
  b.writeUInt16BE(v.newSport, 8);
  b.writeUInt16BE(v.newDport, 10);
  writeU32(b, v.inIfindex, 12);
  writeU32(b, v.outIfindex, 16);
  if (!(v.win >= 0 && v.win < 2 ** 31)) throw new RangeError(`win ${v.win} must be from 0 to 2^31 - 1`);
  writeU32(b, v.win, 20);
  writeU32(b, v.end ?? 0, 24);
  writeU32(b, (v.endKnown ? 1 : 0) | (v.closed ? 2 : 0) | (v.echoReply ? 4 : 0), 28);
  writeU64(b, v.packets ?? 0, 32);
  writeU64(b, v.bytes ?? 0, 40);
  return b;
}

/** What the program changes in a value as it forwards: the counts and the sender's end (fastPathCounts reads them). */
export interface FastPathCounts {
  packets: number;
  bytes: number;
  end: number;
  endKnown: boolean;
}

/**
 * The counts and the end of the value at `off` into `into`: what a sync
 * reads of every entry, without parseFastPathValue's addresses (strings).
 */
export function fastPathCounts(b: Buffer, off: number, into: FastPathCounts): FastPathCounts {
  into.packets = readU64(b, off + 32);
  into.bytes = readU64(b, off + 40);
  into.end = readU32(b, off + 24);
  into.endKnown = (readU32(b, off + 28) & 1) !== 0;
  return into;
}

export function parseFastPathValue(b: Buffer): Required<FastPathValue> {
  const { packets, bytes, end, endKnown } = fastPathCounts(b, 0, { packets: 0, bytes: 0, end: 0, endKnown: false });
  return {
    newSaddr: readAddr(b, 0),
    newDaddr: readAddr(b, 4),
    newSport: b.readUInt16BE(8),
    newDport: b.readUInt16BE(10),
    inIfindex: readU32(b, 12),
    outIfindex: readU32(b, 16),
    win: readU32(b, 20),
    end,
    endKnown,
    closed: (readU32(b, 28) & 2) !== 0,
    echoReply: (readU32(b, 28) & 4) !== 0,
    packets,
    bytes,
  };
}
