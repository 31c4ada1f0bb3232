// Taking and restoring the engine's state.
//
// Take: between two batches (on the data-path thread, src/datapath/worker.ts,
// which hands the buffers to the main thread), copy every region the engine
// lists into JS buffers in one short synchronous step; checksum and write
// the copy later, off that step, to a temporary file renamed over the old
// one (a crash mid-write leaves the previous snapshot, never half a file).
//
// Restore: the framing is checked here (magic, version, CRC, sizes), the
// header against this engine and configuration (layout version, max_flows,
// region sizes, WAN address, time base); then the records go to the engine
// in chunks through its packet slots (free before the batch loop starts),
// and the engine checks each record and rebuilds its indexes and free
// lists itself. Any refusal resets the engine to empty: all or nothing.

import { closeSync, fsyncSync, mkdirSync, openSync, readdirSync, readFileSync, renameSync, unlinkSync, writeSync } from 'node:fs';
import { open, rename, unlink } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { continueClock, type Engine } from '../engine/engine.js';
import {
  RESTORE_BAD_BINDING, RESTORE_BAD_COUNT, RESTORE_BAD_FIELD, RESTORE_BAD_REGION, RESTORE_DUPLICATE, RESTORE_FULL,
  RESTORE_INCONSISTENT, RESTORE_ORDER, SNAP_CALLS, SNAP_COUNTERS, SNAP_ESP, SNAP_FLOW_ACCT, SNAP_FLOWS, SNAP_IKE, rawToIp,
} from '../engine/abi.js';
import {
  FORMAT_VERSION, SnapshotRefused, crc32, decode, encodeHeader, encodeSectionHeader, type Section, type Snapshot,
  type SnapshotHeader,
} from './format.js';

export { SnapshotRefused };

/** Region ids of the engine (SNAP_* in assembly/abi/codes.ts) → names for logs and status. */
export const REGION_NAMES: Record<number, string> = {
  [SNAP_COUNTERS]: 'counters', [SNAP_FLOWS]: 'flows', [SNAP_ESP]: 'esp', [SNAP_IKE]: 'ike', [SNAP_CALLS]: 'calls',
  [SNAP_FLOW_ACCT]: 'flow bytes',
};
const regionName = (id: number) => REGION_NAMES[id] ?? `region${id}`;

/** Engine restore error codes (assembly/snapshot.ts) → reasons. */
const RESTORE_ERRORS: Record<number, string> = {
  [RESTORE_BAD_REGION]: 'unknown table', [RESTORE_BAD_COUNT]: 'record count out of range',
  [RESTORE_BAD_FIELD]: 'a record with an impossible field value', [RESTORE_DUPLICATE]: 'two records with the same key',
  [RESTORE_BAD_BINDING]: 'a record inconsistent with the port bindings', [RESTORE_FULL]: 'a table overflowed',
  [RESTORE_INCONSISTENT]: 'tables inconsistent with their indexes', [RESTORE_ORDER]: 'restore out of order',
};

export interface Capture {
  header: SnapshotHeader;
  sections: Section[];
  /** milliseconds the synchronous copy took */
  copyMs: number;
}

/** The engine's regions as the engine describes them (id, pointer, sizes). */
export function regions(engine: Engine): { id: number; ptr: number; recordBytes: number; records: number; capacity: number }[] {
  const x = engine.x;
  const out = [];
  for (let i = 0, n = x.snapRegionCount(); i < n; i++) {
    out.push({
      id: x.snapRegionId(i), ptr: x.snapRegionPtr(i), recordBytes: x.snapRegionRecordSize(i),
      records: x.snapRegionRecords(i), capacity: x.snapRegionCapacity(i),
    });
  }
  return out;
}

/** One synchronous copy of the engine's state. Call between batches. */
export function capture(engine: Engine, wanAddr: number, clockMs: number): Capture {
  const t0 = performance.now();
  const mem = new Uint8Array(engine.memory.buffer);
  const sections: Section[] = regions(engine).map((r) => ({
    id: r.id, recordBytes: r.recordBytes, records: r.records, capacity: r.capacity,
    data: mem.slice(r.ptr, r.ptr + r.records * r.recordBytes),
  }));
  const header: SnapshotHeader = {
    formatVersion: FORMAT_VERSION, layoutVersion: engine.x.snapLayoutVersion(), maxFlows: engine.maxFlows,
    wanAddr: wanAddr >>> 0, clockMs, wallMs: Date.now(), buildId: engine.buildId,
  };
  return { header, sections, copyMs: performance.now() - t0 };
}

function chunksOf(c: Capture): Uint8Array[] {
  const chunks: Uint8Array[] = [encodeHeader(c.header, c.sections.length)];
  for (const s of c.sections) chunks.push(encodeSectionHeader(s), s.data);
  return chunks;
}

