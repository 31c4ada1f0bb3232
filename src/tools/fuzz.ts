// The engine fuzzer behind `npm run fuzz -- --count N [--seed S]`.
//
// It drives real engines (the Wasm build the supervisor loads, configured
// the way the supervisor configures them: UCI text → parseConfig →
// applyConfig) with valid VPN and NAT traffic from both sides, replies and
// ICMP errors built from what the engine itself emitted, and mutated and
// random packets; and checks every emitted packet from scratch with the
// oracle (src/tools/oracle.ts, shared with the property tests): IPv4
// header and L4 checksums, an ICMP error's quoted header and L4 checksums,
// TTL + 1, no LAN address on the WAN side, bytes past the IP length
// untouched; every batch's accounting (rx = passed + dropped, from the
// counters); and periodically the table invariants. A trap (a thrown
// exception or an abort in the debug build) is a finding too.
//
// Everything is derived from the seed (packets, time, the engine's hash
// seed), so a finding at packet index I reproduces with the same seed and
// --count I+1; the finding also prints the packet's bytes for a byte-vector
// test.

import { Engine } from '../engine/engine.js';
import { applyConfig } from '../engine/apply.js';
import { SIDE_INSIDE, SIDE_OUTSIDE, ipToRaw } from '../engine/abi.js';
import { parseConfig, type Config } from '../config/index.js';
import {
  ACK, FIN, PSH, RST, SYN, ah, esp, fragment, gre, icmpEcho, icmpError, isakmp, isIcmpError, parse, pptpMsg, tcp, udp,
} from './packet.js';
import { EDGE_VALUES, FIELDS, fixIp, mutate, putAddr, type Mutation } from './mutate.js';
import {
  accountingProblems, addressProblems, passedProblems, reservedBindings, sideCounts, subnetMatcher, tableProblems, type Side,
  type TableLimits,
} from './oracle.js';

// ---------------------------------------------------------------------------
// A small fast PRNG (sfc32), seeded from one 32-bit number.

export class Rng {
  private a: number; private b: number; private c: number; private d: number;
  constructor(seed: number) {
    this.a = 0x9e3779b9; this.b = 0x243f6a88; this.c = 0xb7e15162; this.d = seed >>> 0;
    for (let i = 0; i < 16; i++) this.u32();
  }
  u32(): number {
    const t = (((this.a + this.b) | 0) + this.d) | 0;
    this.d = (this.d + 1) | 0;
    this.a = this.b ^ (this.b >>> 9);
    this.b = (this.c + (this.c << 3)) | 0;
    this.c = (this.c << 21) | (this.c >>> 11);
    this.c = (this.c + t) | 0;
    return t >>> 0;
  }
  /** 0 .. n-1 */
  int(n: number): number { return n <= 1 ? 0 : Math.floor((this.u32() / 4294967296) * n); }
  range(lo: number, hi: number): number { return lo + this.int(hi - lo + 1); }
  chance(p: number): boolean { return this.u32() / 4294967296 < p; }
  pick<T>(xs: readonly T[]): T { return xs[this.int(xs.length)]!; }
  bytes(n: number): Uint8Array {
    const b = new Uint8Array(n);
    for (let i = 0; i < n; i += 4) { const v = this.u32(); b[i] = v; b[i + 1] = v >>> 8; b[i + 2] = v >>> 16; b[i + 3] = v >>> 24; }
    return b;
  }
  hex64(): string { return this.u32().toString(16).padStart(8, '0') + this.u32().toString(16).padStart(8, '0'); }
}

// ---------------------------------------------------------------------------
// The routers under test. Two configurations, each a "lane" with its own
// engine: LAN clients of outside VPN servers with the router as an IKE/ESP
// endpoint and routed WAN → LAN rules; and VPN servers behind the router
// (UDP 500/4500, TCP 1723 forwards, ESP and GRE protocol forwards) with
// parallel sessions, ESP guessing and a tiny masquerade pool.

export const WANS = ['203.0.113.1', '203.0.113.77'];
export const LAN_SUBNETS = ['192.168.1.0/24', '10.20.0.0/16'];
export const HOSTS = ['192.168.1.10', '192.168.1.11', '192.168.1.20', '192.168.1.21', '192.168.1.50', '192.168.1.51', '10.20.3.4', '10.20.200.9'];
export const SERVERS = ['198.51.100.7', '198.51.100.8', '8.8.8.8', '93.184.216.34', '100.64.1.1'];
/** Addresses 'field' mutations write into src / dst and quoted addresses. */
export const MUT_ADDRS = [WANS[0], HOSTS[0], HOSTS[6], SERVERS[0], '0.0.0.0', '127.0.0.1', '255.255.255.255', '224.0.0.1', '10.1.2.3', '192.168.1.30', '192.168.1.255'];

const MAIN_COMMON = `
	option lan_device 'fz-lan'
	option wan_device 'fz-wan'
	list lan_subnet '${LAN_SUBNETS[0]}'
	list lan_subnet '${LAN_SUBNETS[1]}'
	option tcp_timeout '600'
	option tcp_transitory_timeout '60'
	option udp_timeout '60'
	option icmp_timeout '30'
	option frag_timeout '10'
	option esp_timeout '300'
	option esp_init_timeout '30'
	option esp_init_retries '3'
	option ike_timeout '600'
	option natt_timeout '90'
	option gre_timeout '600'`;

