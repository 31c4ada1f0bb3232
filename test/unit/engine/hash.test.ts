// The flow table's indexes (linear probing) must spread keys whatever they
// look like: a LAN's tuples are regular (consecutive hosts and ports toward
// few servers), and a hash that only mixes after folding the key words
// linearly maps such tuples onto few home slots, so lookups walk long
// clusters (a million bench/core.js flows: 15.1 slots per lookup, worst 473,
// clusters of 29.6; their snapshot restore about 3× slower than random ones).
// Linear probing at load 0.5 reads 1.5 slots per successful lookup on
// average with a good hash; the bounds below leave room for that and for
// bad luck (the tuples and seeds are fixed, so the figures are too), and
// catch clustering by a wide margin. The figures come from
// the engine's own walk over each index (hashProbe, assembly/nat/probe.ts).
import { describe, expect, it } from 'vitest';
import { Engine } from '../../../src/engine/engine.js';
import {
  INDEX_BIND, INDEX_FLOW_IN, INDEX_FLOW_OUT, INDEX_SRC, PROBE_ENTRIES, PROBE_MAX, PROBE_MEAN, PROBE_RUN_MAX, PROBE_RUN_MEAN,
  PROBE_SLOTS, ipToRaw, maskRaw,
} from '../../../src/engine/abi.js';
// The benches' packets and table filling (plain JS, no imports).
import { fillFlows } from '../../../bench/udp.js';

const SETTINGS = {
  tcp_timeout: 7440, tcp_transitory_timeout: 240, udp_timeout: 3600, icmp_timeout: 60, frag_timeout: 30,
  esp_timeout: 1800, esp_init_timeout: 120, esp_init_retries: 5, ike_timeout: 3600, natt_timeout: 300, gre_timeout: 7440,
  parallel_sessions: 0, esp_guess: 0, masq_port_lo: 1024, masq_port_hi: 65535,
  unreplied_timeout: 30, src_max_flows: 262144, src_max_ike: 256, src_max_calls: 256, src_max_esp_pending: 16, src_max_frags: 256,
};
const MAX_FLOWS = 262144;

type Tuple = { src: number[]; sport: number; dst: number[]; dport: number };

/** An engine for MAX_FLOWS flows, the tuples opened LAN→WAN; the probe figures of its indexes. */
function fill(n: number, tuple: (i: number) => Tuple, seed: number) {
  const e = Engine.load({ maxFlows: MAX_FLOWS, seed });
  const x = e.x;
  x.setLanNet(0, ipToRaw('10.0.0.0'), maskRaw(8)); x.setLanNetCount(1);
  e.applySettings({ ...SETTINGS });
  const now = 10_000;
  x.setWanAddress(ipToRaw('203.0.113.1'), now);
  fillFlows(e, n, tuple, now);
  expect(x.flowActive()).toBe(n);
  const fig = (index: number) => ({
    slots: x.hashProbe(index, PROBE_SLOTS), entries: x.hashProbe(index, PROBE_ENTRIES),
    mean: +x.hashProbe(index, PROBE_MEAN).toFixed(3), max: x.hashProbe(index, PROBE_MAX),
    runMean: +x.hashProbe(index, PROBE_RUN_MEAN).toFixed(3), runMax: x.hashProbe(index, PROBE_RUN_MAX),
  });
  return { out: fig(INDEX_FLOW_OUT), in: fig(INDEX_FLOW_IN), bind: fig(INDEX_BIND), src: fig(INDEX_SRC) };
}

const ip = (a: number) => [(a >>> 24) & 255, (a >>> 16) & 255, (a >>> 8) & 255, a & 255];

// Deterministic pseudo-random numbers (the tuples, not the engine's seed).
function rng(seed: number) {
  let s = seed >>> 0;
  return () => { s = (s + 0x6d2b79f5) >>> 0; let t = s; t = Math.imul(t ^ (t >>> 15), t | 1); t ^= t + Math.imul(t ^ (t >>> 7), t | 61); return ((t ^ (t >>> 14)) >>> 0); };
}

const SETS: Array<[string, number, (i: number) => Tuple]> = [
  // bench/core.js's shape: 16 consecutive hosts × 256 consecutive ports, toward 64 consecutive servers, one port
  ['consecutive hosts × consecutive ports × consecutive servers', MAX_FLOWS, (i) => {
    const sock = i % 4096, rem = Math.floor(i / 4096);
    return { src: [10, 0, 1, 10 + (sock >> 8)], sport: 10000 + (sock & 255), dst: [198, 51, 100, rem], dport: 53 };
  }],
  // one server: 240 consecutive hosts × 256 consecutive ports (each socket its own WAN port)
  ['consecutive hosts × consecutive ports, one server', 61440, (i) => (
    { src: [10, 0, i >> 8 >> 8, 1 + ((i >> 8) & 255)], sport: 20000 + (i & 255), dst: [198, 51, 100, 7], dport: 443 })],
  // consecutive ports of one host toward consecutive server ports of one server (a port scan, a test rig)
  ['one host, consecutive ports × consecutive server ports', MAX_FLOWS, (i) => (
    { src: [10, 0, 0, 2], sport: 1024 + (i & 4095), dst: [198, 51, 100, 7], dport: 1 + (i >> 12) })],
];
{
  const r = rng(7);
  const socks = Array.from({ length: 4096 }, () => ({ src: ip(0x0a000000 | (r() & 0xffffff)), sport: 1024 + (r() % 64000) }));
  const servers = Array.from({ length: 64 }, () => ({ dst: ip(0x01000000 + (r() % 0xdf000000)), dport: 1 + (r() % 65535) }));
  SETS.push(['random hosts, ports and servers', MAX_FLOWS, (i) => ({ ...socks[i % 4096], ...servers[Math.floor(i / 4096)] })]);
}

describe('hash indexes: probe lengths near linear probing\'s own', () => {
  for (const [name, n, tuple] of SETS) {
    it(`${name}: ${n} flows`, () => {
      for (const seed of [1, 0x9e3779b9]) {
        const f = fill(n, tuple, seed);
        const ctx = `${name}, seed ${seed}: ${JSON.stringify(f)}`;
        expect(f.out.entries, ctx).toBe(n);
        expect(f.in.entries, ctx).toBe(n);
        // load ≤ 0.5: 1.5 slots per lookup on average, clusters of a few slots
        for (const ix of [f.out, f.in, f.bind, f.src]) {
          expect(ix.mean, ctx).toBeLessThan(2);
          expect(ix.max, ctx).toBeLessThan(96); // seen: 35–42 (the old hash: 145–174)
          expect(ix.runMean, ctx).toBeLessThan(4);
          expect(ix.runMax, ctx).toBeLessThan(128); // seen: 40–45 (old: 160–210); ln n / (α − 1 − ln α) ≈ 65 expected at 262144
        }
      }
    }, 120_000);
  }
});
