import { describe, it, expect } from 'vitest';
import { FakeTun } from '../../../src/tun/fake.js';

// Layout used throughout: 4 slots of 64 bytes at 0, lengths at 256, verdicts at 272.
const SLOT_BASE = 0;
const SLOT = 64;
const MAX = 4;
const LEN_BASE = SLOT_BASE + SLOT * MAX;
const VERDICT_BASE = LEN_BASE + 4 * MAX;
const MEM_SIZE = VERDICT_BASE + MAX;

function pkt(tag: number, len: number): Uint8Array {
  const p = new Uint8Array(len);
  for (let i = 0; i < len; i++) p[i] = (tag + i) & 0xff;
  return p;
}

const nextTurn = () => new Promise<void>((r) => setImmediate(r));

describe('FakeTun.readBatch', () => {
  it('puts packet i at slotBase + i*slotSize and its length as LE u32 at lenBase + 4i', () => {
    const tun = new FakeTun();
    const mem = new ArrayBuffer(MEM_SIZE + 100);
    const base = 8; // slots need not start at 0
    const lenBase = base + SLOT * MAX + 3; // nor lengths be aligned
    tun.inject(pkt(1, 20));
    tun.inject(pkt(2, 64)); // exactly fills its slot
    tun.inject(pkt(3, 1));
    expect(tun.readBatch(mem, base, SLOT, lenBase, MAX)).toBe(3);
    const bytes = new Uint8Array(mem);
    const dv = new DataView(mem);
    expect(bytes.slice(base, base + 20)).toEqual(pkt(1, 20));
    expect(bytes.slice(base + SLOT, base + 2 * SLOT)).toEqual(pkt(2, 64));
    expect(bytes[base + 2 * SLOT]).toBe(3);
    expect([0, 1, 2].map((i) => dv.getUint32(lenBase + 4 * i, true))).toEqual([20, 64, 1]);
    // little-endian on the wire, whatever the host
    expect(bytes[lenBase + 4]).toBe(64);
    expect(bytes[lenBase + 5]).toBe(0);
    expect(tun.pending).toBe(0);
  });

  it('reads at most max packets and leaves the rest queued in order', () => {
    const tun = new FakeTun();
    const mem = new ArrayBuffer(MEM_SIZE);
    for (let i = 0; i < 6; i++) tun.inject(pkt(i * 10, 10 + i));
    expect(tun.readBatch(mem, SLOT_BASE, SLOT, LEN_BASE, MAX)).toBe(4);
    expect(tun.pending).toBe(2);
    expect(tun.readBatch(mem, SLOT_BASE, SLOT, LEN_BASE, MAX)).toBe(2);
    const dv = new DataView(mem);
    expect(dv.getUint32(LEN_BASE, true)).toBe(14);
    expect(new Uint8Array(mem, SLOT_BASE + SLOT, 15)).toEqual(pkt(50, 15));
    expect(tun.readBatch(mem, SLOT_BASE, SLOT, LEN_BASE, MAX)).toBe(0);
    expect(tun.readBatch(mem, SLOT_BASE, SLOT, LEN_BASE, 0)).toBe(0);
  });

  it('copies on inject, so the caller may reuse its buffer', () => {
    const tun = new FakeTun();
    const p = pkt(7, 8);
    tun.inject(p);
    p.fill(0);
    const mem = new ArrayBuffer(MEM_SIZE);
    tun.readBatch(mem, SLOT_BASE, SLOT, LEN_BASE, MAX);
    expect(new Uint8Array(mem, 0, 8)).toEqual(pkt(7, 8));
  });

  it('drops and counts packets larger than slotSize without using a slot', () => {
    const tun = new FakeTun();
    const mem = new ArrayBuffer(MEM_SIZE);
    tun.inject(pkt(1, 10));
    tun.inject(pkt(2, SLOT + 1));
    tun.inject(pkt(3, 12));
    expect(tun.readBatch(mem, SLOT_BASE, SLOT, LEN_BASE, MAX)).toBe(2);
    expect(tun.readTruncated).toBe(1);
    expect(new DataView(mem).getUint32(LEN_BASE + 4, true)).toBe(12);
    expect(new Uint8Array(mem, SLOT, 12)).toEqual(pkt(3, 12));
  });

  it('checks the whole batch against the buffer once, even with nothing queued', () => {
    const tun = new FakeTun();
    const mem = new ArrayBuffer(MEM_SIZE);
    // slots would run past the end
    expect(() => tun.readBatch(mem, SLOT_BASE, SLOT, LEN_BASE, MEM_SIZE)).toThrow(RangeError);
    expect(() => tun.readBatch(mem, MEM_SIZE - SLOT + 1, SLOT, 0, 1)).toThrow(RangeError);
    // lengths would run past the end
    expect(() => tun.readBatch(mem, 0, SLOT, MEM_SIZE - 3, 1)).toThrow(RangeError);
    // exactly at the end is fine
    expect(tun.readBatch(mem, MEM_SIZE - SLOT, SLOT, MEM_SIZE - 4, 1)).toBe(0);
    // nonsense arguments
    expect(() => tun.readBatch(mem, -1, SLOT, LEN_BASE, 1)).toThrow(RangeError);
    expect(() => tun.readBatch(mem, 0.5, SLOT, LEN_BASE, 1)).toThrow(RangeError);
    expect(() => tun.readBatch(mem, 0, 0, LEN_BASE, 1)).toThrow(RangeError);
    expect(() => tun.readBatch(new Uint8Array(8) as unknown as ArrayBuffer, 0, SLOT, 0, 0)).toThrow(TypeError);
    // a failed call consumes nothing
    tun.inject(pkt(1, 4));
    expect(() => tun.readBatch(mem, 0, SLOT, MEM_SIZE, 1)).toThrow(RangeError);
    expect(tun.pending).toBe(1);
  });
});

