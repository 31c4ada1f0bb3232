// Property (fast-check), inbound: fragments of several datagrams from one
// server, some to one LAN host, some to another.
//  - IDs colliding on purpose, any interleaving of the datagrams (each
//    datagram's first fragment before its own later ones), duplicates,
//    batching: no byte of a datagram meant for one host is emitted toward
//    another. (A later fragment that comes before its own first while
//    another datagram under the same key is tracked cannot be told apart:
//    following fragments by IP ID has that limit, see the README.)
//  - Distinct IDs, any order at all (holds and releases), duplicates: the
//    same, and every datagram arrives whole (within what one source may hold).
// Every emitted fragment (batch slot or released hold slot) has a valid
// header checksum.
//
// Outbound: whatever the interleaving of two hosts' fragments with the
// same IP ID, no emitted ID is shared by fragments of two hosts, and each
// host's fragments leave under exactly one ID.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { SIDE_INSIDE, SIDE_OUTSIDE } from '../../src/engine/abi.js';
import { TestRouter, WAN } from '../helpers/harness.js';
import { fragment, ipCsumOk, parse, udp } from '../helpers/packet.js';

const SCALE = Number(process.env.FC_RUNS_SCALE ?? 1);
const runs = (n: number) => ({ numRuns: Math.max(1, Math.round(n * SCALE)) });
const HOSTS = ['192.168.1.10', '192.168.1.11'];
const S1 = '198.51.100.7';

describe('fragments never cross hosts (property)', () => {
  const datagram = fc.record({ host: fc.integer({ min: 0, max: 1 }), id: fc.integer({ min: 1, max: 3 }), chunks: fc.integer({ min: 2, max: 4 }) });

  /** Runs the fragments through the engine in batches; everything emitted (batch slots and released holds). */
  function run(r: TestRouter, pkts: Uint8Array[], batchSizes: number[]): Uint8Array[] {
    const emitted: Uint8Array[] = [];
    for (let i = 0, b = 0; i < pkts.length; b++) {
      const n = batchSizes[b % batchSizes.length];
      for (const o of r.batch(pkts.slice(i, i + n), SIDE_OUTSIDE)) if (o) emitted.push(o);
      emitted.push(...r.released());
      i += n;
    }
    return emitted;
  }

  /** Datagram k (fill byte 0x10 + k) from S1 to HOSTS[host]'s alias, fragmented: [first, later…]. */
  function datagrams(r: TestRouter, dgrams: { host: number; id: number; chunks: number }[]): Uint8Array[][] {
    const alias = HOSTS.map((h) => parse(r.out(udp(h, 4000, S1, 53))!).sport);
    return dgrams.map((d, k) =>
      fragment(udp(S1, 53, WAN, alias[d.host], new Array(8 * 150 * d.chunks - 8).fill(0x10 + k), { id: 0x100 + d.id }), 8 * 150));
  }

  function checkHosts(emitted: Uint8Array[], dgrams: { host: number }[]): void {
    for (const o of emitted) {
      expect(ipCsumOk(o)).toBe(true);
      const x = parse(o);
      const k = x.l4[x.l4.length - 1] - 0x10; // the fill byte names the datagram
      expect(x.dst, `fragment of datagram ${k}`).toBe(HOSTS[dgrams[k].host]);
    }
  }

  it('inbound, IDs colliding on purpose: any interleaving of datagrams (each first fragment before its own later ones), duplicates, batching', () => {
    fc.assert(fc.property(
      fc.array(datagram, { minLength: 1, maxLength: 4 }),
      fc.array(fc.nat(), { maxLength: 40 }), // which datagram goes next
      fc.array(fc.integer({ min: 1, max: 5 }), { minLength: 1, maxLength: 20 }), // batch sizes
      fc.array(fc.nat(), { maxLength: 6 }), // fragments sent twice
      (dgrams, picks, batchSizes, dups) => {
        const r = new TestRouter();
        const seqs = datagrams(r, dgrams).map((f) => [...f]);
        for (const x of dups) { const q = seqs[x % seqs.length]; q.push(q[(x >>> 3) % q.length]); } // after its first, by construction
        const order: Uint8Array[] = [];
        for (let i = 0; seqs.some((q) => q.length); i++) {
          const open = seqs.filter((q) => q.length);
          order.push(open[(picks[i % Math.max(1, picks.length)] ?? 0) % open.length].shift()!);
        }
        checkHosts(run(r, order, batchSizes), dgrams);
      },
    ), runs(150));
  });

  it('inbound, distinct IDs: any order at all (later fragments first: held, released), duplicates, batching: each datagram whole at its host', () => {
    fc.assert(fc.property(
      fc.uniqueArray(datagram, { minLength: 1, maxLength: 3, selector: (d) => d.id }),
      fc.array(fc.nat(), { maxLength: 40 }),
      fc.array(fc.integer({ min: 1, max: 5 }), { minLength: 1, maxLength: 20 }),
      fc.array(fc.nat(), { maxLength: 3 }),
      (dgrams, perm, batchSizes, dups) => {
        const r = new TestRouter();
        const frags = datagrams(r, dgrams).flat();
        for (const x of dups) frags.push(frags[x % frags.length]);
        for (let i = 0; i < frags.length && i < perm.length; i++) {
          const j = perm[i] % frags.length;
          [frags[i], frags[j]] = [frags[j], frags[i]];
        }
        const emitted = run(r, frags, batchSizes);
        checkHosts(emitted, dgrams);
        if (frags.length - dgrams.length > 8) return; // more orphans than one source may have held
        dgrams.forEach((d, k) => {
          const offsets = new Set(emitted.filter((o) => { const x = parse(o); return x.l4[x.l4.length - 1] === 0x10 + k; })
            .map((o) => parse(o).fragOffset));
          expect(offsets.size, `datagram ${k} complete`).toBe(d.chunks);
        });
      },
    ), runs(150));
  });

  it('outbound: two hosts, the same IP ID, any interleaving: one ID per host, never shared', () => {
    fc.assert(fc.property(
      fc.array(fc.nat(), { maxLength: 20 }),
      fc.integer({ min: 2, max: 4 }),
      fc.integer({ min: 0, max: 0xffff }),
      (perm, chunks, id) => {
        const r = new TestRouter();
        const frags: { pkt: Uint8Array; h: number }[] = [];
        HOSTS.forEach((h, i) => {
          for (const f of fragment(udp(h, 7000, S1, 9999, new Array(8 * 150 * chunks - 8).fill(i + 1), { id }), 8 * 150)) frags.push({ pkt: f, h: i });
        });
        for (let i = 0; i < frags.length && i < perm.length; i++) {
          const j = perm[i] % frags.length;
          [frags[i], frags[j]] = [frags[j], frags[i]];
        }
        const ids: Set<number>[] = [new Set(), new Set()];
        for (const f of frags) {
          const o = r.out(f.pkt);
          for (const p of [o, ...r.released()]) {
            if (!p) continue;
            expect(ipCsumOk(p)).toBe(true);
            const x = parse(p);
            ids[x.l4[x.l4.length - 1] - 1].add(x.id);
          }
        }
        expect(ids[0].size).toBe(1);
        expect(ids[1].size).toBe(1);
        expect([...ids[0]][0]).not.toBe([...ids[1]][0]);
      },
    ), runs(150));
  });
});
