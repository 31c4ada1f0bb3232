// Loads the Wasm engine into a fixed memory (initial = maximum) sized for
// the configured flow count, and gives the supervisor typed access to its
// exports and to the regions it shares: packet slots, lengths, verdicts,
// counters, the event ring and the flow table (for `conntrack`).

import * as loader from '@assemblyscript/loader';
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createHash, randomBytes } from 'node:crypto';
import * as A from './abi.js';
import {
  CAPH_HEAD, CAPH_LOST, CAPH_TAIL, CAPR_CAPLEN, CAPR_DATA, CAPR_LEN, CAPR_REASON, CAPR_SIDE, CAPR_TIME,
  CAPTURE_HEADER, CAPTURE_REC_SIZE, CAPTURE_SLOTS,
  C_DROP_BASE, COUNTERS, DROP_REASONS, FA_BYTES_IN, FA_BYTES_OUT, FLOW_ACCT_SIZE, EV_AH_REFUSED, EV_DROP, EV_ESP_BOUND, EV_FLOW_EXPIRED, EV_FLOW_NEW, EV_FLUSH,
  EV_IKE_COLLISION, FL_IN_USE, FL_REDIRECT,
  FL_REPLIED, F_ALIAS_PORT, F_EXPIRES, F_FLAGS, F_LAN_ADDR, F_LAN_PORT, F_PKTS_IN, F_PKTS_OUT, F_PROTO, F_REM_ADDR,
  F_REM_PORT, F_STATE, PROTO_NAMES, SETTINGS_FIELDS, TCP_STATES, rawToIp, type EngineExports, type EngineSettings,
} from './abi.js';

// The export signatures are generated from assembly/index.ts (abi.gen.ts).
export type { EngineExports } from './abi.js';

export interface EngineEvent {
  type: 'flow_new' | 'flow_expired' | 'drop' | 'flush' | 'esp_bound' | 'ah_refused' | 'ike_collision' | 'unknown';
  reason?: string;
  proto: number;
  side: number;
  lan: string; remote: string; wan: string;
  lanPort: number; remotePort: number; aliasPort: number;
  timeDs: number; extra: number;
}

export interface FlowEntry {
  proto: string; protoNum: number; state: string;
  lan: string; lanPort: number; remote: string; remotePort: number; wan: string; aliasPort: number;
  expiresInS: number; redirect: boolean; replied: boolean; packetsOut: number; packetsIn: number;
  /** With option acct only (flows, not VPN entries): IP bytes of packetsOut / packetsIn. */
  bytesOut?: number; bytesIn?: number;
  /**
   * NAT loopback (a LAN host to a forward through the WAN address): the
   * forwarded port it called on `wan`, and the address the server (`remote`)
   * sees it from (`via`, with `aliasPort`): the router's LAN address
   * (reflection_src internal) or the WAN address (external).
   */
  hairpin?: { wanPort: number; via: string; source: 'internal' | 'external' };
  /** ESP: SPIs as 0x-hex, outbound (LAN → server) and inbound (server → LAN; null while outstanding). */
  spiOut?: string; spiIn?: string | null;
  /** IKE: initiator and responder cookies as hex (responder null until seen). */
  icookie?: string; rcookie?: string | null;
  /** PPTP/GRE: the LAN host's Call ID, its alias on the WAN side, the remote's Call ID. */
  callIdLan?: number; callIdAlias?: number; callIdRemote?: number | null;
  /** Which record: table and index ('flow:12', 'esp:0', 'ike:3', 'call:1'), for deleteEntry. */
  id?: string;
}

/** A dropped packet the capture ring held (src/observe/capture.ts). */
export interface CapturedDrop {
  /** Wall-clock time, ms since the epoch (the engine's clock has 100 ms steps). */
  timeMs: number;
  reason: string;
  side: 'lan' | 'wan';
  /** The packet's length; `data` holds at most 2048 bytes of it. */
  length: number;
  /** The packet from its IP header, base64. */
  data: string;
}

/** What takeCaptured() moved out of the ring. */
export interface CaptureTake {
  drops: CapturedDrop[];
  /** records emptied from the ring without a copy (no room) */
  skipped: number;
  /** the engine's own count of records it had no ring room for, since it started */
  engineLost: number;
}