describe('FakeTun.writeBatch', () => {
  function stage(mem: ArrayBuffer, i: number, p: Uint8Array, verdict: number, len = p.length): void {
    new Uint8Array(mem).set(p.subarray(0, Math.min(p.length, SLOT)), SLOT_BASE + i * SLOT);
    new DataView(mem).setUint32(LEN_BASE + 4 * i, len, true);
    new Uint8Array(mem)[VERDICT_BASE + i] = verdict;
  }

  it('writes exactly the slots whose verdict equals want, in order, with their lengths', () => {
    const tun = new FakeTun();
    const mem = new ArrayBuffer(MEM_SIZE);
    stage(mem, 0, pkt(1, 20), 1);
    stage(mem, 1, pkt(2, 30), 2);
    stage(mem, 2, pkt(3, 64), 1);
    stage(mem, 3, pkt(4, 40), 1);
    expect(tun.writeBatch(mem, SLOT_BASE, SLOT, LEN_BASE, VERDICT_BASE, 3, 1)).toBe(2); // slot 3 is past count
    expect(tun.written).toEqual([pkt(1, 20), pkt(3, 64)]);
    expect(tun.writeBatch(mem, SLOT_BASE, SLOT, LEN_BASE, VERDICT_BASE, MAX, 2)).toBe(1);
    expect(tun.written[2]).toEqual(pkt(2, 30));
    expect(tun.writeBatch(mem, SLOT_BASE, SLOT, LEN_BASE, VERDICT_BASE, MAX, 9)).toBe(0);
    expect(tun.writeDrops).toBe(0);
  });

  it('keeps copies, not views of the shared memory', () => {
    const tun = new FakeTun();
    const mem = new ArrayBuffer(MEM_SIZE);
    stage(mem, 0, pkt(1, 20), 0);
    tun.writeBatch(mem, SLOT_BASE, SLOT, LEN_BASE, VERDICT_BASE, 1, 0);
    new Uint8Array(mem).fill(0xee);
    expect(tun.written[0]).toEqual(pkt(1, 20));
  });

  it('skips and counts selected slots whose length is 0 or larger than slotSize', () => {
    const tun = new FakeTun();
    const mem = new ArrayBuffer(MEM_SIZE);
    stage(mem, 0, pkt(1, 20), 1, SLOT + 1);
    stage(mem, 1, pkt(2, 20), 1, 0);
    stage(mem, 2, pkt(3, 20), 1);
    stage(mem, 3, pkt(4, 20), 0, 0xffff_ffff); // not selected: not a drop
    expect(tun.writeBatch(mem, SLOT_BASE, SLOT, LEN_BASE, VERDICT_BASE, MAX, 1)).toBe(1);
    expect(tun.written).toEqual([pkt(3, 20)]);
    expect(tun.writeDrops).toBe(2);
  });

  it('checks slots, lengths and verdicts against the buffer', () => {
    const tun = new FakeTun();
    const mem = new ArrayBuffer(MEM_SIZE);
    expect(() => tun.writeBatch(mem, SLOT_BASE, SLOT, LEN_BASE, MEM_SIZE - 1, 2, 1)).toThrow(RangeError);
    expect(() => tun.writeBatch(mem, SLOT_BASE, SLOT, MEM_SIZE - 4, VERDICT_BASE, 2, 1)).toThrow(RangeError);
    expect(() => tun.writeBatch(mem, MEM_SIZE - SLOT, SLOT, LEN_BASE, VERDICT_BASE, 2, 1)).toThrow(RangeError);
    expect(() => tun.writeBatch(mem, SLOT_BASE, SLOT, LEN_BASE, VERDICT_BASE, 1, 256)).toThrow(RangeError);
    expect(tun.writeBatch(mem, SLOT_BASE, SLOT, LEN_BASE, VERDICT_BASE, 0, 1)).toBe(0);
    expect(tun.written).toEqual([]);
  });

  it('round-trips: read a batch, decide in place, write the accepted ones', () => {
    const tun = new FakeTun();
    const mem = new ArrayBuffer(MEM_SIZE);
    for (let i = 0; i < 4; i++) tun.inject(pkt(i, 10 + i));
    const n = tun.readBatch(mem, SLOT_BASE, SLOT, LEN_BASE, MAX);
    const bytes = new Uint8Array(mem);
    for (let i = 0; i < n; i++) {
      bytes[SLOT_BASE + i * SLOT] ^= 0xff; // "rewrite" the packet
      bytes[VERDICT_BASE + i] = i % 2; // accept odd ones
    }
    expect(tun.writeBatch(mem, SLOT_BASE, SLOT, LEN_BASE, VERDICT_BASE, n, 1)).toBe(2);
    const want1 = pkt(1, 11);
    want1[0] ^= 0xff;
    expect(tun.written[0]).toEqual(want1);
    expect(tun.written[1].length).toBe(13);
  });
});