/** A LAN host a forward rule cuts off from the WAN (lane 'clients'). */
export const BLOCKED_HOST = HOSTS[5]!;

export interface LaneConfig {
  name: string;
  uci: string;
  /** A reason when this input must not pass (a rule drops it and nothing established can carry it). */
  mustDrop?: (side: Side, input: Uint8Array) => string | null;
  /** Is this quoted packet routed WAN → LAN traffic the lane's rules open (so the WAN side knows its LAN address)? */
  routed?: (quoted: Uint8Array) => boolean;
}

export const LANE_CONFIGS: LaneConfig[] = [
  {
    name: 'clients',
    uci: `config vpnmasq 'main'${MAIN_COMMON}
	option max_flows '4096'
	option masq_ports '61000-61999'

config redirect
	option proto 'udp'
	option src_dport '5000'
	option dest_ip '192.168.1.10'
	option dest_port '5001'

config redirect
	option proto 'tcp'
	option src_dport '8080-8081'
	option dest_ip '192.168.1.11'
	option dest_port '80-81'

config rule
	option src 'wan'
	option proto 'udp'
	option dest_port '500 4500 7000'
	option target 'ACCEPT'

config rule
	option src 'wan'
	option proto 'esp'
	option target 'ACCEPT'

config rule
	option src 'wan'
	option proto 'icmp'
	option icmp_type 'echo-request'
	option target 'ACCEPT'

config rule
	option src 'wan'
	option dest 'lan'
	option dest_ip '192.168.1.30'
	option proto 'tcp'
	option dest_port '22'
	option target 'DROP'

config rule
	option src 'wan'
	option dest 'lan'
	option dest_ip '192.168.1.30'
	option proto 'all'
	option target 'ACCEPT'

config rule
	option src 'lan'
	option dest 'wan'
	option src_ip '${BLOCKED_HOST}'
	option proto 'all'
	option target 'DROP'

config rule
	option src 'lan'
	option dest 'wan'
	option proto 'tcp udp'
	option src_port '1024-65535'
	option dest_port '25'
	option target 'REJECT'
`,
    // Nothing of the blocked host may ever leave: no rule lets anything reach it, so it never has
    // established traffic. (ICMP errors are related traffic: fw4 accepts them before any rule.)
    mustDrop: (side, p) => (side === 'out' && p.length >= 20 && parse(p).src === BLOCKED_HOST && !isIcmpError(p)
      ? `passed from ${BLOCKED_HOST}, whose traffic a rule drops` : null),
    routed: (q) => { const x = parse(q); return x.dst === '192.168.1.30' && !(x.proto === 6 && x.dport === 22); },
  },
  {
    name: 'servers',
    uci: `config vpnmasq 'main'${MAIN_COMMON}
	option max_flows '1024'
	option masq_ports '61000-61015'
	option parallel_sessions '1'
	option esp_guess '1'

config redirect
	option proto 'udp'
	option src_dport '500'
	option dest_ip '192.168.1.20'

config redirect
	option proto 'udp'
	option src_dport '4500'
	option dest_ip '192.168.1.20'

config redirect
	option proto 'esp'
	option dest_ip '192.168.1.20'

config redirect
	option proto 'tcp'
	option src_dport '1723'
	option dest_ip '192.168.1.21'

config redirect
	option proto 'gre'
	option dest_ip '192.168.1.21'

config redirect
	option proto 'tcp udp'
	option src_dport '2222'
	option dest_ip '192.168.1.50'
	option dest_port '22'

config rule
	option src 'wan'
	option proto 'udp'
	option dest_port '7000'
	option target 'ACCEPT'

config rule
	option src 'wan'
	option dest 'lan'
	option proto 'icmp'
	option target 'ACCEPT'

config rule
	option src 'wan'
	option dest 'lan'
	option src_ip '100.64.1.1'
	option proto 'all'
	option target 'DROP'

config rule
	option src 'wan'
	option dest 'lan'
	option dest_ip '192.168.1.50'
	option proto 'tcp'
	option src_port '1-1023'
	option dest_port '22'
	option target 'DROP'
`,
    // routed ICMP to any LAN host is opened by the first forward rule (before the source drop)
    routed: (q) => parse(q).proto === 1,
  },
];

// ---------------------------------------------------------------------------

class Ring<T> {
  private xs: T[] = [];
  private next = 0;
  constructor(private readonly cap: number) {}
  push(x: T): void { if (this.xs.length < this.cap) this.xs.push(x); else { this.xs[this.next] = x; this.next = (this.next + 1) % this.cap; } }
  pick(rng: Rng): T | undefined { return this.xs.length ? this.xs[rng.int(this.xs.length)] : undefined; }
  get size(): number { return this.xs.length; }
  clear(): void { this.xs = []; this.next = 0; }
}