/**
 * What the main thread reads of an engine: the engine itself in tests and
 * benches, the data-path thread's client (src/datapath/thread.ts) in the
 * daemon. Every method returns a copy taken between two batches.
 */
export interface EngineView {
  readonly maxFlows: number;
  /** option acct: the flows carry bytesOut/bytesIn */
  readonly acct: boolean;
  readonly memoryBytes: number;
  counters(): Record<string, number>;
  drops(): Record<string, number>;
  flowActive(): number;
  flows(wanAddress: string, now?: number, limit?: number): FlowEntry[];
  vpnEntries(wanAddress: string): FlowEntry[];
  setCapture(on: boolean, reason: number): void;
  takeCaptured(room: number): CaptureTake;
}

/** The tables the engine's deleteEntry knows, by the number it takes (assembly/nat/delete.ts). */
export const ENTRY_TABLES = { flow: 0, esp: 1, ike: 2, call: 3 } as const;

// Indexed by ESP_FREE, ESP_OUTSTANDING, ESP_BOUND, ESP_SQUELCHED (conntrack calls a bound SA established).
const ESP_STATES = ['FREE', 'OUTSTANDING', 'ESTABLISHED', 'SQUELCHED'];
const hex32 = (v: number) => '0x' + v.toString(16).padStart(8, '0');

const EVENT_TYPES: Record<number, EngineEvent['type']> = {
  [EV_FLOW_NEW]: 'flow_new', [EV_FLOW_EXPIRED]: 'flow_expired', [EV_DROP]: 'drop', [EV_FLUSH]: 'flush',
  [EV_ESP_BOUND]: 'esp_bound', [EV_AH_REFUSED]: 'ah_refused', [EV_IKE_COLLISION]: 'ike_collision',
};

const here = dirname(fileURLToPath(import.meta.url));

export function wasmPath(debug = false): string {
  // src/engine or dist/engine → <root>/dist/engine.wasm
  return join(here, '..', '..', 'dist', debug ? 'engine.debug.wasm' : 'engine.wasm');
}

const compiled: Map<string, { mod: WebAssembly.Module; buildId: string }> = new Map();
function moduleFor(path: string): { mod: WebAssembly.Module; buildId: string } {
  let m = compiled.get(path);
  if (!m) {
    const bytes = readFileSync(path);
    m = { mod: new WebAssembly.Module(bytes), buildId: createHash('sha256').update(bytes).digest('hex') };
    compiled.set(path, m);
  }
  return m;
}

/**
 * The exports the batch loop calls once per batch, taken from the instance
 * itself: @assemblyscript/loader wraps every export in `(...args) =>
 * { setArgumentsLength(args.length); return fn(...args) }`, an array
 * built and spread per call (a slower call, and garbage wherever V8 has
 * not optimized the caller); these take no optional argument, so the
 * wrapper has nothing to do for them.
 */
export type HotExports = Pick<EngineExports, 'process' | 'releasedCount' | 'extraCount'>;

function instantiate(mod: WebAssembly.Module, memory: WebAssembly.Memory): { x: EngineExports; hot: HotExports } {
  const imports = {
    env: {
      memory,
      abort(_msg: number, _file: number, line: number, col: number) {
        throw new Error(`engine abort at ${line}:${col}`);
      },
    },
  };
  const r = loader.instantiateSync(mod, imports);
  const raw = r.instance.exports as unknown as HotExports;
  return { x: r.exports as unknown as EngineExports, hot: { process: raw.process, releasedCount: raw.releasedCount, extraCount: raw.extraCount } };
}

// The engine's clock: monotonic milliseconds (never 0). A restored snapshot
// moves it on to where the saved engine's clock would be now, so every time
// kept in the tables (expiry deadlines, last-seen stamps) stays valid as is.
let clockOffsetMs = 1000;
/** Monotonic milliseconds for the engine's clock (never 0). */
export function nowMs(): number { return performance.now() + clockOffsetMs; }
/** Continues the clock at `ms` now (never moves it back). */
export function continueClock(ms: number): void {
  const off = ms - performance.now();
  if (off > clockOffsetMs) clockOffsetMs = off;
}

/**
 * Transparent huge pages under the engine's memory: bytes asked for (the
 * 2 MiB-aligned middle of it) and the page size, or 0 and why not.
 */
