// The batch loop (src/datapath/loop.ts) between two TUNs and the engine, on
// in-memory TUNs (src/tun/fake.ts) and the real engine configured through
// applyConfig: packets read in a batch, decided by the engine, the passing
// ones written back into the TUN they came from, the rest not.
import { describe, it, expect } from 'vitest';
import { BatchLoop } from '../../../src/datapath/loop.js';
import { FakeTun } from '../../../src/tun/fake.js';
import { Engine, nowMs } from '../../../src/engine/engine.js';
import { applyConfig } from '../../../src/engine/apply.js';
import { SIDE_INSIDE, SIDE_OUTSIDE, ipToRaw } from '../../../src/engine/abi.js';
import { parseConfig } from '../../../src/config/index.js';
import { parse, udp } from '../../helpers/packet.js';

const WAN = '203.0.113.1';
const SERVER = '198.51.100.7';

function setup() {
  const cfg = parseConfig(
    "config vpnmasq 'main'\n\toption lan_device 'br-lan'\n\toption wan_device 'wan'\n" +
      "\tlist lan_subnet '192.168.1.0/24'\n\toption masq_ports '40000-40009'\n",
    'loop-test',
  );
  const engine = Engine.load({ maxFlows: 1024 });
  applyConfig(engine, cfg, [...cfg.main.lanSubnets]);
  engine.x.setWanAddress(ipToRaw(WAN), nowMs());
  const inside = new FakeTun('tin');
  const outside = new FakeTun('tout');
  return { engine, inside, outside, loop: new BatchLoop(engine, inside, outside) };
}

