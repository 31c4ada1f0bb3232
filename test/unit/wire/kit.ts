// Helpers shared by the wire tests: consistent truncations, and one packet
// sent through a TestRouter with the drop counters that moved.
import { expect } from 'vitest';
import type { TestRouter } from '../../helpers/harness.js';
import { csum } from '../../helpers/packet.js';

/** The IPv4 header checksum recomputed in place (header length clamped to the buffer). */
export function fixIp(p: Uint8Array): Uint8Array {
  const hl = Math.min((p[0] & 0xf) * 4, p.length);
  p[10] = 0; p[11] = 0;
  const c = ~csum(p.subarray(0, hl)) & 0xffff;
  p[10] = c >> 8; p[11] = c & 0xff;
  return p;
}

/** The first `n` bytes of `p` as a consistent IPv4 packet: total length `n`, header checksum fixed. */
export function cut(p: Uint8Array, n: number): Uint8Array {
  const q = p.slice(0, n);
  q[2] = n >> 8; q[3] = n & 0xff;
  return fixIp(q);
}

/** Sends one packet and returns what came out and which drop counters moved. */
export function send(r: TestRouter, side: 'out' | 'in', p: Uint8Array): { res: Uint8Array | null; delta: Record<string, number> } {
  const before = r.engine.drops();
  const rx0 = r.engine.counters();
  const res = side === 'out' ? r.out(p) : r.in(p);
  const after = r.engine.drops();
  const delta: Record<string, number> = {};
  for (const k of new Set([...Object.keys(before), ...Object.keys(after)])) {
    const d = (after[k] ?? 0) - (before[k] ?? 0);
    if (d) delta[k] = d;
  }
  const c = r.engine.counters();
  const rxKey = side === 'out' ? 'rxInside' : 'rxOutside';
  expect(c[rxKey] - rx0[rxKey]).toBe(1);
  return { res, delta };
}

/** The packet is dropped and exactly one counter, `reason`, moved. */
export function expectDrop(r: TestRouter, side: 'out' | 'in', p: Uint8Array, reason: string, what = ''): void {
  const { res, delta } = send(r, side, p);
  expect(res, `${what} ${reason}`).toBeNull();
  expect(delta, what).toEqual({ [reason]: 1 });
}