export interface HugePages {
  advisedBytes: number;
  pageBytes: number;
  /** Where the advised range starts (to find it in /proc/self/smaps), 0 when nothing was advised. */
  address: number;
  /** Why nothing was advised ('transparent_hugepage [never]', 'madvise: EINVAL', ...), absent when it was. */
  off?: string;
}

export class Engine implements EngineView {
  readonly memory: WebAssembly.Memory;
  readonly x: EngineExports;
  /** process, releasedCount and extraCount unwrapped (HotExports): for the batch loop. */
  readonly hot: HotExports;
  /**
   * What adviseMemory (Engine.load) reported for this engine's memory:
   * huge pages asked for (src/datapath/hugepages.ts), or why not; null when
   * nobody asked (benches, tests, the fuzzer).
   */
  readonly hugePages: HugePages | null;
  readonly buffer: ArrayBuffer;
  readonly slotBase: number;
  /** Change with setVnet(): 256 × 2 KiB plain, or 64 × 64 KiB with virtio headers (TUN offloads). */
  slotSize: number;
  slotCount: number;
  /** Each slot's virtio_net_hdr at vnetBase + i × vnetStride (10 bytes), when vnet is on. */
  readonly vnetBase: number;
  readonly vnetStride: number;
  vnet = false;
  /** Option gro (assembly/nat/gro.ts): groups' links at groLinkBase (u16 per slot, 0 = end); with setGro(). */
  gro = false;
  readonly groLinkBase: number;
  readonly lenBase: number;
  readonly verdictBase: number;
  /** Held fragments the engine releases: slots (slotSize each), lengths, verdicts, how many. */
  readonly holdBase: number;
  readonly holdLenBase: number;
  readonly holdVerdictBase: number;
  readonly holdCap: number;
  /** Bytes between hold slots (plain slots, also with TUN offloads). */
  readonly holdSlotSize: number;
  /** With vnet: the (zero) virtio headers the held fragments are written behind, after the batch slots' headers. */
  holdVnetBase = 0;
  /** Extra output (USO super-packets to/from UDP 500 cut into datagrams): plain slots, lengths, verdicts; extraCount() used. */
  readonly extraBase: number;
  readonly extraLenBase: number;
  readonly extraVerdictBase: number;
  readonly extraCap: number;
  /** With vnet: their (zero) virtio headers, after the hold slots'. */
  extraVnetBase = 0;
  readonly maxFlows: number;
  /** Option acct: the flows have byte counters (fixed at load, like maxFlows). */
  readonly acct: boolean;
  readonly memoryBytes: number;
  /** The router's LAN addresses ('a.b.c.d/len') applyConfig gave the engine (NAT loopback's internal source). */
  routerLan: string[] = [];
  /** SHA-256 of the Wasm bytes (hex). */
  readonly buildId: string;
  private readonly u8: Uint8Array;
  private readonly dv: DataView;

  private constructor(memory: WebAssembly.Memory, x: EngineExports, hot: HotExports, hugePages: HugePages | null, maxFlows: number, bytes: number, buildId: string) {
    this.hot = hot;
    this.hugePages = hugePages;
    this.acct = x.acctEnabled() !== 0;
    this.memory = memory;
    this.x = x;
    this.buffer = memory.buffer;
    this.u8 = new Uint8Array(this.buffer);
    this.dv = new DataView(this.buffer);
    this.slotBase = x.slotsPtr();
    this.slotSize = x.slotSize();
    this.slotCount = x.slotCount();
    this.lenBase = x.lensPtr();
    this.vnetBase = x.vnetPtr();
    this.vnetStride = x.vnetStride();
    this.groLinkBase = x.groLinksPtr();
    this.verdictBase = x.verdictsPtr();
    this.holdBase = x.holdSlotsPtr();
    this.holdLenBase = x.holdLensPtr();
    this.holdVerdictBase = x.holdVerdictsPtr();
    this.holdCap = x.holdCap();
    this.holdSlotSize = x.holdSlotSize();
    this.extraBase = x.extraSlotsPtr();
    this.extraLenBase = x.extraLensPtr();
    this.extraVerdictBase = x.extraVerdictsPtr();
    this.extraCap = x.extraCap();
    this.maxFlows = maxFlows;
    this.memoryBytes = bytes;
    this.buildId = buildId;
  }

