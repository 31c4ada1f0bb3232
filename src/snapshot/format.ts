// The snapshot file: the engine's state as a small header followed by the
// engine's tables, one section per table, and a CRC-32 over everything
// before it. Written front to back in one pass and readable the same way,
// so the same bytes can later be streamed to a standby router.
//
//   header (HEADER_BYTES, little-endian)
//     0  8  magic "VPNMASQS"
//     8  u32 format version (FORMAT_VERSION)
//    12  u32 header bytes
//    16  u32 engine layout version (the engine's snapLayoutVersion())
//    20  u32 max_flows
//    24  u32 WAN address (raw, network-order bytes read little-endian)
//    28  u32 section count
//    32  f64 engine clock at the copy (ms, the supervisor's monotonic clock)
//    40  f64 wall clock at the copy (ms since the epoch)
//    48  32  engine build id (SHA-256 of the Wasm bytes)
//    80  ... zero up to HEADER_BYTES
//   sections, each: u32 id, u32 record bytes, u32 records, u32 capacity,
//                   then records × record bytes
//   trailer: u32 CRC-32 (IEEE) of every byte before it
//
// What a section holds is the engine's business: the supervisor copies the
// regions the engine lists (snapRegion* exports) and hands them back to the
// engine on restore, which checks every record and rebuilds its indexes.

import * as zlib from 'node:zlib';

export const MAGIC = Buffer.from('VPNMASQS', 'latin1');
export const FORMAT_VERSION = 1;
export const HEADER_BYTES = 128;
export const SECTION_HEADER_BYTES = 16;
/** No table of the engine is near this; a count beyond it is hostile, not big. */
export const MAX_SECTIONS = 64;

export interface Section {
  id: number;
  recordBytes: number;
  records: number;
  capacity: number;
  /** records × recordBytes bytes */
  data: Uint8Array;
}

export interface SnapshotHeader {
  formatVersion: number;
  layoutVersion: number;
  maxFlows: number;
  wanAddr: number;
  clockMs: number;
  wallMs: number;
  buildId: string;
}

export interface Snapshot extends SnapshotHeader {
  sections: Section[];
  bytes: number;
}

// ---- CRC-32 -----------------------------------------------------------------
// zlib.crc32 exists from Node 20.15 / 22.2; the router image has Node 18, so
// a table-driven fallback (the same IEEE polynomial) stands in there.
let table: Uint32Array | null = null;
function crc32Js(data: Uint8Array, prev = 0): number {
  if (!table) {
    table = new Uint32Array(256);
    for (let n = 0; n < 256; n++) {
      let c = n;
      for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
      table[n] = c >>> 0;
    }
  }
  let c = (prev ^ 0xffffffff) >>> 0;
  for (let i = 0; i < data.length; i++) c = table[(c ^ data[i]!) & 0xff]! ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}
const native = (zlib as unknown as { crc32?: (d: Uint8Array, v?: number) => number }).crc32;
export function crc32(data: Uint8Array, prev = 0): number {
  // An empty view may have no backing store: zlib's crc32(crc, NULL, 0) then
  // answers 0 (its initial value), not crc, and the running sum is lost
  // (seen with the empty tables of a snapshot that crossed from the data-path thread).
  if (data.length === 0) return prev >>> 0;
  return native ? native(data, prev) >>> 0 : crc32Js(data, prev);
}
export { crc32Js as crc32Portable };

// ---- encode -----------------------------------------------------------------

/** The header bytes. */
export function encodeHeader(h: SnapshotHeader, sectionCount: number): Buffer {
  const b = Buffer.alloc(HEADER_BYTES);
  MAGIC.copy(b, 0);
  b.writeUInt32LE(h.formatVersion, 8);
  b.writeUInt32LE(HEADER_BYTES, 12);
  b.writeUInt32LE(h.layoutVersion >>> 0, 16);
  b.writeUInt32LE(h.maxFlows >>> 0, 20);
  b.writeUInt32LE(h.wanAddr >>> 0, 24);
  b.writeUInt32LE(sectionCount, 28);
  b.writeDoubleLE(h.clockMs, 32);
  b.writeDoubleLE(h.wallMs, 40);
  Buffer.from(h.buildId.padEnd(64, '0').slice(0, 64), 'hex').copy(b, 48);
  return b;
}