interface Lane {
  index: number;
  name: string;
  mustDrop?: LaneConfig['mustDrop'];
  routed?: LaneConfig['routed'];
  cfg: Config;
  engine: Engine;
  twin: Engine | null;
  now: number;
  wan: string;
  limits: TableLimits;
  /** Packets as they left the WAN side (replies and ICMP errors are built from them). */
  outs: Ring<Uint8Array>;
  /** Packets delivered to the LAN (their hosts answer or send ICMP errors about them). */
  ins: Ring<Uint8Array>;
  /** [server, Call ID alias] from translated outgoing call requests: the server's GRE carries the alias. */
  aliases: Ring<[string, number]>;
  /** [host, server, the server's Call ID] from delivered call replies: the host's GRE carries it. */
  peerCalls: Ring<[string, string, number]>;
}

export interface FuzzOptions {
  count: number;
  seed: number;
  /** The debug build (assertions on) instead of the release build. */
  debug?: boolean;
  /** A second engine per lane (the other build, other slot garbage) that must agree byte for byte. */
  lockstep?: boolean;
  /** Check the table invariants every this many batches (and at the end). */
  invariantEvery?: number;
  /** Findings kept with their details (all are counted). */
  keep?: number;
  /** Called with every emitted packet (and its input) before it is checked (tests corrupt one to see the oracle fail). */
  tamper?: (index: number, output: Uint8Array, input: Uint8Array) => void;
  /** Progress lines (to stderr by the CLI). */
  progress?: (line: string) => void;
}

export interface Finding {
  kind: 'trap' | 'packet' | 'accounting' | 'table' | 'lockstep' | 'expiry';
  /** Global index of the packet (for batch-level findings: the batch's first packet). */
  index: number;
  lane: string;
  side: Side | null;
  problems: string[];
  input?: string;
  output?: string;
  generator?: string;
}

export interface FuzzResult {
  seed: number;
  packets: number;
  passed: number;
  dropped: number;
  batches: number;
  traps: number;
  findings: number;
  kept: Finding[];
  seconds: number;
  packetsPerSecond: number;
  engineSeconds: number;
  /** Per generator: [generated, passed]. */
  generators: Record<string, [number, number]>;
  drops: Record<string, number>;
}

const hex = (p: Uint8Array) => Buffer.from(p).toString('hex');

function limitsOf(cfg: Config): TableLimits {
  const m = cfg.main;
  const redirects: [number, number, number][] = [];
  for (const r of cfg.redirects) if (r.srcDport) for (const p of r.proto) redirects.push([p, r.srcDport[0], r.srcDport[1]]);
  return { pool: [m.masqPorts[0], m.masqPorts[1]], maxTimeoutS: Math.max(m.tcpTimeout, m.udpTimeout, m.icmpTimeout, m.nattTimeout), redirects };
}

/** The engine's hash seed of a lane: from the fuzz seed, so a run repeats exactly. */
const laneSeed = (seed: number, lane: number) => (seed ^ Math.imul(lane + 1, 0x9e3779b9)) >>> 0;

function loadEngine(cfg: Config, debug: boolean, seed: number, wan: string, now: number): Engine {
  const e = Engine.load({ maxFlows: cfg.main.maxFlows, debug, seed });
  applyConfig(e, cfg, [...cfg.main.lanSubnets]);
  e.x.setWanAddress(ipToRaw(wan), now);
  return e;
}

// ---------------------------------------------------------------------------
// Packet generators. Each returns the packets of one step (a datagram's
// fragments are several) and the side they are meant for.

type Gen = { name: string; side: Side; weight: number; make: (rng: Rng, lane: Lane) => Uint8Array[] | null };

const PORTS = [53, 80, 123, 443, 500, 1723, 4500, 5000, 5001, 7000, 8080, 61000, 61001, 61015, 40000, 1000];
const HOST_PORTS = [1000, 1001, 5353, 40000, 61000, 61001, 61002, 500, 4500, 5001, 80, 22];
const TCP_FLAGS = [SYN, ACK, FIN | ACK, RST, SYN | ACK, PSH | ACK, RST | ACK, 0, 0xff];
const COOKIES = ['0123456789abcdef', '00000000000000a1', 'fedcba9876543210', '1111111111111111', '0000000000000000'];
const SPIS = [0x1000, 0x1001, 0x2000, 0x2001, 0xdeadbeef, 0, 1, 255, 256];
const CALLS = [0, 1, 2, 777, 0xffff];

function payload(rng: Rng): number[] {
  const r = rng.int(100);
  const n = r < 70 ? rng.int(48) : r < 95 ? rng.int(600) : rng.range(600, 1440);
  return Array.from(rng.bytes(n));
}
const host = (rng: Rng) => rng.pick(HOSTS);
const server = (rng: Rng) => (rng.chance(0.85) ? rng.pick(SERVERS) : `${rng.range(1, 223)}.${rng.int(256)}.${rng.int(256)}.${rng.range(1, 254)}`.replace(/^(127|10|192)\./, '45.'));
const ipo = (rng: Rng) => ({ ttl: rng.chance(0.9) ? 64 : rng.pick([0, 1, 254, 255]), id: rng.int(0x10000), flags: rng.chance(0.5) ? 2 : 0, tos: rng.chance(0.9) ? 0 : rng.int(256) });