  /**
   * opts.adviseMemory is called with the new memory before anything touches
   * it (the instance's data, init's tables), so a huge-page advice covers
   * every first touch; its answer is kept as `hugePages`.
   */
  static load(opts: { maxFlows: number; acct?: boolean; debug?: boolean; seed?: number; adviseMemory?: (buf: ArrayBuffer) => HugePages }): Engine {
    const { mod, buildId } = moduleFor(wasmPath(opts.debug));
    // Ask a throwaway instance how much memory the layout needs, then make
    // exactly that, fixed: initial == maximum, so it can never grow or move.
    const probe = instantiate(mod, new WebAssembly.Memory({ initial: 1, maximum: 1 })).x;
    const acct = opts.acct ? 1 : 0;
    const bytes = probe.memoryBytes(opts.maxFlows, acct);
    const pages = Math.ceil(bytes / 65536);
    if (pages > 65536) throw new Error(`max_flows ${opts.maxFlows} needs ${bytes} bytes, beyond 4 GiB of Wasm memory`);
    const memory = new WebAssembly.Memory({ initial: pages, maximum: pages });
    const hugePages = opts.adviseMemory?.(memory.buffer) ?? null;
    const { x, hot } = instantiate(mod, memory);
    const seed = opts.seed ?? randomBytes(4).readUInt32LE(0);
    if (x.init(opts.maxFlows, seed, acct) !== 0) throw new Error('engine memory too small for its layout');
    return new Engine(memory, x, hot, hugePages, opts.maxFlows, pages * 65536, buildId);
  }

  /** Back to an empty engine (new hash seed): tables, counters, settings all cleared; apply the config again. */
  reset(seed = randomBytes(4).readUInt32LE(0)): void {
    this.x.reset(seed);
  }

  /**
   * The TUNs carry a virtio_net_hdr before each packet (IFF_VNET_HDR with
   * offloads): GSO-sized slots, and the engine checks each header. Between
   * batches only: the slot geometry changes.
   */
  setVnet(on: boolean): void {
    this.x.setVnet(on ? 1 : 0);
    this.vnet = on;
    this.slotSize = this.x.slotSize();
    this.slotCount = this.x.slotCount();
    // The header region has room for 256 slots; the batch uses slotCount (64) of them and
    // never writes the rest, which setVnet zeroed: the hold and extra slots' headers live there.
    this.holdVnetBase = this.vnetBase + this.slotCount * this.vnetStride;
    this.extraVnetBase = this.holdVnetBase + this.holdCap * this.vnetStride;
    if (on && this.slotCount + this.holdCap + this.extraCap > 256) throw new Error('engine: no room for the hold and extra slots\' virtio headers');
  }

  /**
   * Option gro: same-flow UDP datagrams of a batch leave as one UDP GSO write
   * (members VERDICT_FOLLOW, linked from the slot before them). Only with
   * vnet on, and only for TUNs that took USO4 (the caller's choice).
   */
  setGro(on: boolean): void {
    this.x.setGro(on ? 1 : 0);
    this.gro = on;
  }
  /** Slot i's link to the next datagram of its UDP GSO write (0: none). */
  groLink(i: number): number {
    return this.dv.getUint16(this.groLinkBase + 2 * i, true);
  }

  /** Slot i's virtio_net_hdr fields (tests). */
  setVnetHdr(i: number, h: { flags?: number; gsoType?: number; hdrLen?: number; gsoSize?: number; csumStart?: number; csumOffset?: number }): void {
    const b = this.vnetBase + i * this.vnetStride;
    this.dv.setUint8(b, h.flags ?? 0);
    this.dv.setUint8(b + 1, h.gsoType ?? 0);
    this.dv.setUint16(b + 2, h.hdrLen ?? 0, true);
    this.dv.setUint16(b + 4, h.gsoSize ?? 0, true);
    this.dv.setUint16(b + 6, h.csumStart ?? 0, true);
    this.dv.setUint16(b + 8, h.csumOffset ?? 0, true);
  }
  vnetHdr(i: number): Uint8Array {
    const b = this.vnetBase + i * this.vnetStride;
    return this.u8.slice(b, b + 10);
  }

