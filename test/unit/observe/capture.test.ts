// The drop capture ring (assembly/nat/capture.ts) and its drain
// (src/observe/capture.ts) on the real engine: off, nothing is copied; on,
// each dropped packet is copied whole with its reason and side; a reason
// filter keeps only that reason; a full ring counts the rest as lost and
// never overwrites; passing packets are never copied.
import { describe, it, expect } from 'vitest';
import { TestRouter, WAN } from '../../helpers/harness.js';
import { DropCapture } from '../../../src/observe/capture.js';
import { SIDE_INSIDE, SIDE_OUTSIDE, CAPTURE_SLOTS } from '../../../src/engine/abi.js';
import { udp } from '../../helpers/packet.js';

const SERVER = '198.51.100.7';
const b64 = (p: Uint8Array) => Buffer.from(p).toString('base64');

describe('drop capture', () => {
  it('copies nothing while off', () => {
    const t = new TestRouter();
    const cap = new DropCapture(t.engine);
    t.in(udp(SERVER, 53, WAN, 1234)); // no_flow
    cap.drain();
    expect(cap.read().drops).toEqual([]);
  });

  it('copies each dropped packet whole, with reason and side; passing packets are not copied', () => {
    const t = new TestRouter();
    const cap = new DropCapture(t.engine);
    cap.start();
    try {
      const truncated = udp('192.168.1.10', 5000, SERVER, 53).subarray(0, 10);
      const stray = udp(SERVER, 53, WAN, 1234);
      const good = udp('192.168.1.10', 5001, SERVER, 53);
      t.batch([good, truncated], SIDE_INSIDE);
      t.batch([stray], SIDE_OUTSIDE);
      const r = cap.read();
      expect(r.drops.map((d) => [d.reason, d.side, d.length, d.data])).toEqual([
        ['truncated', 'lan', 10, b64(truncated)],
        ['no_flow', 'wan', stray.length, b64(stray)],
      ]);
      expect(r.lost).toBe(0);
      expect(Math.abs(r.drops[0]!.timeMs - Date.now())).toBeLessThan(60_000);
      expect(cap.read().drops).toEqual([]); // read empties it
    } finally {
      cap.stop();
    }
  });

  it('keeps only the chosen reason', () => {
    const t = new TestRouter();
    const cap = new DropCapture(t.engine);
    cap.start('no_flow');
    t.batch([udp('192.168.1.10', 5000, SERVER, 53).subarray(0, 10)], SIDE_INSIDE);
    t.batch([udp(SERVER, 53, WAN, 1234)], SIDE_OUTSIDE);
    expect(cap.read().drops.map((d) => d.reason)).toEqual(['no_flow']);
    cap.stop();
    expect(() => cap.start('no_such_reason')).toThrow(/unknown drop reason/);
  });

  it('a full ring counts the rest as lost and keeps the first ones', () => {
    const t = new TestRouter();
    const cap = new DropCapture(t.engine);
    cap.start();
    // more drops in one batch than the ring holds, before any drain
    const pkts = Array.from({ length: CAPTURE_SLOTS + 10 }, (_, i) => udp(SERVER, 53, WAN, 1000 + i));
    t.batch(pkts, SIDE_OUTSIDE);
    const r = cap.read();
    expect(r.drops).toHaveLength(CAPTURE_SLOTS);
    expect(r.lost).toBe(10);
    expect(r.drops[0]!.data).toBe(b64(pkts[0]!));
    expect(r.drops[CAPTURE_SLOTS - 1]!.data).toBe(b64(pkts[CAPTURE_SLOTS - 1]!));
    cap.stop();
    // stopped: the engine copies nothing more
    t.batch([udp(SERVER, 53, WAN, 9)], SIDE_OUTSIDE);
    expect(cap.read().drops).toEqual([]);
    expect(() => { cap.start(); cap.start(); }).toThrow(/already running/);
    cap.stop();
  });
});