function flowPacket(rng: Rng, src: string, dst: string, sport: number, dport: number): Uint8Array {
  const o = ipo(rng);
  switch (rng.int(3)) {
    case 0: return udp(src, sport, dst, dport, payload(rng), o);
    case 1: return tcp(src, sport, dst, dport, rng.pick(TCP_FLAGS), payload(rng), { ...o, seq: rng.u32(), ack: rng.u32() });
    default: return icmpEcho(src, dst, 8, sport, rng.int(0x10000), payload(rng), o);
  }
}

/** The answer to a packet as it was emitted (addresses and ports swapped). */
function answer(rng: Rng, sent: Uint8Array): Uint8Array | null {
  const x = parse(sent);
  const o = ipo(rng);
  if (x.proto === 17) return udp(x.dst, x.dport, x.src, x.sport, payload(rng), o);
  if (x.proto === 6) {
    const flags = rng.pick([SYN | ACK, ACK, PSH | ACK, FIN | ACK, RST, ACK]);
    return tcp(x.dst, x.dport, x.src, x.sport, flags, payload(rng), { ...o, seq: rng.u32(), ack: rng.u32() });
  }
  if (x.proto === 1 && x.icmpType === 8) return icmpEcho(x.dst, x.src, 0, x.icmpId, (x.l4[6] << 8) | x.l4[7], payload(rng), o);
  if (x.proto === 50) return esp(x.dst, x.src, rng.chance(0.5) ? rng.pick(SPIS) : rng.u32(), rng.u32() || 1, rng.int(100));
  if (x.proto === 47) return gre(x.dst, x.src, (x.l4[6] << 8) | x.l4[7], rng.int(60));
  return null;
}

function quoteLen(rng: Rng): number { return rng.pick([8, 8, 20, 28, 1000, 0, 4]); }

/** A big datagram from src to dst in fragments, in order or not, all or some, or the first twice. */
function fragments(rng: Rng, whole: Uint8Array): Uint8Array[] {
  const fr = fragment(whole, 8 * rng.range(8, 185));
  const r = rng.int(10);
  if (r < 6) return fr;
  if (r === 6) return fr.reverse();
  if (r === 7) return [fr[0]!, ...fr];
  if (r === 8) return fr.filter(() => rng.chance(0.6));
  return fr.slice(1);
}

const BIG = Array.from({ length: 4000 }, (_, i) => (i * 31 + 7) & 0xff);

function bigDatagram(rng: Rng, src: string, sport: number, dst: string, dport: number): Uint8Array {
  const size = rng.range(1500, 4000);
  const data = BIG.slice(0, size);
  const id = rng.int(0x10000);
  switch (rng.int(4)) {
    case 0: return esp(src, dst, rng.pick(SPIS), 1, size);
    case 1: return isakmp(src, 500, dst, 500, rng.pick(COOKIES), undefined, size, { id });
    case 2: return icmpEcho(src, dst, 8, sport, 1, data, { id });
    default: return udp(src, sport, dst, dport, data, { id });
  }
}

/** IPv4-shaped garbage: a right header checksum and total length, random everything else. */
function shaped(rng: Rng, src: string, dst: string): Uint8Array {
  const ihl = rng.chance(0.8) ? 5 : rng.range(5, 15);
  const n = ihl * 4 + rng.int(rng.chance(0.9) ? 80 : 1500);
  const p = rng.bytes(n);
  p[0] = 0x40 | ihl; p[2] = n >> 8; p[3] = n & 0xff;
  p[6] = rng.chance(0.8) ? 0 : p[6]; p[7] = rng.chance(0.8) ? 0 : p[7];
  p[9] = rng.pick([1, 6, 17, 47, 50, 51, 0, 255, 1, 6, 17]);
  putAddr(p, 12, src); putAddr(p, 16, dst);
  return fixIp(p);
}

function pptpSegment(rng: Rng, src: string, sport: number, dst: string, dport: number, peer = -1): Uint8Array {
  const msgs: number[] = [];
  const n = rng.chance(0.85) ? 1 : rng.range(2, 3);
  for (let i = 0; i < n; i++) {
    const ctype = rng.chance(0.7) ? rng.pick([7, 8, 9, 10, 11, 12, 13, 14, 15]) : rng.range(0, 16);
    const call = rng.chance(0.7) ? rng.pick(CALLS) : rng.int(0x10000);
    const odd = rng.chance(0.05) ? { magic: rng.u32() } : rng.chance(0.05) ? { length: rng.int(300) } : {};
    msgs.push(...pptpMsg(ctype, call, peer >= 0 ? peer : rng.pick(CALLS), odd));
  }
  return tcp(src, sport, dst, dport, rng.chance(0.9) ? PSH | ACK : rng.pick(TCP_FLAGS), msgs, { seq: rng.u32(), ack: rng.u32() });
}

/** The 16-bit field at `off` of the first PPTP message of a TCP segment, or -1. */
function pptpAt(p: Uint8Array, off: number): number {
  const x = parse(p);
  const d = (x.l4[12] >> 4) * 4;
  if (x.l4.length < d + 16) return -1;
  return (x.l4[d + off] << 8) | x.l4[d + off + 1];
}

