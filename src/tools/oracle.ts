// The oracle: what must hold for every packet the engine emits and for its
// tables and counters, checked from scratch (full checksum recomputation,
// the tables read back from memory). Shared by the property tests
// (test/property/engine.test.ts) and the fuzzer (src/tools/fuzz.ts). Every
// check returns a list of problems (empty = fine), so a test can expect []
// and the fuzzer can report them with a reproducer.

import type { Engine } from '../engine/engine.js';
import { C_DROP_BASE, COUNTERS, DROP_COUNT } from '../engine/abi.js';
import { ipCsumOk, isIcmpError, l4CsumOk, parse, quotedIpCsumOk, quotedL4CsumOk } from './packet.js';

/** The TTL an emitted packet must carry: one given back (the kernel took two), never past 255. */
export function expectedTtl(inputTtl: number): number {
  return Math.min(inputTtl + 1, 255);
}

/**
 * What must hold for anything the engine lets through, whatever came in:
 * same length, bytes past the IP total length untouched, TTL + 1, a valid
 * IP header checksum (the engine checks it before anything else), and
 * every checksum that was right on input still right (incremental
 * adjustment keeps a right checksum right): L4, an ICMP error's quoted IP
 * header and, when the whole datagram is quoted, its quoted L4 checksum.
 */
export function passedProblems(input: Uint8Array, output: Uint8Array): string[] {
  const out: string[] = [];
  if (output.length !== input.length) { out.push(`length ${input.length} became ${output.length}`); return out; }
  const total = (input[2] << 8) | input[3];
  for (let i = total; i < input.length; i++) {
    if (output[i] !== input[i]) { out.push(`byte ${i} past the total length ${total} changed`); break; }
  }
  if (output[8] !== expectedTtl(input[8])) out.push(`TTL ${input[8]} became ${output[8]}, not ${expectedTtl(input[8])}`);
  if (!ipCsumOk(output)) out.push('IP header checksum wrong');
  if (l4CsumOk(input) && !l4CsumOk(output)) out.push('L4 checksum right on input, wrong on output');
  if (isIcmpError(input) && isIcmpError(output)) {
    if (quotedIpCsumOk(input) && !quotedIpCsumOk(output)) out.push('quoted IP header checksum right on input, wrong on output');
    if (quotedL4CsumOk(input) === true && quotedL4CsumOk(output) === false) out.push('quoted L4 checksum right on input, wrong on output');
  }
  return out;
}

/** A valid input's output: every checksum right by full recomputation, TTL + 1, same length. */
export function validOutputProblems(input: Uint8Array, output: Uint8Array): string[] {
  const out: string[] = [];
  if (!ipCsumOk(output)) out.push('IP header checksum');
  if (!l4CsumOk(output)) out.push('L4 checksum');
  const x = parse(output);
  if (x.proto === 1 && [3, 4, 11, 12].includes(x.icmpType) && !x.mf && !x.fragOffset && !quotedIpCsumOk(output)) {
    out.push('quoted IP header checksum');
  }
  if (isIcmpError(output) && quotedL4CsumOk(output) === false) out.push('quoted L4 checksum');
  if (x.ttl !== expectedTtl(input[8])) out.push(`TTL ${x.ttl}, not ${expectedTtl(input[8])}`);
  if (output.length !== input.length) out.push(`length ${input.length} became ${output.length}`);
  return out;
}

export type Side = 'out' | 'in';

/**
 * Addresses on the wire: nothing the engine sends to the WAN side carries a
 * LAN address (outer source or destination, or inside an ICMP error's
 * quote, unless `routed` says the quoted packet is routed WAN → LAN traffic
 * that a rule opens), nor goes to the WAN address itself, multicast,
 * broadcast, loopback or 0/8, and its source is the WAN address; nothing it
 * delivers from the WAN side claims a LAN or the router's own source.
 */
