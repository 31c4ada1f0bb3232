// Property tests of the state snapshot (issue 9), with fast-check: a valid
// snapshot of an engine with flows, ESP, IKE and PPTP state is mutated
// (bytes changed, inserted, removed; truncated; with the checksum fixed up
// afterwards, so the engine's own record checks are what is tested) and
// restored into another engine, in both builds (the debug build traps on
// any out-of-bounds access the release build would silently make). Every
// time: no trap, and either the restore is refused whole (the engine reset
// is empty) or it loads consistently (every live record found through its
// indexes, gauges matching) and then forwards random traffic without trap.
//
// FC_RUNS_SCALE=10 runs it ten times harder.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { ipToRaw, maskRaw } from '../../src/engine/abi.js';
import { TestRouter, WAN } from '../helpers/harness.js';
import { ACK, PSH, SYN, esp, gre, icmpEcho, isakmp, parse, pptpField, pptpMsg, tcp, udp } from '../helpers/packet.js';
import { capture, restoreInto, SnapshotRefused } from '../../src/snapshot/state.js';
import { crc32, decode, encode } from '../../src/snapshot/format.js';

const SCALE = Number(process.env.FC_RUNS_SCALE ?? 1);
const runs = (n: number) => ({ numRuns: Math.max(1, Math.round(n * SCALE)) });
const SRV = '198.51.100.7';

function configure(r: TestRouter): void {
  const x = r.engine.x;
  x.setLanNet(0, ipToRaw('192.168.1.0'), maskRaw(24));
  x.setLanNetCount(1);
  r.engine.applySettings(r.settings);
  x.setWanAddress(ipToRaw(WAN), r.now);
}

/** A snapshot of a router with a bit of everything (several hosts, every table; with acct its byte counters too). */
function sample(acct: boolean): Buffer {
  const r = new TestRouter({ seed: 77, maxFlows: 1024, acct });
  r.vpn();
  for (let h = 0; h < 6; h++) {
    const host = `192.168.1.${10 + h}`;
    const t = r.out(tcp(host, 40000 + h, SRV, 80, SYN));
    if (t) r.in(tcp(SRV, 80, WAN, parse(t).sport, SYN | ACK));
    r.out(udp(host, 5353, SRV, 53));
    r.out(udp(host, 4500, SRV, 4500));
    r.out(icmpEcho(host, SRV, 8, 100 + h));
    r.out(esp(host, SRV, 0x1000 + h));
    r.in(esp(SRV, WAN, 0x2000 + h));
    r.out(isakmp(host, 500, SRV, 500, `0${h}0${h}0${h}0${h}0${h}0${h}0${h}0${h}`));
    const s = r.out(tcp(host, 41000, SRV, 1723, SYN));
    if (s) {
      const wp = parse(s).sport;
      r.in(tcp(SRV, 1723, WAN, wp, SYN | ACK));
      const o = r.out(tcp(host, 41000, SRV, 1723, PSH | ACK, pptpMsg(7, 5)));
      if (o) r.in(tcp(SRV, 1723, WAN, wp, PSH | ACK, pptpMsg(8, 700 + h, pptpField(o, 12))));
    }
  }
  r.advance(1);
  const c = capture(r.engine, ipToRaw(WAN), r.now);
  return encode(c.header, c.sections);
}

const SAMPLES = { plain: sample(false), acct: sample(true) };

const mutation = fc.oneof(
  // overwrite a few bytes (anywhere after the header's magic and version)
  fc.array(fc.record({ at: fc.nat(), v: fc.integer({ min: 0, max: 255 }) }), { minLength: 1, maxLength: 8 })
    .map((edits) => (b: Buffer) => { for (const e of edits) b[12 + (e.at % (b.length - 16))] = e.v; return b; }),
  // flip one bit in the records
  fc.record({ at: fc.nat(), bit: fc.integer({ min: 0, max: 7 }) })
    .map(({ at, bit }) => (b: Buffer) => { b[128 + (at % (b.length - 132))] ^= 1 << bit; return b; }),
  // a 32-bit field set to an extreme value (counts, times, addresses, pointers-to-be)
  fc.record({ at: fc.nat(), v: fc.constantFrom(0, 1, 0x7fffffff, 0x80000000, 0xffffffff, 1024, 1025, 65535, 65536) })
    .map(({ at, v }) => (b: Buffer) => { b.writeUInt32LE(v >>> 0, 16 + 4 * (at % ((b.length - 20) >> 2))); return b; }),
  // copy one record-sized span over another (duplicates)
  fc.record({ from: fc.nat(), to: fc.nat(), len: fc.constantFrom(8, 32, 48) })
    .map(({ from, to, len }) => (b: Buffer) => { const n = b.length - 132 - len; b.copy(b, 128 + (to % n), 128 + (from % n), 128 + (from % n) + len); return b; }),
  // cut or insert bytes
  fc.record({ at: fc.nat(), len: fc.integer({ min: 1, max: 64 }), insert: fc.boolean() })
    .map(({ at, len, insert }) => (b: Buffer) => {
      const i = 16 + (at % (b.length - 20));
      return insert ? Buffer.concat([b.subarray(0, i), Buffer.alloc(len, 0xa5), b.subarray(i)]) : Buffer.concat([b.subarray(0, i), b.subarray(i + len)]);
    }),
);