export const GENERATORS: Gen[] = [
  // ---- LAN side
  { name: 'flow-out', side: 'out', weight: 20, make: (r) => [flowPacket(r, host(r), server(r), r.chance(0.7) ? r.pick(HOST_PORTS) : r.range(1, 65535), r.chance(0.7) ? r.pick(PORTS) : r.range(1, 65535))] },
  { name: 'own-out', side: 'out', weight: 3, make: (r, l) => [flowPacket(r, l.wan, server(r), r.chance(0.5) ? r.pick(HOST_PORTS) : r.range(1024, 65535), r.pick(PORTS))] },
  { name: 'ike-out', side: 'out', weight: 5, make: (r, l) => [isakmp(r.chance(0.1) ? l.wan : host(r), 500, server(r), r.chance(0.9) ? 500 : 4500, r.chance(0.7) ? r.pick(COOKIES) : r.hex64(), r.chance(0.5) ? '0000000000000000' : r.pick(COOKIES), r.int(300), ipo(r))] },
  { name: 'natt-out', side: 'out', weight: 3, make: (r) => [udp(host(r), 4500, server(r), 4500, r.chance(0.3) ? [0xff] : payload(r), ipo(r))] },
  { name: 'esp-out', side: 'out', weight: 6, make: (r, l) => [esp(r.chance(0.05) ? l.wan : host(r), r.pick(SERVERS), r.chance(0.8) ? r.pick(SPIS) : r.u32(), r.u32() || 1, r.int(200))] },
  { name: 'ah-out', side: 'out', weight: 1, make: (r, l) => [ah(r.chance(0.5) ? l.wan : host(r), r.pick(SERVERS), r.pick(SPIS))] },
  { name: 'pptp-out', side: 'out', weight: 5, make: (r) => [pptpSegment(r, host(r), r.pick([40000, 40001, 1723, r.range(1024, 65535)]), r.pick(SERVERS), 1723)] },
  {
    name: 'gre-out', side: 'out', weight: 4,
    make: (r) => [gre(host(r), r.pick(SERVERS), r.pick(CALLS), r.int(100), r.chance(0.9) ? {} : { version: r.int(8), protocol: r.pick([0x880b, 0x0800, r.int(0x10000)]) })],
  },
  { name: 'gre-out-known', side: 'out', weight: 3, make: (r, l) => { const c = l.peerCalls.pick(r); return c ? [gre(c[0], c[1], c[2], r.int(100))] : null; } },
  { name: 'frag-out', side: 'out', weight: 3, make: (r, l) => fragments(r, bigDatagram(r, r.chance(0.1) ? l.wan : host(r), r.pick(HOST_PORTS), r.pick(SERVERS), r.pick(PORTS))) },
  {
    name: 'err-out', side: 'out', weight: 4, make: (r, l) => {
      const got = l.ins.pick(r);
      if (!got) return null;
      const x = parse(got);
      return [icmpError(x.dst, x.src, r.pick([3, 3, 4, 11, 12]), r.int(16), got, quoteLen(r))];
    },
  },
  { name: 'answer-out', side: 'out', weight: 5, make: (r, l) => { const got = l.ins.pick(r); const a = got && answer(r, got); return a ? [a] : null; } },
  { name: 'odd-dst-out', side: 'out', weight: 1, make: (r, l) => [flowPacket(r, host(r), r.pick([l.wan, '224.0.0.251', '255.255.255.255', '127.0.0.1', '0.0.0.0', '192.168.1.255', '239.1.2.3']), r.pick(HOST_PORTS), r.pick(PORTS))] },
  { name: 'garbage-out', side: 'out', weight: 2, make: (r, l) => [r.chance(0.3) ? r.bytes(r.int(r.chance(0.98) ? 100 : 2100)) : shaped(r, r.chance(0.5) ? host(r) : l.wan, server(r))] },
  // ---- WAN side
  { name: 'reply-in', side: 'in', weight: 22, make: (r, l) => { const s = l.outs.pick(r); const a = s && answer(r, s); return a ? [a] : null; } },
  {
    name: 'err-in', side: 'in', weight: 6, make: (r, l) => {
      const s = l.outs.pick(r);
      if (!s) return null;
      const x = parse(s);
      return [icmpError(r.chance(0.6) ? x.dst : server(r), l.wan, r.pick([3, 3, 4, 5, 11, 12]), r.pick([0, 1, 3, 4, 13]), s, quoteLen(r))];
    },
  },
  { name: 'unsolicited-in', side: 'in', weight: 6, make: (r, l) => [flowPacket(r, server(r), l.wan, r.pick(PORTS), r.chance(0.8) ? r.pick([...PORTS, 2222, 8081, 22, 61002]) : r.range(1, 65535))] },
  {
    name: 'routed-in', side: 'in', weight: 4, make: (r) => {
      const dst = r.pick(['192.168.1.30', '192.168.1.30', '192.168.1.10', '10.20.3.4', '192.168.1.255']);
      if (r.chance(0.15)) return fragments(r, bigDatagram(r, server(r), r.pick(PORTS), dst, r.chance(0.5) ? 22 : r.pick(PORTS)));
      if (r.chance(0.2)) return [r.chance(0.5) ? esp(server(r), dst, r.pick(SPIS)) : gre(server(r), dst, r.pick(CALLS))];
      return [flowPacket(r, server(r), dst, r.pick(PORTS), r.chance(0.5) ? 22 : r.pick(PORTS))];
    },
  },
  { name: 'ike-in', side: 'in', weight: 4, make: (r, l) => [isakmp(r.pick(SERVERS), r.chance(0.9) ? 500 : 4500, l.wan, r.chance(0.9) ? 500 : 4500, r.chance(0.8) ? r.pick(COOKIES) : r.hex64(), r.chance(0.8) ? r.pick(COOKIES) : r.hex64(), r.int(300), ipo(r))] },
  { name: 'esp-in', side: 'in', weight: 6, make: (r, l) => [esp(r.pick(SERVERS), l.wan, r.chance(0.8) ? r.pick(SPIS) : r.u32(), r.u32() || 1, r.int(200))] },
  { name: 'gre-in', side: 'in', weight: 3, make: (r, l) => [gre(r.pick(SERVERS), l.wan, r.pick(CALLS), r.int(100))] },
  { name: 'gre-in-known', side: 'in', weight: 4, make: (r, l) => { const a = l.aliases.pick(r); return a ? [gre(a[0], l.wan, a[1], r.int(100))] : null; } },
  {
    name: 'pptp-in', side: 'in', weight: 4, make: (r, l) => {
      const s = l.outs.pick(r);
      if (!s) return null;
      const x = parse(s);
      if (x.proto !== 6 || x.dport !== 1723) return [pptpSegment(r, r.pick(SERVERS), 1723, l.wan, r.pick([40000, 40001, 61000, 1723]))];
      return [pptpSegment(r, x.dst, 1723, x.src, x.sport, pptpAt(s, 12))];
    },
  },
  {
    name: 'frag-in', side: 'in', weight: 3, make: (r, l) => {
      const s = l.outs.pick(r);
      const x = s && parse(s);
      if (x && (x.proto === 17 || x.proto === 1)) return fragments(r, bigDatagram(r, x.dst, x.dport, l.wan, x.sport));
      return fragments(r, bigDatagram(r, r.pick(SERVERS), r.pick(PORTS), l.wan, r.pick([5000, 2222, 500, 4500, 7000])));
    },
  },
  { name: 'garbage-in', side: 'in', weight: 2, make: (r, l) => [r.chance(0.3) ? r.bytes(r.int(r.chance(0.98) ? 100 : 2100)) : shaped(r, server(r), r.chance(0.7) ? l.wan : host(r))] },
];

