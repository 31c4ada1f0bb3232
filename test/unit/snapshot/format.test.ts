// The snapshot file's framing (src/snapshot/format.ts) with byte vectors:
// header fields at their offsets, sections, the CRC-32 trailer; and every
// way the framing can be wrong refused with its reason.
import { describe, expect, it } from 'vitest';
import * as zlib from 'node:zlib';
import { MessageChannel, receiveMessageOnPort } from 'node:worker_threads';
import {
  FORMAT_VERSION, HEADER_BYTES, SnapshotRefused, crc32, crc32Portable, decode, encode, type Section, type SnapshotHeader,
} from '../../../src/snapshot/format.js';

const H: SnapshotHeader = {
  formatVersion: FORMAT_VERSION, layoutVersion: 1, maxFlows: 1024, wanAddr: 0x017100cb /* 203.0.113.1 */,
  clockMs: 123456.5, wallMs: 1_790_000_000_000, buildId: 'ab'.repeat(32),
};
const S: Section[] = [
  { id: 2, recordBytes: 4, records: 2, capacity: 1024, data: Uint8Array.from([1, 2, 3, 4, 5, 6, 7, 8]) },
  { id: 1, recordBytes: 8, records: 1, capacity: 128, data: Uint8Array.from([9, 9, 9, 9, 9, 9, 9, 9]) },
];

describe('snapshot format', () => {
  it('F01 the bytes: magic, version, header size, layout, max_flows, WAN, sections, times, build id; sections; CRC trailer', () => {
    const b = encode(H, S);
    expect(b.length).toBe(HEADER_BYTES + 16 + 8 + 16 + 8 + 4);
    expect(b.subarray(0, 8).toString('latin1')).toBe('VPNMASQS');
    expect([b.readUInt32LE(8), b.readUInt32LE(12), b.readUInt32LE(16), b.readUInt32LE(20), b.readUInt32LE(24), b.readUInt32LE(28)])
      .toEqual([1, 128, 1, 1024, 0x017100cb, 2]);
    expect([b.readDoubleLE(32), b.readDoubleLE(40)]).toEqual([123456.5, 1_790_000_000_000]);
    expect(b.subarray(48, 80).toString('hex')).toBe('ab'.repeat(32));
    expect(b.subarray(80, 128).every((x) => x === 0)).toBe(true);
    expect(b.subarray(128, 144)).toEqual(Buffer.from([2, 0, 0, 0, 4, 0, 0, 0, 2, 0, 0, 0, 0, 4, 0, 0]));
    expect(b.subarray(144, 152)).toEqual(Buffer.from([1, 2, 3, 4, 5, 6, 7, 8]));
    expect(b.readUInt32LE(b.length - 4)).toBe(zlib.crc32 ? zlib.crc32(b.subarray(0, b.length - 4)) : crc32Portable(b.subarray(0, b.length - 4)));
  });

  it('F02 decode(encode(x)) is x', () => {
    const d = decode(encode(H, S));
    expect({ ...d, sections: undefined, bytes: undefined }).toEqual({ ...H, sections: undefined, bytes: undefined });
    expect(d.sections.map((s) => [s.id, s.recordBytes, s.records, s.capacity, Buffer.from(s.data).toString('hex')]))
      .toEqual(S.map((s) => [s.id, s.recordBytes, s.records, s.capacity, Buffer.from(s.data).toString('hex')]));
  });

  it('F03 the portable CRC-32 (Node 18) equals zlib\'s and the IEEE check value', () => {
    expect(crc32Portable(Buffer.from('123456789'))).toBe(0xcbf43926);
    expect(crc32(Buffer.from('123456789'))).toBe(0xcbf43926);
    const big = Buffer.alloc(100_000, 7);
    expect(crc32Portable(big.subarray(50_000), crc32Portable(big.subarray(0, 50_000)))).toBe(crc32(big));
  });

  it('F03b an empty table that crossed a thread (no backing store) keeps the running CRC', () => {
    // zlib.crc32(view with a NULL data pointer, crc) answers 0: the clean-stop snapshot taken on the
    // data-path thread came out with a wrong checksum and was refused at the next start.
    const { port1, port2 } = new MessageChannel();
    const empty = new Uint8Array(0);
    port1.postMessage(empty, [empty.buffer]);
    const moved = receiveMessageOnPort(port2)!.message as Uint8Array;
    port1.close();
    expect(moved.length).toBe(0);
    expect(crc32(moved, 0x12345678)).toBe(0x12345678);
    const whole = Buffer.from('123456789');
    expect(crc32(whole.subarray(4), crc32(moved, crc32(whole.subarray(0, 4))))).toBe(0xcbf43926);
  });

  it('F04 every truncation and every single flipped bit is refused', () => {
    const b = encode(H, S);
    for (let n = 0; n < b.length; n++) expect(() => decode(b.subarray(0, n)), `cut at ${n}`).toThrow(SnapshotRefused);
    for (let i = 0; i < b.length; i++) {
      for (let bit = 0; bit < 8; bit++) {
        const f = Buffer.from(b); f[i] ^= 1 << bit;
        expect(() => decode(f), `bit ${bit} of byte ${i}`).toThrow(SnapshotRefused);
      }
    }
  });

  function fixed(edit: (b: Buffer) => void): Buffer {
    const b = encode(H, S);
    edit(b);
    b.writeUInt32LE(crc32(b.subarray(0, b.length - 4)), b.length - 4);
    return b;
  }

  it('F05 a sound checksum over bad framing is still refused, each with its reason', () => {
    expect(() => decode(fixed((b) => b.write('VPNMASQX', 0, 'latin1')))).toThrow(/bad magic/);
    expect(() => decode(fixed((b) => b.writeUInt32LE(9, 8)))).toThrow(/format version 9/);
    expect(() => decode(fixed((b) => b.writeUInt32LE(64, 12)))).toThrow(/header of 64 bytes/);
    expect(() => decode(fixed((b) => b.writeUInt32LE(1000, 28)))).toThrow(/1000 sections/);
    expect(() => decode(fixed((b) => b.writeUInt32LE(3, 28)))).toThrow(/truncated header/);
    expect(() => decode(fixed((b) => b.writeUInt32LE(1, 28)))).toThrow(/after the last section/);
    expect(() => decode(fixed((b) => b.writeUInt32LE(0xffffffff, 136)))).toThrow(/records in a table of/);
    expect(() => decode(fixed((b) => b.writeUInt32LE(1000, 136)))).toThrow(/past the end/);
    expect(() => decode(fixed((b) => b.writeUInt32LE(0, 132)))).toThrow(/record size 0/);
    expect(() => decode(fixed((b) => b.writeUInt32LE(2, 152)))).toThrow(/appears twice/);
  });
});
