// conntrack -D at the engine: deleteEntry(table, index) frees one record of
// the flow, ESP or IKE table, the way expiry frees it; the traffic it
// carried is then treated as new (a reply without its flow is dropped), and
// a bad or repeated delete is a no-op, never a trap.
import { describe, expect, it } from 'vitest';
import { TestRouter, WAN } from '../helpers/harness.js';
import { esp, isakmp, parse, udp } from '../helpers/packet.js';

const A = '192.168.1.10';
const B = '192.168.1.11';
const SRV = '198.51.100.7';

describe('deleteEntry (conntrack -D)', () => {
  it('D01 a UDP flow: deleted, its reply is dropped, the other host keeps its flow, a second delete is a no-op', () => {
    const r = new TestRouter();
    const a = parse(r.out(udp(A, 5001, SRV, 53))!);
    parse(r.out(udp(B, 5002, SRV, 53))!);
    const flows = r.engine.flows(WAN, r.now);
    const fa = flows.find((f) => f.lan === A)!;
    expect(r.engine.deleteEntry(fa)).toBe(true);
    expect(r.engine.flows(WAN, r.now).map((f) => f.lan)).toEqual([B]);
    expect(r.engine.x.flowActive()).toBe(1);
    // the reply to A's old mapping has no flow any more
    expect(r.in(udp(SRV, 53, WAN, a.sport))).toBeNull();
    expect(parse(r.in(udp(SRV, 53, WAN, 5002))!).dst).toBe(B);
    expect(r.engine.deleteEntry(fa)).toBe(false);
    // A can open it again, from the same port
    expect(parse(r.out(udp(A, 5001, SRV, 53))!).sport).toBe(a.sport);
  });

  it('D02 an ESP association and an IKE entry', () => {
    const r = new TestRouter();
    r.vpn();
    r.out(isakmp(A, 500, SRV, 500, '0a0a0a0a0a0a0a0a'));
    r.out(esp(A, SRV, 0x1001));
    expect(parse(r.in(esp(SRV, WAN, 0xc001))!).dst).toBe(A);
    const ent = r.vpnEntries();
    const sa = ent.find((e) => e.proto === 'esp')!;
    const ike = ent.find((e) => e.state === 'IKE')!;
    expect(sa.spiIn).toBe('0x0000c001');
    expect(r.engine.deleteEntry(sa)).toBe(true);
    expect(r.vpnEntries().filter((e) => e.proto === 'esp')).toEqual([]);
    expect(r.engine.deleteEntry(ike)).toBe(true);
    expect(r.vpnEntries()).toEqual([]);
    expect(r.engine.deleteEntry(sa)).toBe(false);
    expect(r.engine.deleteEntry(ike)).toBe(false);
  });

  it('D03 bad tables and indexes (an attacker on the control socket cannot reach memory through them): 0, no trap', () => {
    const r = new TestRouter();
    for (const [t, i] of [[0, 0], [0, 0xffffffff], [1, 12345678], [2, 0x7fffffff], [3, 99999], [4, 0], [0xffffffff, 1]]) {
      expect(r.engine.x.deleteEntry(t!, i!)).toBe(0);
    }
    expect(r.engine.deleteEntry({ id: 'flow:-1' } as never)).toBe(false);
    expect(r.engine.deleteEntry({ id: 'nope:1' } as never)).toBe(false);
  });
});
