// The WAN TUN's host queue of a packet (src/tun/ringclock.h, hostqueue::RemoteQueue, mirrored by remoteQueueOf):
// what the README promises of it, for any address. The programs themselves run in test/netns/tun.test.ts.
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { remoteQueueOf } from '../../../src/tun/tun.js';

const ICMP = 1, TCP = 6, UDP = 17, GRE = 47, ESP = 50;

describe('remoteQueueOf: the WAN TUN\'s host queues by internet host and protocol', () => {
  it('puts one server\'s ICMP, TCP, UDP, GRE and ESP on five different queues of 8 or 16, whatever its address', () => {
    fc.assert(fc.property(fc.integer({ min: 0, max: 0xffffffff }), fc.constantFrom(3, 4), (addr, bits) => {
      const qs = [ICMP, TCP, UDP, GRE, ESP].map((p) => remoteQueueOf(addr, p, bits));
      expect(new Set(qs).size).toBe(5);
      for (const q of qs) expect(q >= 0 && q < 1 << bits).toBe(true);
    }), { numRuns: 2000 });
  });

  it('with one queue, puts everything on it', () => {
    for (const p of [ICMP, TCP, UDP, GRE, ESP]) expect(remoteQueueOf(0xcb007102, p, 0)).toBe(0);
  });
});