  process(count: number, side: number, now = nowMs()): number {
    return this.hot.process(count, side, now);
  }

  /**
   * Hands the engine every `config vpnmasq` option it uses, as one record
   * (keys are the UCI option names; seconds, counts, flags 0/1). The engine
   * takes all of it or none: throws on an unknown or missing key, a value
   * that is not a non-negative integer, or a field the engine refuses.
   */
  applySettings(s: EngineSettings): void {
    const fields = SETTINGS_FIELDS as Record<string, number>;
    for (const k of Object.keys(s)) if (!(k in fields)) throw new Error(`engine settings: unknown option '${k}'`);
    const base = this.x.settingsPtr();
    for (const [k, off] of Object.entries(fields)) {
      const v = (s as Record<string, number>)[k];
      if (v === undefined) throw new Error(`engine settings: option '${k}' missing`);
      if (!Number.isInteger(v) || v < 0 || v > 0xffffffff) throw new Error(`engine settings: option ${k} = ${v} is not a count`);
      this.dv.setUint32(base + off, v, true);
    }
    const r = this.x.applySettings();
    if (r !== 0) {
      const name = Object.entries(fields).find(([, off]) => off === r - 1)?.[0] ?? `field at ${r - 1}`;
      const range = name === 'masq_port_lo' || name === 'masq_port_hi' ? ` (masq_ports ${s.masq_port_lo}-${s.masq_port_hi})` : '';
      throw new Error(`engine settings: option ${name} = ${(s as Record<string, number>)[name]} refused by the engine${range}`);
    }
  }

  // ---- slots (tests and benches; the TUN addon uses the raw offsets) ----
  slot(i: number): Uint8Array {
    return this.u8.subarray(this.slotBase + i * this.slotSize, this.slotBase + (i + 1) * this.slotSize);
  }
  setPacket(i: number, pkt: Uint8Array): void {
    this.u8.set(pkt, this.slotBase + i * this.slotSize);
    this.dv.setUint32(this.lenBase + 4 * i, pkt.length, true);
  }
  packet(i: number): Uint8Array {
    const len = this.dv.getUint32(this.lenBase + 4 * i, true);
    return this.u8.slice(this.slotBase + i * this.slotSize, this.slotBase + i * this.slotSize + len);
  }
  verdict(i: number): number { return this.u8[this.verdictBase + i]; }
  /**
   * What the TUN addon writes for slot i (tests): its packet, then with
   * option gro the UDP payload (from byte 28) of each datagram it links to.
   */
  gathered(i: number): Uint8Array {
    const parts = [this.packet(i)];
    for (let j = this.gro ? this.groLink(i) : 0; j !== 0; j = this.groLink(j)) parts.push(this.packet(j).subarray(28));
    return parts.length === 1 ? parts[0]! : Uint8Array.from(Buffer.concat(parts));
  }

  /** Copies of the held fragments the last process() call released, in hold-slot order. */
  released(): Uint8Array[] {
    if (this.x.releasedCount() === 0) return [];
    const out: Uint8Array[] = [];
    for (let i = 0; i < this.holdCap; i++) {
      if (this.u8[this.holdVerdictBase + i] !== A.VERDICT_PASS) continue;
      const start = this.holdBase + i * this.holdSlotSize;
      out.push(this.u8.slice(start, start + this.dv.getUint32(this.holdLenBase + 4 * i, true)));
    }
    return out;
  }

  /** Copies of the extra packets the last process() call passed (USO datagrams cut in software), in order. */
  extras(): Uint8Array[] {
    const out: Uint8Array[] = [];
    for (let i = 0, n = this.x.extraCount(); i < n; i++) {
      if (this.u8[this.extraVerdictBase + i] !== A.VERDICT_PASS) continue;
      const start = this.extraBase + i * this.holdSlotSize;
      out.push(this.u8.slice(start, start + this.dv.getUint32(this.extraLenBase + 4 * i, true)));
    }
    return out;
  }