const TOTAL_WEIGHT = { out: 0, in: 0 };
for (const g of GENERATORS) TOTAL_WEIGHT[g.side] += g.weight;

function pickGen(rng: Rng, side: Side): Gen {
  let w = rng.int(TOTAL_WEIGHT[side]);
  for (const g of GENERATORS) {
    if (g.side !== side) continue;
    if (w < g.weight) return g;
    w -= g.weight;
  }
  throw new Error('unreachable');
}

function randomMutations(rng: Rng): Mutation[] {
  const n = rng.range(1, 4);
  const ms: Mutation[] = [];
  for (let i = 0; i < n; i++) {
    switch (rng.int(8)) {
      case 0: ms.push({ k: 'flip', pos: rng.u32(), bit: rng.int(8) }); break;
      case 1: ms.push({ k: 'truncate', n: rng.u32() }); break;
      case 2: ms.push({ k: 'extend', bytes: rng.bytes(rng.int(64)) }); break;
      case 3: ms.push({ k: 'byte', pos: rng.u32(), v: rng.int(256) }); break;
      case 4: ms.push({ k: 'fixTotal' }); break;
      default: ms.push({ k: 'field', f: rng.pick(FIELDS), v: rng.chance(0.5) ? rng.int(0x10000) : rng.pick(EDGE_VALUES), a: rng.int(MUT_ADDRS.length) });
    }
  }
  return ms;
}

// ---------------------------------------------------------------------------

/** Writes a packet into slot i; one longer than a slot is cut to the slot but keeps its length (the engine drops it). */
function putSlot(e: Engine, i: number, p: Uint8Array, tail: number): void {
  const slot = e.slot(i);
  slot.fill(tail);
  slot.set(p.length > slot.length ? p.subarray(0, slot.length) : p);
  new DataView(e.memory.buffer).setUint32(e.lenBase + 4 * i, p.length, true);
  new Uint8Array(e.memory.buffer)[e.verdictBase + i] = 0xa5; // a verdict never written shows
}