describe('FakeTun.onReadable and close', () => {
  it('wakes on a later turn, once for several injects, and again while packets remain', async () => {
    const tun = new FakeTun();
    const mem = new ArrayBuffer(MEM_SIZE);
    const reads: number[] = [];
    tun.onReadable(() => reads.push(tun.readBatch(mem, SLOT_BASE, SLOT, LEN_BASE, 2)));
    for (let i = 0; i < 5; i++) tun.inject(pkt(i, 4));
    expect(reads).toEqual([]); // never synchronously
    await nextTurn();
    expect(reads).toEqual([2]);
    await nextTurn();
    await nextTurn();
    expect(reads).toEqual([2, 2, 1]);
    await nextTurn();
    expect(reads).toEqual([2, 2, 1]); // drained: no spurious wake-ups
  });

  it('wakes for packets injected before onReadable', async () => {
    const tun = new FakeTun();
    tun.inject(pkt(1, 4));
    let woken = 0;
    tun.onReadable(() => {
      woken++;
      tun.readBatch(new ArrayBuffer(MEM_SIZE), SLOT_BASE, SLOT, LEN_BASE, MAX);
    });
    await nextTurn();
    expect(woken).toBe(1);
  });

  it('close is idempotent, stops wake-ups and fails later use clearly', async () => {
    const tun = new FakeTun('tun7');
    let woken = 0;
    tun.onReadable(() => woken++);
    tun.inject(pkt(1, 4));
    tun.close();
    tun.close();
    await nextTurn();
    expect(woken).toBe(0);
    expect(tun.closed).toBe(true);
    expect(() => tun.readBatch(new ArrayBuffer(MEM_SIZE), 0, SLOT, LEN_BASE, 1)).toThrow('TUN device "tun7" is closed');
    expect(() => tun.inject(pkt(1, 4))).toThrow(/closed/);
  });
});