describe('BatchLoop', () => {
  it('calls the engine per batch through the instance\'s own exports, not the loader\'s rest-argument wrappers (nothing allocated per batch)', () => {
    const { engine } = setup();
    for (const name of ['process', 'releasedCount', 'extraCount'] as const) {
      // A Wasm export is a native function; the loader's wrapper is JavaScript that builds an array per call.
      expect(Function.prototype.toString.call(engine.hot[name]), name).toMatch(/\[native code\]/);
      expect(Function.prototype.toString.call(engine.x[name]), name).toMatch(/\.\.\.args/);
    }
    // The same function behind both: a batch of nothing, counted alike.
    expect(engine.hot.process(0, SIDE_INSIDE, nowMs())).toBe(engine.x.process(0, SIDE_INSIDE, nowMs()));
    expect(engine.hot.releasedCount()).toBe(engine.x.releasedCount());
  });

  it('translates a batch from the LAN TUN, writes back only what passes, and routes the reply', () => {
    const { inside, outside, loop } = setup();
    inside.inject(udp('192.168.1.10', 5000, SERVER, 53));
    inside.inject(udp('192.168.1.11', 5000, SERVER, 53)); // same port to the same server: needs a pool port
    inside.inject(udp('192.168.1.12', 5000, SERVER, 53).subarray(0, 10)); // truncated: dropped
    expect(loop.pump(inside, SIDE_INSIDE)).toBe(3);
    expect(inside.written.map(parse).map((p) => [p.src, p.sport < 40000 ? p.sport : 'pool', p.dst])).toEqual([
      [WAN, 5000, SERVER],
      [WAN, 'pool', SERVER],
    ]);
    const poolPort = parse(inside.written[1]!).sport;
    expect(poolPort).toBeGreaterThanOrEqual(40000); // masq_ports reached the engine
    expect(poolPort).toBeLessThanOrEqual(40009);

    outside.inject(udp(SERVER, 53, WAN, poolPort));
    expect(loop.pump(outside, SIDE_OUTSIDE)).toBe(1);
    expect(outside.written.map(parse).map((p) => [p.src, p.dst, p.dport])).toEqual([[SERVER, '192.168.1.11', 5000]]);
    expect(inside.pending + outside.pending).toBe(0);
  });

  it('start() pumps each TUN when it becomes readable; after stop() nothing is read', async () => {
    const { inside, outside, loop } = setup();
    loop.start();
    inside.inject(udp('192.168.1.10', 6000, SERVER, 53));
    await new Promise<void>((r) => setImmediate(r));
    expect(inside.written.map(parse).map((p) => [p.src, p.sport])).toEqual([[WAN, 6000]]);
    expect(loop.batches).toBe(1);

    loop.stop();
    outside.inject(udp(SERVER, 53, WAN, 6000));
    await new Promise<void>((r) => setImmediate(r));
    expect(loop.pump(outside, SIDE_OUTSIDE)).toBe(0);
    expect(outside.pending).toBe(1);
    expect(outside.written).toEqual([]);
  });

  it('a backlog on one TUN holds the other TUN\'s packets for one batch at most: after each batch the other side\'s waiting packets get a batch', () => {
    const { engine, inside, outside, loop } = setup();
    const sides: [number, number][] = [];
    const process = engine.process.bind(engine);
    engine.process = (n: number, side: number, now: number) => { sides.push([side, n]); return process(n, side, now); };
    const full = engine.slotCount;
    for (let i = 0; i < 2 * full + 5; i++) inside.inject(udp('192.168.1.10', 7000, SERVER, 53));
    outside.inject(udp(SERVER, 53, WAN, 7000));
    outside.inject(udp(SERVER, 53, WAN, 7000));
    expect(loop.pump(inside, SIDE_INSIDE)).toBe(2 * full + 5 + 2);
    expect(sides).toEqual([[SIDE_INSIDE, full], [SIDE_OUTSIDE, 2], [SIDE_INSIDE, full], [SIDE_INSIDE, 5]]);
    expect(outside.written).toHaveLength(2); // the replies, translated and written
    expect(inside.pending + outside.pending).toBe(0);
  });

  describe('option busy_poll', () => {
    const turn = () => new Promise<void>((r) => setImmediate(r));
    // A clock that moves 1 ms each time it is read: the poll's slices and its end come after a
    // fixed number of rounds, whatever the machine's load.
    function polled(busyPollUs: number, callWaiting?: () => boolean) {
      const t = setup();
      let ms = 0;
      const loop = new BatchLoop(t.engine, t.inside, t.outside, { busyPollUs, callWaiting, clock: () => ++ms });
      return { ...t, loop };
    }

    it('a reply that comes while the loop polls is taken by the poll, not by a wake-up', async () => {
      const { inside, outside, loop } = polled(100_000);
      loop.start();
      inside.inject(udp('192.168.1.10', 7000, SERVER, 53));
      await turn(); // the wake-up: the request goes out and the poll starts
      expect(loop.wakes).toBe(1);
      expect(loop.polling).toBe(true);
      outside.inject(udp(SERVER, 53, WAN, 7000));
      for (let i = 0; i < 1000 && outside.written.length === 0; i++) await turn();
      expect(outside.written.map(parse).map((p) => [p.dst, p.dport])).toEqual([['192.168.1.10', 7000]]);
      expect(loop.polls).toBe(1);
      expect(loop.wakes).toBe(1); // the TUN's own readable callback found the ring already drained
      loop.stop();
      for (let i = 0; i < 1000 && loop.polling; i++) await turn();
      expect(loop.polling).toBe(false);
    });

    it('ends once busy_poll passes without a packet, and the next packet is a wake-up again', async () => {
      const { inside, loop } = polled(1000); // 1 ms
      loop.start();
      inside.inject(udp('192.168.1.10', 7001, SERVER, 53));
      await turn();
      for (let i = 0; i < 100_000 && loop.polling; i++) await turn();
      expect(loop.polling).toBe(false);
      inside.inject(udp('192.168.1.10', 7002, SERVER, 53));
      await turn();
      expect(loop.wakes).toBe(2);
      expect(inside.written.length).toBe(2);
      loop.stop();
    });

    it('hands the thread back to its event loop at once while the main thread waits for a call', async () => {
      let asked = 0;
      const { inside, loop } = polled(100_000, () => { asked++; return true; });
      loop.start();
      inside.inject(udp('192.168.1.10', 7003, SERVER, 53));
      await turn();
      // Every round yielded: one round per turn of the event loop, so a call posted meanwhile is answered next turn.
      const before = asked;
      await turn();
      expect(asked - before).toBe(1);
      loop.stop();
      await turn();
      await turn();
      expect(loop.polling).toBe(false);
    });

    it('0 (the default) never polls', async () => {
      const { inside, loop } = polled(0);
      loop.start();
      inside.inject(udp('192.168.1.10', 7004, SERVER, 53));
      await turn();
      expect(loop.wakes).toBe(1);
      expect(loop.polling).toBe(false);
      expect(loop.polls).toBe(0);
      loop.stop();
    });
  });
});