  // ---- counters --------------------------------------------------------
  counter(i: number): number {
    return Number(this.dv.getBigUint64(this.x.countersPtr() + i * 8, true));
  }
  counters(): Record<string, number> {
    const out: Record<string, number> = {};
    for (const [k, v] of Object.entries(COUNTERS)) out[k] = this.counter(v);
    return out;
  }
  drops(): Record<string, number> {
    const out: Record<string, number> = {};
    for (let r = 1; r < DROP_REASONS.length; r++) {
      const n = this.counter(C_DROP_BASE + r);
      if (n) out[DROP_REASONS[r]] = n;
    }
    return out;
  }
  dropCount(reason: string): number {
    const i = DROP_REASONS.indexOf(reason as (typeof DROP_REASONS)[number]);
    if (i < 0) throw new Error(`unknown drop reason ${reason}`);
    return this.counter(C_DROP_BASE + i);
  }

  flowActive(): number { return this.x.flowActive(); }

  // ---- drop capture ring (assembly/nat/capture.ts) ------------------------
  /** reason 0: every drop reason. */
  setCapture(on: boolean, reason: number): void { this.x.setCapture(on ? 1 : 0, reason); }

  /** Empties the capture ring: copies of at most `room` records, the rest only counted. */
  takeCaptured(room: number): CaptureTake {
    const base = this.x.capturePtr();
    const dv = this.dv, u8 = this.u8;
    const head = dv.getUint32(base + CAPH_HEAD, true);
    let tail = dv.getUint32(base + CAPH_TAIL, true);
    // engine clock (ms) → wall clock
    const offset = Date.now() - nowMs();
    const drops: CapturedDrop[] = [];
    let skipped = 0;
    while (tail !== head) {
      const r = base + CAPTURE_HEADER + (tail & (CAPTURE_SLOTS - 1)) * CAPTURE_REC_SIZE;
      if (drops.length < room) {
        const caplen = dv.getUint16(r + CAPR_CAPLEN, true);
        drops.push({
          timeMs: Math.round(dv.getUint32(r + CAPR_TIME, true) * 100 + offset),
          reason: DROP_REASONS[u8[r + CAPR_REASON]!] ?? String(u8[r + CAPR_REASON]),
          side: u8[r + CAPR_SIDE] ? 'wan' : 'lan',
          length: dv.getUint32(r + CAPR_LEN, true),
          data: Buffer.from(u8.subarray(r + CAPR_DATA, r + CAPR_DATA + caplen)).toString('base64'),
        });
      } else {
        skipped++;
      }
      tail = (tail + 1) >>> 0;
    }
    dv.setUint32(base + CAPH_TAIL, tail, true);
    return { drops, skipped, engineLost: dv.getUint32(base + CAPH_LOST, true) };
  }

  // ---- events ----------------------------------------------------------
  drainEvents(max = Infinity): EngineEvent[] {
    const base = this.x.eventsPtr();
    const cap = this.x.eventCap();
    const size = this.x.eventSize();
    let head = this.dv.getUint32(base, true);
    let tail = this.dv.getUint32(base + 4, true);
    const out: EngineEvent[] = [];
    while (tail !== head && out.length < max) {
      const e = base + A.EVENT_HEADER + (tail & (cap - 1)) * size;
      const t = this.u8[e + A.EVT_TYPE];
      const reason = this.u8[e + A.EVT_REASON];
      out.push({
        type: EVENT_TYPES[t] ?? 'unknown',
        reason: t === EV_DROP || t === EV_AH_REFUSED ? DROP_REASONS[reason] ?? String(reason) : undefined,
        proto: this.u8[e + A.EVT_PROTO], side: this.u8[e + A.EVT_SIDE],
        lan: rawToIp(this.dv.getUint32(e + A.EVT_LAN_ADDR, true)), remote: rawToIp(this.dv.getUint32(e + A.EVT_REM_ADDR, true)),
        wan: rawToIp(this.dv.getUint32(e + A.EVT_WAN_ADDR, true)),
        lanPort: this.dv.getUint16(e + A.EVT_LAN_PORT, true), remotePort: this.dv.getUint16(e + A.EVT_REM_PORT, true),
        aliasPort: this.dv.getUint16(e + A.EVT_ALIAS_PORT, true), timeDs: this.dv.getUint32(e + A.EVT_TIME, true),
        extra: this.dv.getUint32(e + A.EVT_EXTRA, true),
      });
      tail = (tail + 1) >>> 0;
    }
    this.dv.setUint32(base + 4, tail, true);
    return out;
  }