function withCrc(b: Buffer): Buffer {
  if (b.length >= 4) b.writeUInt32LE(crc32(b.subarray(0, b.length - 4)), b.length - 4);
  return b;
}

function tryRestore(r: TestRouter, bytes: Buffer): 'loaded' | 'refused' {
  try {
    const res = restoreInto(r.engine, decode(bytes), ipToRaw(WAN));
    r.now = Math.max(r.now, res.clockMs);
    return 'loaded';
  } catch (e) {
    if (!(e instanceof SnapshotRefused)) throw e; // anything else (a trap) fails the property
    r.engine.reset();
    return 'refused';
  }
}

function traffic(r: TestRouter, seedPkts: number[]): void {
  for (const n of seedPkts) {
    const h = `192.168.1.${10 + (n % 8)}`;
    switch (n % 6) {
      case 0: r.in(esp(SRV, WAN, 0x2000 + (n % 8))); break;
      case 1: r.in(isakmp(SRV, 500, WAN, 500, `0${n % 8}0${n % 8}0${n % 8}0${n % 8}0${n % 8}0${n % 8}0${n % 8}0${n % 8}`, 'dddddddddddddddd')); break;
      case 2: r.in(gre(SRV, WAN, n % 65536)); break;
      case 3: r.in(udp(SRV, 53, WAN, 61000 + (n % 4000))); break;
      case 4: r.out(udp(h, 5353, SRV, 53)); break;
      default: r.out(tcp(h, 40000 + (n % 8), SRV, 80, ACK)); break;
    }
  }
  r.advance(400);
}

// option acct adds the byte counters' table (restored through a map of its own): the debug build checks its bounds.
describe.each([['release', false, false], ['debug', true, false], ['debug, acct', true, true]] as const)('snapshot restore properties (%s build)', (_name, debug, acct) => {
  const target = new TestRouter({ seed: 5, maxFlows: 1024, debug, acct });
  const SAMPLE = acct ? SAMPLES.acct : SAMPLES.plain;

  it('P01 the sample itself loads consistently', () => {
    target.engine.reset();
    configure(target);
    expect(tryRestore(target, Buffer.from(SAMPLE))).toBe('loaded');
    expect(target.engine.x.restoreVerify()).toBe(0);
    expect(target.engine.x.flowActive()).toBeGreaterThan(20);
  });

  it('P02 mutated snapshots (checksum fixed up): no trap; refused whole, or loaded consistently and forwarding', () => {
    let loaded = 0, refusedN = 0;
    fc.assert(fc.property(mutation, fc.array(fc.nat(), { maxLength: 30 }), (mutate, pkts) => {
      target.engine.reset();
      configure(target);
      const outcome = tryRestore(target, withCrc(mutate(Buffer.from(SAMPLE))));
      const x = target.engine.x;
      if (outcome === 'refused') {
        refusedN++;
        expect([x.flowActive(), x.flowHighWater(), x.espCount(), x.ikeCount(), x.callCount()]).toEqual([0, 0, 0, 0, 0]);
        configure(target);
      } else {
        loaded++;
        expect(x.restoreVerify()).toBe(0);
      }
      traffic(target, pkts);
      expect(x.restoreVerify()).toBe(0);
    }), runs(300));
    // both outcomes occur (a mutation of padding or a counter loads; most others are refused)
    expect(loaded).toBeGreaterThan(0);
    expect(refusedN).toBeGreaterThan(0);
  });

  it('P03 mutated snapshots without a fixed checksum are always refused', () => {
    fc.assert(fc.property(mutation, (mutate) => {
      const m = mutate(Buffer.from(SAMPLE));
      fc.pre(!m.equals(SAMPLE));
      target.engine.reset();
      configure(target);
      expect(tryRestore(target, m)).toBe('refused');
    }), runs(200));
  });
});