export function encodeSectionHeader(s: Section): Buffer {
  const b = Buffer.alloc(SECTION_HEADER_BYTES);
  b.writeUInt32LE(s.id, 0);
  b.writeUInt32LE(s.recordBytes, 4);
  b.writeUInt32LE(s.records, 8);
  b.writeUInt32LE(s.capacity, 12);
  return b;
}

/** The file as a list of chunks (header, section headers and data, CRC), without one big copy. */
export function encodeChunks(h: SnapshotHeader, sections: Section[]): Uint8Array[] {
  const chunks: Uint8Array[] = [encodeHeader(h, sections.length)];
  for (const s of sections) chunks.push(encodeSectionHeader(s), s.data);
  let c = 0;
  for (const ch of chunks) c = crc32(ch, c);
  const tail = Buffer.alloc(4);
  tail.writeUInt32LE(c, 0);
  chunks.push(tail);
  return chunks;
}

export function encode(h: SnapshotHeader, sections: Section[]): Buffer {
  return Buffer.concat(encodeChunks(h, sections));
}

// ---- decode -----------------------------------------------------------------

/** Why a file is not a snapshot this engine can take; the message is the log line's reason. */
export class SnapshotRefused extends Error {}

/**
 * Parses and checks the framing: magic, version, lengths, CRC. Section
 * contents are only bounded here (the engine checks the records).
 */
export function decode(buf: Uint8Array): Snapshot {
  const b = Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength);
  if (b.length < HEADER_BYTES + 4) throw new SnapshotRefused(`truncated (${b.length} bytes)`);
  if (!b.subarray(0, 8).equals(MAGIC)) throw new SnapshotRefused('not a vpnmasq snapshot (bad magic)');
  const formatVersion = b.readUInt32LE(8);
  if (formatVersion !== FORMAT_VERSION) throw new SnapshotRefused(`format version ${formatVersion}, this vpnmasq reads ${FORMAT_VERSION}`);
  const headerBytes = b.readUInt32LE(12);
  if (headerBytes !== HEADER_BYTES) throw new SnapshotRefused(`header of ${headerBytes} bytes, expected ${HEADER_BYTES}`);
  const want = b.readUInt32LE(b.length - 4);
  const got = crc32(b.subarray(0, b.length - 4));
  if (want !== got) throw new SnapshotRefused(`checksum mismatch (file says ${want.toString(16)}, contents give ${got.toString(16)}): truncated or corrupted`);
  const count = b.readUInt32LE(28);
  if (count > MAX_SECTIONS) throw new SnapshotRefused(`${count} sections (at most ${MAX_SECTIONS})`);
  const sections: Section[] = [];
  let off = HEADER_BYTES;
  const end = b.length - 4;
  for (let i = 0; i < count; i++) {
    if (end - off < SECTION_HEADER_BYTES) throw new SnapshotRefused(`section ${i}: truncated header`);
    const id = b.readUInt32LE(off);
    const recordBytes = b.readUInt32LE(off + 4);
    const records = b.readUInt32LE(off + 8);
    const capacity = b.readUInt32LE(off + 12);
    off += SECTION_HEADER_BYTES;
    if (recordBytes === 0 || recordBytes > 4096) throw new SnapshotRefused(`section ${id}: record size ${recordBytes}`);
    if (records > capacity) throw new SnapshotRefused(`section ${id}: ${records} records in a table of ${capacity}`);
    const len = records * recordBytes;
    if (len > end - off) throw new SnapshotRefused(`section ${id}: ${records} records of ${recordBytes} bytes run past the end of the file`);
    if (sections.some((s) => s.id === id)) throw new SnapshotRefused(`section ${id} appears twice`);
    sections.push({ id, recordBytes, records, capacity, data: b.subarray(off, off + len) });
    off += len;
  }
  if (off !== end) throw new SnapshotRefused(`${end - off} bytes after the last section`);
  return {
    formatVersion, layoutVersion: b.readUInt32LE(16), maxFlows: b.readUInt32LE(20), wanAddr: b.readUInt32LE(24),
    clockMs: b.readDoubleLE(32), wallMs: b.readDoubleLE(40), buildId: b.subarray(48, 80).toString('hex'),
    sections, bytes: b.length,
  };
}
