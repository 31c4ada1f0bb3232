// The batch loop writes what the engine passes, and the later fragments a
// batch released from the engine's hold slots, to the TUN the batch came
// from, right after it, exactly once (FakeTun: the addon's write semantics).
import { describe, expect, it } from 'vitest';
import { Engine, nowMs } from '../../../src/engine/engine.js';
import { SIDE_INSIDE, SIDE_OUTSIDE, ipToRaw, maskRaw } from '../../../src/engine/abi.js';
import { FakeTun } from '../../../src/tun/fake.js';
import { BatchLoop } from '../../../src/datapath/loop.js';
import { fragment, ipCsumOk, parse, udp } from '../../helpers/packet.js';

const WAN = '203.0.113.1';
const H1 = '192.168.1.10';
const S1 = '198.51.100.7';

describe('BatchLoop and held fragments', () => {
  it('later fragments held by one batch go out on the same TUN right after the batch that brings their first', () => {
    const e = Engine.load({ maxFlows: 1024, seed: 7 });
    e.x.setLanNet(0, ipToRaw('192.168.1.0'), maskRaw(24));
    e.x.setLanNetCount(1);
    e.x.setWanAddress(ipToRaw(WAN), nowMs());
    const inside = new FakeTun('tin');
    const outside = new FakeTun('tout');
    const loop = new BatchLoop(e, inside, outside);
    inside.inject(udp(H1, 4000, S1, 53));
    loop.pump(inside, SIDE_INSIDE);
    expect(inside.written.length).toBe(1);

    const f = fragment(udp(S1, 53, WAN, 4000, new Array(3000).fill(9)), 1480);
    outside.inject(f[2]);
    outside.inject(f[1]);
    loop.pump(outside, SIDE_OUTSIDE);
    expect(outside.written.length).toBe(0); // held, not written
    outside.inject(f[0]);
    loop.pump(outside, SIDE_OUTSIDE);
    expect(outside.written.length).toBe(3);
    const offsets = outside.written.map((p) => parse(p).fragOffset);
    expect(offsets[0]).toBe(0); // the first, then the released (in hold-slot order)
    expect(offsets.slice(1).sort((a, b) => a - b)).toEqual([1480, 2960]);
    for (const p of outside.written) { expect(parse(p).dst).toBe(H1); expect(ipCsumOk(p)).toBe(true); }
    expect(inside.written.length).toBe(1); // nothing released on the other TUN

    // the next batch does not send them again
    outside.inject(udp(S1, 53, WAN, 4000));
    loop.pump(outside, SIDE_OUTSIDE);
    expect(outside.written.length).toBe(4);
    expect(e.counters().fragsReleased).toBe(2);
  });
});