  // ---- flow table --------------------------------------------------------
  /** The flow table (at most `limit` entries, in table order). */
  flows(wanAddress: string, now = nowMs(), limit = Infinity): FlowEntry[] {
    const base = this.x.flowsPtr();
    const size = this.x.flowSize();
    const n = this.x.flowHighWater();
    const nowDs = Math.floor(now / 100);
    const acct = this.acct ? this.x.flowAcctPtr() : 0;
    const out: FlowEntry[] = [];
    for (let f = 0; f < n && out.length < limit; f++) {
      const r = base + f * size;
      const flags = this.dv.getUint16(r + F_FLAGS, true);
      if (!(flags & FL_IN_USE)) continue;
      const protoNum = this.u8[r + F_PROTO];
      const st = this.u8[r + F_STATE];
      out.push({
        id: `flow:${f}`,
        proto: PROTO_NAMES[protoNum] ?? String(protoNum), protoNum,
        state: protoNum === A.PROTO_TCP ? (TCP_STATES[st] ?? String(st)) : st ? 'REPLIED' : 'UNREPLIED',
        lan: rawToIp(this.dv.getUint32(r + F_LAN_ADDR, true)), lanPort: this.dv.getUint16(r + F_LAN_PORT, true),
        remote: rawToIp(this.dv.getUint32(r + F_REM_ADDR, true)), remotePort: this.dv.getUint16(r + F_REM_PORT, true),
        wan: wanAddress, aliasPort: this.dv.getUint16(r + F_ALIAS_PORT, true),
        expiresInS: Math.max(0, ((this.dv.getUint32(r + F_EXPIRES, true) - nowDs) | 0) / 10),
        redirect: !!(flags & FL_REDIRECT), replied: !!(flags & FL_REPLIED),
        packetsOut: this.dv.getUint32(r + F_PKTS_OUT, true), packetsIn: this.dv.getUint32(r + F_PKTS_IN, true),
        ...(acct ? {
          bytesOut: Number(this.dv.getBigUint64(acct + f * FLOW_ACCT_SIZE + FA_BYTES_OUT, true)),
          bytesIn: Number(this.dv.getBigUint64(acct + f * FLOW_ACCT_SIZE + FA_BYTES_IN, true)),
        } : {}),
        ...(flags & A.FL_HAIRPIN ? { hairpin: this.hairpinOf(r, wanAddress) } : {}),
      });
    }
    return out;
  }

  /** A hairpin flow's forwarded port and the source its server sees (as assembly/nat/hairpin.ts picks it). */
  private hairpinOf(r: number, wanAddress: string): NonNullable<FlowEntry['hairpin']> {
    const wanPort = this.dv.getUint16(r + A.F_HAIRPIN_PORT, true);
    if (this.u8[r + A.F_HAIRPIN_SRC] === A.REFLECT_EXTERNAL) return { wanPort, via: wanAddress, source: 'external' };
    const server = this.dv.getUint32(r + F_REM_ADDR, true);
    const own = this.routerLan.map((c) => {
      const [a, len] = c.split('/');
      return { raw: A.ipToRaw(a!), mask: A.maskRaw(Number(len ?? 32)) };
    });
    const v = own.find((o) => ((o.raw & o.mask) >>> 0) === ((server & o.mask) >>> 0)) ?? own[0];
    return { wanPort, via: v ? A.rawToIp(v.raw) : '0.0.0.0', source: 'internal' };
  }