export function addressProblems(side: Side, output: Uint8Array, wan: string, isLan: (a: string) => boolean,
  routed: (quoted: Uint8Array) => boolean = () => false): string[] {
  const out: string[] = [];
  const x = parse(output);
  if (side === 'out') {
    if (x.src !== wan) out.push(`left the WAN side with source ${x.src}, not the WAN address ${wan}`);
    if (isLan(x.dst)) out.push(`left the WAN side addressed to the LAN address ${x.dst}`);
    if (x.dst === wan) out.push(`left the WAN side addressed to the WAN address itself (hairpin)`);
    const bad = notUnicast(x.dst);
    if (bad) out.push(`left the WAN side addressed to ${bad} ${x.dst}`);
    const q = x.l4.subarray(8);
    if (isIcmpError(output) && q[0] >> 4 === 4 && (q[0] & 0xf) >= 5) { // a quote that is an IPv4 header
      const qs = `${q[12]}.${q[13]}.${q[14]}.${q[15]}`, qd = `${q[16]}.${q[17]}.${q[18]}.${q[19]}`;
      // (a WAN host that routes to a LAN address a rule opens knows that address: errors about such traffic quote it)
      const leak = isLan(qs) ? qs : isLan(qd) && !routed(q) ? qd : null;
      if (leak) out.push(`left the WAN side quoting the LAN address ${leak}`);
    }
  } else {
    if (isLan(x.src) || x.src === wan) out.push(`delivered from the WAN side with source ${x.src}`);
  }
  return out;
}

/** What kind of address no packet may be sent to out of the WAN, or null for a unicast one. */
export function notUnicast(a: string): string | null {
  const first = Number(a.split('.')[0]);
  if (a === '255.255.255.255') return 'the limited broadcast';
  if (first >= 224 && first < 240) return 'multicast';
  if (first >= 240) return 'reserved 240/4';
  if (first === 127) return 'loopback';
  if (first === 0) return '0/8';
  return null;
}

/** A predicate for "inside one of these CIDR subnets". */
export function subnetMatcher(cidrs: readonly string[]): (a: string) => boolean {
  const nets = cidrs.map((c) => {
    const [a, l] = c.split('/');
    const len = Number(l ?? 32);
    const mask = len === 0 ? 0 : (0xffffffff << (32 - len)) >>> 0;
    return [(toU32(a) & mask) >>> 0, mask] as const;
  });
  return (a: string) => { const v = toU32(a); return nets.some(([n, m]) => ((v & m) >>> 0) === n); };
}
function toU32(a: string): number {
  const p = a.split('.').map(Number);
  return ((p[0] << 24) | (p[1] << 16) | (p[2] << 8) | p[3]) >>> 0;
}

// ---------------------------------------------------------------------------
// Counters

export function dropsTotal(engine: Engine): number {
  let n = 0;
  for (let i = C_DROP_BASE; i < C_DROP_BASE + DROP_COUNT; i++) n += engine.counter(i);
  return n;
}

export interface SideCounts { rx: number; pass: number; drops: number }

/** The counters one batch from `side` must move. */
export function sideCounts(engine: Engine, side: Side): SideCounts {
  return {
    rx: engine.counter(side === 'out' ? COUNTERS.rxInside : COUNTERS.rxOutside),
    pass: engine.counter(side === 'out' ? COUNTERS.passInside : COUNTERS.passOutside),
    drops: dropsTotal(engine),
  };
}

/**
 * Accounting of one batch of `n` packets: process() returned `returned`,
 * `passed` verdicts said pass; rx moved by n, pass by passed, the drop
 * counters together by n - passed (every packet counted exactly once).
 */
export function accountingProblems(before: SideCounts, after: SideCounts, n: number, passed: number, returned: number): string[] {
  const out: string[] = [];
  if (returned !== passed) out.push(`process() returned ${returned}, ${passed} verdicts pass`);
  if (after.rx - before.rx !== n) out.push(`rx moved by ${after.rx - before.rx} for ${n} packets`);
  if (after.pass - before.pass !== passed) out.push(`pass moved by ${after.pass - before.pass}, ${passed} passed`);
  if (after.drops - before.drops !== n - passed) out.push(`drops moved by ${after.drops - before.drops}, ${n - passed} dropped`);
  return out;
}

// ---------------------------------------------------------------------------
// Tables

/** The bindings that stay when every flow is gone: one per redirected port. */
export function reservedBindings(lim: TableLimits): number {
  return (lim.redirects ?? []).reduce((n, [, lo, hi]) => n + hi - lo + 1, 0);
}

export interface TableLimits {
  /** The masquerade pool: an alias is the LAN port or one of these. */
  pool: [number, number];
  /** No flow may expire later than this many seconds from now. */
  maxTimeoutS: number;
  /** [proto, lo, hi] of redirect src_dport ranges: their flows' aliases are the redirected ports. */
  redirects?: readonly (readonly [number, number, number])[];
}

/**
 * Table invariants, read back from engine memory: the active counts agree
 * with the records, inbound and outbound keys are unique, endpoint-
 * independent mapping (one alias per LAN endpoint, one LAN endpoint per
 * alias), aliases are the LAN port or from the pool (or a redirect's),
 * expiry within the longest timeout, the VPN tables' gauges agree with
 * their records and their keys are unique, and every packet ever received
 * was counted exactly once (received = passed + dropped).
 */