const CRC_SLICE = 1 << 20;
// Each write has its own temporary file: a background write still in flight
// when the clean stop writes the final snapshot must not share (and truncate,
// then keep writing into) the same inode, or the file renamed into place is
// corrupt and the next start refuses it.
let tmpSeq = 0;
const tmpOf = (path: string) => `${path}.tmp-${process.pid}-${++tmpSeq}`;
const yieldToLoop = () => new Promise<void>((r) => setImmediate(r));

/**
 * Writes a capture to `path` (temporary file + rename). The checksum is
 * computed a megabyte at a time with the event loop let through between
 * slices, so packets keep flowing while a large table is written.
 * Resolves with the bytes written.
 */
export async function writeCapture(path: string, c: Capture): Promise<number> {
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  const tmp = tmpOf(path);
  const fh = await open(tmp, 'w', 0o600);
  let crc = 0;
  let bytes = 0;
  try {
    for (const ch of chunksOf(c)) {
      for (let off = 0; off < ch.length; off += CRC_SLICE) {
        const part = ch.subarray(off, Math.min(ch.length, off + CRC_SLICE));
        crc = crc32(part, crc);
        await fh.write(part);
        bytes += part.length;
        if (ch.length > CRC_SLICE) await yieldToLoop();
      }
    }
    const tail = Buffer.alloc(4);
    tail.writeUInt32LE(crc, 0);
    await fh.write(tail);
    bytes += 4;
  } catch (err) {
    await fh.close().catch(() => undefined);
    await unlink(tmp).catch(() => undefined);
    throw err;
  }
  await fh.close();
  await rename(tmp, path);
  return bytes;
}

/** The same, synchronously (a clean stop: the loop is already stopped). */
export function writeCaptureSync(path: string, c: Capture): number {
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  const tmp = tmpOf(path);
  const fd = openSync(tmp, 'w', 0o600);
  let crc = 0;
  let bytes = 0;
  try {
    for (const ch of chunksOf(c)) { crc = crc32(ch, crc); writeSync(fd, ch); bytes += ch.length; }
    const tail = Buffer.alloc(4);
    tail.writeUInt32LE(crc, 0);
    writeSync(fd, tail);
    bytes += 4;
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, path);
  return bytes;
}

export interface Restored {
  savedAt: string;
  /** the engine clock the restore continued at (ms) */
  clockMs: number;
  ageMs: number;
  buildIdChanged: boolean;
  /** live entries per table after the restore (expired ones were dropped) */
  entries: Record<string, number>;
  /** records the file held per table (live, expired or free) */
  fileRecords: Record<string, number>;
  bytes: number;
  /** Option acct changed since the snapshot: what became of the flows' byte counters. */
  acctNote?: string;
}

/**
 * The flows' byte counters (option acct) are the one table that may be
 * missing or extra: a restart that switches acct keeps the flows, and says
 * what became of the counters (null when acct did not change).
 */
export function acctChange(engine: Engine, snap: Snapshot): string | null {
  const saved = snap.sections.some((s) => s.id === SNAP_FLOW_ACCT);
  if (saved === engine.acct) return null;
  return engine.acct
    ? "acct is '1' now, the snapshot has no byte counters: restored flows count bytes from 0"
    : "acct is '0' now: the snapshot's byte counters are dropped";
}

/**
 * Checks a decoded snapshot against this engine and the current WAN address;
 * throws SnapshotRefused with the reason. Returns the clock to continue at.
 */
export function checkHeader(engine: Engine, snap: Snapshot, wanAddr: number | null, wallNow = Date.now()): number {
  const x = engine.x;
  if (snap.layoutVersion !== x.snapLayoutVersion()) {
    throw new SnapshotRefused(`engine layout version ${snap.layoutVersion}, this engine has ${x.snapLayoutVersion()}`);
  }
  if (snap.maxFlows !== engine.maxFlows) throw new SnapshotRefused(`max_flows ${snap.maxFlows}, configured ${engine.maxFlows}`);
  const mine = regions(engine);
  // An acct switch adds or removes the byte counters' table (acctChange); any other difference is refused.
  const acctSwitched = acctChange(engine, snap) !== null;
  const expected = mine.length + (acctSwitched ? (engine.acct ? -1 : 1) : 0);
  if (snap.sections.length !== expected) throw new SnapshotRefused(`${snap.sections.length} tables, this engine has ${mine.length}`);
  for (const r of mine) {
    const s = snap.sections.find((t) => t.id === r.id);
    if (!s && r.id === SNAP_FLOW_ACCT) continue;
    if (!s) throw new SnapshotRefused(`no ${regionName(r.id)} table`);
    if (s.recordBytes !== r.recordBytes || s.capacity !== r.capacity) {
      throw new SnapshotRefused(`${regionName(r.id)}: ${s.capacity} records of ${s.recordBytes} bytes, this engine has ${r.capacity} of ${r.recordBytes}`);
    }
  }
  if (wanAddr === null) throw new SnapshotRefused(`the WAN device has no address (the snapshot's was ${rawToIp(snap.wanAddr)})`);
  if (snap.wanAddr !== wanAddr >>> 0) {
    throw new SnapshotRefused(`WAN address changed from ${rawToIp(snap.wanAddr)} to ${rawToIp(wanAddr)}: state flushed, as a WAN change does`);
  }
  // Engine times are u32 deciseconds compared as signed differences: keep
  // the continued clock well inside that.
  const LIMIT_MS = 2 ** 31 * 100 / 2;
  if (!Number.isFinite(snap.clockMs) || snap.clockMs < 0 || snap.clockMs > LIMIT_MS) throw new SnapshotRefused(`time base ${snap.clockMs} out of range`);
  // (8.64e15 ms is the last instant a Date can hold: beyond it savedAt cannot be written.)
  if (!Number.isFinite(snap.wallMs) || snap.wallMs <= 0 || snap.wallMs > 8.64e15) throw new SnapshotRefused(`wall clock ${snap.wallMs} out of range`);
  const elapsed = Math.max(0, wallNow - snap.wallMs); // a clock stepped back counts as no time
  const clock = snap.clockMs + elapsed;
  if (clock > LIMIT_MS) throw new SnapshotRefused(`snapshot too old (${Math.round(elapsed / 1000)} s)`);
  return clock;
}