export function runFuzz(opts: FuzzOptions): FuzzResult {
  const seed = opts.seed >>> 0;
  const rng = new Rng(seed);
  const keep = opts.keep ?? 20;
  const every = opts.invariantEvery ?? 256;
  const debug = opts.debug ?? false;
  const kept: Finding[] = [];
  let findings = 0, traps = 0, passedTotal = 0, batches = 0, engineMs = 0;
  const gens: Record<string, [number, number]> = {};
  for (const g of GENERATORS) gens[g.name] = [0, 0];
  gens.mutated = [0, 0];

  const report = (f: Finding) => {
    findings++;
    if (f.kind === 'trap') traps++;
    if (kept.length < keep) kept.push(f);
  };

  const lanes: Lane[] = LANE_CONFIGS.map((lc, i) => {
    const cfg = parseConfig(lc.uci, `fuzz:${lc.name}`);
    const now = 10_000;
    return {
      index: i, name: lc.name, mustDrop: lc.mustDrop, routed: lc.routed, cfg, now, wan: WANS[0]!, limits: limitsOf(cfg),
      engine: loadEngine(cfg, debug, laneSeed(seed, i), WANS[0]!, now),
      twin: opts.lockstep ? loadEngine(cfg, !debug, laneSeed(seed, i), WANS[0]!, now) : null,
      outs: new Ring(512), ins: new Ring(256), aliases: new Ring(128), peerCalls: new Ring(128),
    };
  });
  const isLan = subnetMatcher(LAN_SUBNETS);
  const slotCount = lanes[0]!.engine.slotCount;

  const t0 = performance.now();
  let index = 0;
  let lastProgress = t0;
  while (index < opts.count) {
    const lane = lanes[rng.int(lanes.length)]!;
    const side: Side = rng.chance(0.5) ? 'out' : 'in';
    const want = Math.min(rng.chance(0.2) ? rng.range(1, 8) : rng.range(16, 128), opts.count - index);

    // ---- build the batch
    const pkts: Uint8Array[] = [];
    const kinds: string[] = [];
    while (pkts.length < want) {
      const g = pickGen(rng, rng.chance(0.97) ? side : side === 'out' ? 'in' : 'out');
      const made = g.make(rng, lane);
      if (!made) continue;
      for (const p0 of made) {
        if (pkts.length >= Math.min(slotCount, opts.count - index)) break;
        let p = p0;
        let kind = g.name;
        if (rng.chance(0.3)) { p = mutate(p, randomMutations(rng), rng.chance(0.7), MUT_ADDRS); kind = 'mutated'; }
        pkts.push(p); kinds.push(kind);
      }
    }
    const n = pkts.length;

    // ---- run it
    const e = lane.engine;
    const sideNum = side === 'out' ? SIDE_INSIDE : SIDE_OUTSIDE;
    const tail = rng.int(256);
    for (let i = 0; i < n; i++) putSlot(e, i, pkts[i]!, tail);
    const before = sideCounts(e, side);
    let returned: number;
    const te = performance.now();
    try {
      returned = e.process(n, sideNum, lane.now);
    } catch (err) {
      report({
        kind: 'trap', index, lane: lane.name, side, generator: kinds.join(','),
        problems: [`process() threw: ${err instanceof Error ? err.message : String(err)}`, ...pkts.map((p, i) => `packet ${index + i} (${kinds[i]}): ${hex(p)}`)],
      });
      // A trapped instance is not to be trusted: start the lane afresh.
      lane.engine = loadEngine(lane.cfg, debug, laneSeed(seed, lane.index), lane.wan, lane.now);
      lane.outs.clear(); lane.ins.clear();
      index += n; batches++;
      continue;
    }
    engineMs += performance.now() - te;

    // ---- check everything it emitted
    const outputs: (Uint8Array | null)[] = [];
    let passed = 0;
    for (let i = 0; i < n; i++) {
      const v = e.verdict(i);
      if (v !== 0 && v !== 1) {
        report({ kind: 'packet', index: index + i, lane: lane.name, side, generator: kinds[i], problems: [`verdict byte ${v}`], input: hex(pkts[i]!) });
        outputs.push(null);
        continue;
      }
      if (v === 0) { outputs.push(null); continue; }
      passed++;
      const out = e.packet(i);
      opts.tamper?.(index + i, out, pkts[i]!);
      outputs.push(out);
      const input = pkts[i]!;
      const problems = input.length > e.slotSize ? [`a ${input.length}-byte packet (longer than a slot) passed`]
        : [...passedProblems(input, out), ...addressProblems(side, out, lane.wan, isLan, lane.routed)];
      const blocked = lane.mustDrop?.(side, input);
      if (blocked) problems.push(blocked);
      if (problems.length) {
        report({ kind: 'packet', index: index + i, lane: lane.name, side, generator: kinds[i], problems, input: hex(input), output: hex(out) });
      }
      gens[kinds[i]!]![1]++;
    }
    for (const k of kinds) gens[k]![0]++;
    passedTotal += passed;
    const acc = accountingProblems(before, sideCounts(e, side), n, passed, returned);
    if (acc.length) report({ kind: 'accounting', index, lane: lane.name, side, problems: acc });

    if (lane.twin) {
      const t = lane.twin;
      for (let i = 0; i < n; i++) putSlot(t, i, pkts[i]!, tail ^ 0xff);
      try {
        t.process(n, sideNum, lane.now);
        for (let i = 0; i < n; i++) {
          const tv = t.verdict(i);
          const to = tv === 1 ? t.packet(i) : null;
          const o = outputs[i] ?? null;
          if ((tv === 1) !== (o !== null) || (o && to && Buffer.compare(o, to) !== 0)) {
            report({ kind: 'lockstep', index: index + i, lane: lane.name, side, generator: kinds[i], problems: ['the twin engine (other build, other slot bytes) disagrees'], input: hex(pkts[i]!) });
          }
        }
      } catch (err) {
        report({ kind: 'trap', index, lane: lane.name, side, problems: [`twin process() threw: ${err instanceof Error ? err.message : String(err)}`] });
        lane.twin = loadEngine(lane.cfg, !debug, laneSeed(seed, lane.index), lane.wan, lane.now);
      }
    }

    // ---- learn from what came out
    for (let i = 0; i < n; i++) {
      const o = outputs[i];
      if (!o || o.length < 20) continue;
      const x = parse(o);
      if (x.mf || x.fragOffset) continue;
      if (side === 'out') {
        lane.outs.push(o);
        if (x.proto === 6 && x.dport === 1723) {
          const ctype = pptpAt(o, 8);
          if (ctype === 7 || ctype === 10) lane.aliases.push([x.dst, pptpAt(o, 12)]);
        }
      } else if (x.dst !== lane.wan) {
        lane.ins.push(o);
        if (x.proto === 6 && x.sport === 1723 && pptpAt(o, 8) === 8) lane.peerCalls.push([x.dst, x.src, pptpAt(o, 12)]);
      }
    }

    index += n;
    batches++;

    // ---- table invariants now and then
    if (batches % every === 0) {
      for (const l of lanes) {
        const t = tableProblems(l.engine, l.wan, l.now, l.limits);
        if (t.length) report({ kind: 'table', index, lane: l.name, side: null, problems: t });
      }
    }

    // ---- time passes; now and then a long pause or a new WAN address
    const r = rng.int(1000);
    const dt = r < 900 ? rng.int(20) : r < 990 ? rng.int(5000) : rng.int(200_000);
    lane.now += dt;
    if (dt > 1000) lane.engine.x.tick(lane.now, 65536);
    if (lane.twin && dt > 1000) lane.twin.x.tick(lane.now, 65536);
    if (rng.int(20000) === 0) {
      lane.wan = lane.wan === WANS[0] ? WANS[1]! : WANS[0]!;
      lane.engine.x.setWanAddress(ipToRaw(lane.wan), lane.now);
      lane.twin?.x.setWanAddress(ipToRaw(lane.wan), lane.now);
      lane.outs.clear(); lane.aliases.clear();
    }

    if (opts.progress && performance.now() - lastProgress > 10_000) {
      lastProgress = performance.now();
      const s = (lastProgress - t0) / 1000;
      opts.progress(`${index} packets, ${findings} findings, ${Math.round(index / s)} packets/s`);
    }
  }

  // ---- the end: invariants, then everything must expire
  for (const l of lanes) {
    const t = tableProblems(l.engine, l.wan, l.now, l.limits);
    if (t.length) report({ kind: 'table', index, lane: l.name, side: null, problems: t });
    const m = l.cfg.main;
    const longest = Math.max(m.tcpTimeout, m.udpTimeout, m.icmpTimeout, m.fragTimeout, m.espTimeout + m.espInitTimeout,
      m.ikeTimeout, m.nattTimeout, m.greTimeout) + 60;
    for (let s = 0; s <= longest * 2; s += 30) { l.now += 30_000; l.engine.x.tick(l.now, 1 << 20); }
    const c = l.engine.counters();
    const left = { flows: l.engine.x.flowActive(), bindings: c.bindingsActive - reservedBindings(l.limits), frags: c.fragsActive, esp: c.espActive, ike: c.ikeActive, calls: c.callsActive };
    const still = Object.entries(left).filter(([, v]) => v !== 0);
    if (still.length) report({ kind: 'expiry', index, lane: l.name, side: null, problems: [`after every timeout: ${still.map(([k, v]) => `${k} ${v}`).join(', ')}`] });
    const t2 = tableProblems(l.engine, l.wan, l.now, l.limits);
    if (t2.length) report({ kind: 'table', index, lane: l.name, side: null, problems: t2 });
  }

  const seconds = (performance.now() - t0) / 1000;
  const drops: Record<string, number> = {};
  for (const l of lanes) for (const [k, v] of Object.entries(l.engine.drops())) drops[k] = (drops[k] ?? 0) + v;
  return {
    seed, packets: index, passed: passedTotal, dropped: index - passedTotal, batches, traps, findings, kept, seconds,
    packetsPerSecond: index / seconds, engineSeconds: engineMs / 1000, generators: gens, drops,
  };
}

/** A finding as text, with what it takes to reproduce it. */
export function formatFinding(f: Finding, seed: number): string {
  const lines = [`${f.kind} at packet ${f.index} (seed ${seed}, lane ${f.lane}${f.side ? `, ${f.side === 'out' ? 'LAN' : 'WAN'} side` : ''}${f.generator && f.kind !== 'trap' ? `, ${f.generator}` : ''}):`];
  for (const p of f.problems) lines.push(`  ${p}`);
  if (f.input) lines.push(`  input  ${f.input}`);
  if (f.output) lines.push(`  output ${f.output}`);
  lines.push(`  reproduce: npm run fuzz -- --seed ${seed} --count ${f.index + 1}`);
  return lines.join('\n');
}