export function tableProblems(engine: Engine, wan: string, now: number, lim: TableLimits): string[] {
  const out: string[] = [];
  const flows = engine.flows(wan, now);
  const c = engine.counters();
  const eq = (a: number, b: number, what: string) => { if (a !== b) out.push(`${what}: ${a}, expected ${b}`); };
  eq(engine.x.flowActive(), flows.length, 'flowActive()');
  eq(c.flowsActive, flows.length, 'flowsActive counter');
  // a flow leaves by expiry, a flush, or an early drop to make room in a full table
  eq(c.flowsNew - c.flowsExpired - c.flowsFlushed - (c.earlyDrops ?? 0), flows.length, 'flows new - expired - flushed - early drops');
  const inKeys = new Set<string>();
  const outKeys = new Set<string>();
  const aliasOf = new Map<string, number>();
  const ownerOf = new Map<string, string>();
  const redirected = (proto: number, port: number) => (lim.redirects ?? []).some(([p, lo, hi]) => p === proto && port >= lo && port <= hi);
  for (const f of flows) {
    const inKey = `${f.protoNum}/${f.aliasPort}/${f.remote}/${f.remotePort}`;
    if (inKeys.has(inKey)) out.push(`two flows answer ${inKey}`);
    inKeys.add(inKey);
    const outKey = `${f.protoNum}/${f.lan}/${f.lanPort}/${f.remote}/${f.remotePort}`;
    if (outKeys.has(outKey)) out.push(`two flows for ${outKey}`);
    outKeys.add(outKey);
    const ep = `${f.protoNum}/${f.lan}/${f.lanPort}`;
    if (aliasOf.has(ep) && aliasOf.get(ep) !== f.aliasPort) out.push(`endpoint ${ep} has aliases ${aliasOf.get(ep)} and ${f.aliasPort}`);
    aliasOf.set(ep, f.aliasPort);
    const al = `${f.protoNum}/${f.aliasPort}`;
    if (ownerOf.has(al) && ownerOf.get(al) !== ep) out.push(`alias ${al} shared by ${ownerOf.get(al)} and ${ep}`);
    ownerOf.set(al, ep);
    const inPool = f.aliasPort >= lim.pool[0] && f.aliasPort <= lim.pool[1];
    if (f.aliasPort !== f.lanPort && !inPool && !redirected(f.protoNum, f.aliasPort)) out.push(`alias ${f.aliasPort} of ${ep} is neither its port nor from the pool`);
    if (f.expiresInS > lim.maxTimeoutS) out.push(`flow ${outKey} expires in ${f.expiresInS} s, beyond ${lim.maxTimeoutS} s`);
  }
  // Bindings: every redirected port is reserved (a static binding, whether
  // a flow uses it or not), plus one dynamic binding per other alias in use.
  const reserved = reservedBindings(lim);
  const dynamic = [...ownerOf.keys()].filter((al) => { const [p, a] = al.split('/').map(Number); return !redirected(p, a); });
  eq(c.bindingsActive, reserved + dynamic.length, 'bindingsActive');
  const vpn = engine.vpnEntries(wan, now);
  const esp = vpn.filter((v) => v.proto === 'esp');
  const ike = vpn.filter((v) => v.state === 'IKE');
  const gre = vpn.filter((v) => v.proto === 'gre');
  eq(c.espActive, esp.length, 'espActive');
  eq(c.ikeActive, ike.length, 'ikeActive');
  eq(c.callsActive, gre.length, 'callsActive');
  const uniq = (xs: string[], what: string) => {
    const seen = new Set<string>();
    const dup = xs.filter((k) => seen.has(k) || !seen.add(k));
    if (dup.length) out.push(`${what} not unique: ${[...new Set(dup)].slice(0, 3).join(', ')}`);
  };
  // (an entry opened by a protocol forward's inbound SPI has no outbound SPI yet: 0)
  uniq(esp.filter((v) => v.spiOut && v.spiOut !== '0x00000000').map((v) => `${v.remote}/${v.spiOut}`), 'ESP outbound SPI');
  uniq(esp.filter((v) => v.spiIn).map((v) => `${v.remote}/${v.spiIn}`), 'ESP inbound SPI');
  uniq(ike.map((v) => `${v.remote}/${v.icookie}`), 'IKE initiator cookie');
  uniq(gre.map((v) => `${v.callIdAlias}`), 'PPTP call alias');
  eq(c.rxInside + c.rxOutside, c.passInside + c.passOutside + dropsTotal(engine), 'received vs passed + dropped');
  return out;
}