/**
 * Loads a decoded snapshot into a freshly configured engine (config and WAN
 * address applied, batch loop not started). On refusal the engine is reset
 * to empty and the caller applies its config again.
 */
export function restoreInto(engine: Engine, snap: Snapshot, wanAddr: number | null): Restored {
  const clock = checkHeader(engine, snap, wanAddr);
  continueClock(clock);
  const x = engine.x;
  const mem = new Uint8Array(engine.memory.buffer);
  const stage = engine.slotBase;
  const stageBytes = engine.slotSize * engine.slotCount;
  const fail = (why: string): never => { throw new SnapshotRefused(why); };
  let rc = x.restoreBegin(clock);
  if (rc !== 0) fail(`engine refused to start a restore (${RESTORE_ERRORS[rc] ?? rc})`);
  // Tables in the engine's own order: it restores in dependency order.
  for (const r of regions(engine)) {
    const s = snap.sections.find((t) => t.id === r.id);
    if (!s) continue; // the byte counters of a snapshot taken with acct off (checkHeader)
    const per = Math.max(1, Math.floor(stageBytes / s.recordBytes));
    for (let done = 0; done < s.records; done += per) {
      const n = Math.min(per, s.records - done);
      mem.set(s.data.subarray(done * s.recordBytes, (done + n) * s.recordBytes), stage);
      rc = x.restoreRecords(s.id, stage, n);
      if (rc !== 0) fail(`${regionName(s.id)} record ${done}..${done + n - 1}: ${RESTORE_ERRORS[rc] ?? `error ${rc}`}`);
    }
  }
  rc = x.restoreEnd();
  if (rc !== 0) fail(`${RESTORE_ERRORS[rc] ?? `error ${rc}`}`);
  const c = engine.counters();
  return {
    savedAt: new Date(snap.wallMs).toISOString(), clockMs: clock, ageMs: Math.max(0, Date.now() - snap.wallMs),
    buildIdChanged: snap.buildId !== engine.buildId,
    entries: { flows: c.flowsActive ?? 0, bindings: c.bindingsActive ?? 0, esp: c.espActive ?? 0, ike: c.ikeActive ?? 0, calls: c.callsActive ?? 0 },
    fileRecords: Object.fromEntries(snap.sections.map((s) => [regionName(s.id), s.records])),
    bytes: snap.bytes,
    ...(acctChange(engine, snap) ? { acctNote: acctChange(engine, snap)! } : {}),
  };
}

/** Reads, decodes and restores `path`; null when there is no file. Throws SnapshotRefused. */
export function restoreFile(engine: Engine, path: string, wanAddr: number | null): Restored | null {
  let buf: Buffer;
  try {
    buf = readFileSync(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw new SnapshotRefused(`cannot read: ${(err as Error).message}`);
  }
  let snap: Snapshot;
  try {
    snap = decode(buf);
  } catch (err) {
    if (err instanceof SnapshotRefused) throw err;
    throw new SnapshotRefused(`unreadable: ${(err as Error).message}`);
  }
  return restoreInto(engine, snap, wanAddr);
}

export function discard(path: string): boolean {
  try { unlinkSync(path); return true; } catch { return false; }
}

/**
 * Removes the temporary files of earlier writes to `path` (`path.tmp-PID-N`)
 * that a killed process left half written: a SIGKILL, the OOM killer or a
 * power cut in the middle of a write. Only one vpnmasq can hold a TUN name,
 * so at start every such file of its snapshot is a leftover. Returns the
 * names removed.
 */
export function discardStaleTemporaries(path: string): string[] {
  const dir = dirname(path);
  const prefix = `${basename(path)}.tmp-`;
  let names: string[];
  try { names = readdirSync(dir); } catch { return []; }
  return names.filter((n) => n.startsWith(prefix) && /^\d+-\d+$/.test(n.slice(prefix.length)) && discard(join(dir, n)));
}