  /** ESP associations, IKE sessions and PPTP calls, as conntrack entries. */
  vpnEntries(wanAddress: string, now = nowMs()): FlowEntry[] {
    const nowDs = Math.floor(now / 100);
    const left = (exp: number) => Math.max(0, ((exp - nowDs) | 0) / 10);
    const be32 = (o: number) => this.dv.getUint32(o, false);
    const out: FlowEntry[] = [];
    const base = { wan: wanAddress, redirect: false, lanPort: 0, remotePort: 0, aliasPort: 0 };
    const u32 = (o: number) => this.dv.getUint32(o, true);
    const u16 = (o: number) => this.dv.getUint16(o, true);
    for (let r = 0, p = this.x.espPtr(); r < this.x.espCount(); r++, p += A.ESP_SIZE) {
      const st = this.u8[p + A.ESP_STATE];
      if (st === A.ESP_FREE) continue;
      const spiIn = be32(p + A.ESP_SPI_IN);
      const pending = st === A.ESP_OUTSTANDING || st === A.ESP_SQUELCHED;
      out.push({
        id: `esp:${r}`,
        ...base, proto: 'esp', protoNum: A.PROTO_ESP, state: ESP_STATES[st] ?? String(st),
        lan: rawToIp(u32(p + A.ESP_LAN_ADDR)), remote: rawToIp(u32(p + A.ESP_REM_ADDR)),
        expiresInS: left(pending ? Math.min(u32(p + A.ESP_EXPIRES), u32(p + A.ESP_DEADLINE)) : u32(p + A.ESP_EXPIRES)),
        replied: spiIn !== 0, packetsOut: u32(p + A.ESP_PKTS), packetsIn: 0,
        spiOut: hex32(be32(p + A.ESP_SPI_OUT)), spiIn: spiIn ? hex32(spiIn) : null,
      });
    }
    for (let r = 0, p = this.x.ikePtr(); r < this.x.ikeCount(); r++, p += A.IKE_SIZE) {
      if (!this.u8[p + A.IKE_IN_USE]) continue;
      const cookie = (o: number) => Buffer.from(this.u8.subarray(o, o + 8)).toString('hex');
      const rc = cookie(p + A.IKE_RCOOKIE);
      out.push({
        id: `ike:${r}`,
        ...base, proto: 'udp', protoNum: A.PROTO_UDP, state: 'IKE', lanPort: 500, aliasPort: 500,
        remotePort: u16(p + A.IKE_REM_PORT),
        lan: rawToIp(u32(p + A.IKE_LAN_ADDR)), remote: rawToIp(u32(p + A.IKE_REM_ADDR)),
        expiresInS: left(u32(p + A.IKE_EXPIRES)), replied: rc !== '0000000000000000',
        packetsOut: u32(p + A.IKE_PKTS_OUT), packetsIn: u32(p + A.IKE_PKTS_IN),
        icookie: cookie(p + A.IKE_ICOOKIE), rcookie: rc === '0000000000000000' ? null : rc,
      });
    }
    for (let r = 0, p = this.x.callPtr(); r < this.x.callCount(); r++, p += A.CALL_SIZE) {
      if (!this.u8[p + A.CALL_IN_USE]) continue;
      const flags = u16(p + A.CALL_FLAGS);
      out.push({
        id: `call:${r}`,
        ...base, proto: 'gre', protoNum: A.PROTO_GRE, state: flags & A.CF_DISCONNECTED ? 'DISCONNECTED' : 'CALL',
        lan: rawToIp(u32(p + A.CALL_LAN_ADDR)), remote: rawToIp(u32(p + A.CALL_REM_ADDR)),
        expiresInS: left(u32(p + A.CALL_EXPIRES)), replied: !!(flags & A.CF_REMOTE_KNOWN),
        packetsOut: u32(p + A.CALL_PKTS_OUT), packetsIn: u32(p + A.CALL_PKTS_IN),
        callIdLan: u16(p + A.CALL_ID_LAN), callIdAlias: u16(p + A.CALL_ID_ALIAS),
        callIdRemote: flags & A.CF_REMOTE_KNOWN ? u16(p + A.CALL_ID_REMOTE) : null,
      });
    }
    return out;
  }

  /** Frees the record an entry of flows()/vpnEntries() names (conntrack -D); false when it is gone. */
  deleteEntry(e: FlowEntry): boolean {
    const m = /^(flow|esp|ike|call):(\d+)$/.exec(e.id ?? '');
    if (!m) return false;
    return this.x.deleteEntry(ENTRY_TABLES[m[1] as keyof typeof ENTRY_TABLES], Number(m[2])) !== 0;
  }

  /** Table bytes per flow: records plus both hash indexes, plus the byte counters with option acct. */
  bytesPerFlow(): number {
    return this.x.flowSize() + (this.acct ? FLOW_ACCT_SIZE : 0) + (2 * 4 * this.x.hashSize()) / this.maxFlows;
  }
}
