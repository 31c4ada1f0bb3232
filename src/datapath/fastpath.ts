// The flow fast path's userland half (option flow_offload): on the
// data-path thread, it takes the flows the engine offers after a batch
// (assembly/nat/fastpath.ts says which and why), writes each as two
// entries of the kernel's flow table (src/tun/fastpath.ts: one per
// direction, the rewrite the engine would have done), and every SYNC_MS
// asks the engine about each flow it holds: the kernel's packet and byte
// counts go to the flow (timeouts, conntrack listings, acct), and a flow
// the engine no longer vouches for (closed, deleted, reused, a new WAN
// address, a reload that turned the option off) leaves the kernel's table.
// A bound ESP association (IP 50, by SPI) is held the same way: two
// entries, its outbound and its inbound SPI, neither rewritten; and a
// PPTP call's GRE by Call ID (the inbound alias written back).
//
// Work here is per flow (an offer, a sync round), never per packet.

import { readFileSync } from 'node:fs';
import * as A from '../engine/abi.js';
import { rawToIp } from '../engine/abi.js';
import {
  FAST_PATH_KEY_BYTES, FAST_PATH_VALUE_BYTES, FastPath as KernelFastPath, fastPathCounts, fastPathEspKey, fastPathGreKey, fastPathKey, fastPathValue,
  type FastPathBatch, type FastPathCounts,
} from '../tun/fastpath.js';
import type { Engine } from '../engine/engine.js';

/** The kernel's flow table (src/tun/fastpath.ts opens it): 16-byte keys, 48-byte values. */
export interface FastPathKernel {
  put(key: Buffer, value: Buffer): void;
  remove(key: Buffer): boolean;
  /** The next entries of a walk of the whole table (`first` starts one; `token`, 8 bytes, carries its place): src/tun/fastpath.ts. */
  readBatch(token: Buffer, first: boolean, keys: Buffer, values: Buffer): FastPathBatch;
  /** forwarded, out of window, passed up (SYN/FIN/RST), passed up (other), … */
  stats(): number[];
  /** Detaches the program (closes its links) and frees the table. */
  close(): void;
}

const TCP = 6, ICMP = 1;
/** A ring entry with this bit is an ESP association's record, with this one a PPTP call's (assembly/nat/fastpath.ts). */
const RING_ESP = 0x80000000, RING_CALL = 0x40000000;
/** Held's map keys for ESP record r and call record r: apart from every flow index and each other. */
const ESP_ID = 2 ** 32, CALL_ID = 2 ** 33;

/**
 * A key (src/tun/fastpath.ts lays it out): addresses raw (the engine's
 * network-order words), ports host order; for an ICMP echo the identifier
 * is `sport` and `dport` is 0.
 */
export function keyOf(saddr: number, daddr: number, sport: number, dport: number, proto = TCP): Buffer {
  return fastPathKey({ saddr: rawToIp(saddr), daddr: rawToIp(daddr), sport, dport, proto });
}

/** What the program makes of a packet with that key; `end`/`endKnown` (TCP): the sender's sequence end so far. */
export function valueOf(saddr: number, daddr: number, sport: number, dport: number, inIfindex: number, outIfindex: number,
  win: number, end: number, endKnown: boolean, echoReply = false): Buffer {
  return fastPathValue({
    newSaddr: rawToIp(saddr), newDaddr: rawToIp(daddr), newSport: sport, newDport: dport, inIfindex, outIfindex, win, end, endKnown, echoReply,
  });
}

/** How often the thread reconciles its flows with the engine (credits, withdrawals), and how many a round. */
export const SYNC_MS = 500;
export const SYNC_SLICE = 2048;
/** Entries one system call of a sync reads (the kernel hands over whole buckets: a few at most each). */
export const SYNC_BATCH = 1024;

/** conntrack's window floor (masq.ts WIN_LOG_FLOOR): a FIN or RST within 64 KiB of the sender's end is in window. */
const WIN_LOG_FLOOR = 16;
const END_KNOWN = 0x20;
const WIN_LOG_MASK = 0x1f;

/** The kernel's sequence ends at the last read; bit 0 / 1 of `known`: the LAN / WAN side's is known. */
interface Ends { endOut: number; endIn: number; known: number }
const NO_ENDS: Ends = { endOut: 0, endIn: 0, known: 0 };

/**
 * The engine's side of one held flow, ESP association or PPTP call: its
 * record and tuple bound into the two engine calls the sync makes.
 */
interface Judge {
  /** the kernel's packets and bytes since the last read, out (LAN → WAN) and in */
  credit(pktsOut: number, pktsIn: number, bytesOut: number, bytesIn: number): void;
  /** 1: keep it; 0: withdraw it (the engine unmarks it). `wan` 0 refuses an offer. */
  check(wan: number, ends: Ends): number;
}

interface Held extends Ends {
  /** the map key: the flow index, or ESP_ID / CALL_ID + the record */
  id: number;
  lanA: number;
  /** null: no entry that way (a forward's ESP SA is one direction) */
  outKey: Buffer | null; inKey: Buffer | null;
  judge: Judge;
  /** the kernel's counts at the last sync (out: LAN → WAN) */
  pktsOut: number; pktsIn: number; bytesOut: number; bytesIn: number;
  /** the walk (`FastPath.walk`) that last met an entry of it; bit 0 / 1: its out / in entry met in that walk, SETTLED: credited and checked */
  walk: number; met: number;
  /** the counts met in that walk, not yet credited */
  dPktsOut: number; dPktsIn: number; dBytesOut: number; dBytesIn: number;
}

const OUT_MET = 1, IN_MET = 2, SETTLED = 4;

/** OUT_MET | IN_MET: the entries a held flow has, each met once in a walk before it is settled. */
const entriesOf = (h: Held): number => (h.outKey ? OUT_MET : 0) | (h.inKey ? IN_MET : 0);

/** An entry's key as a Map key (its 16 bytes, one character each). */
const keyId = (b: Buffer, off = 0): string => b.toString('latin1', off, off + FAST_PATH_KEY_BYTES);

export interface FastPathStatus {
  /** flows in the kernel's table now */
  flows: number;
  /** flows handed over, flows withdrawn, offers turned away by the full table or by the host's share of it */
  offloaded: number; withdrawn: number; full: number; hostCapped: number; capacity: number;
  /** the program's counters: forwarded, FIN/RST dropped out of window, passed up (SYN/FIN/RST), passed up (other) */
  forwarded: number; outOfWindow: number; passedFlags: number; passedOther: number;
}

export class FastPath {
  private readonly held = new Map<number, Held>();
  /** Each held entry's key (keyId) to its flow, and which direction it is. */
  private readonly byKey = new Map<string, { h: Held; out: boolean }>();
  private offloaded = 0;
  private withdrawn = 0;
  private full = 0;
  private hostCapped = 0;
  /** Flows held per LAN host: one host may hold a quarter of the table, so it cannot keep every other host's flows out. */
  private readonly perHost = new Map<number, number>();
  private readonly hostCap: number;
  private wanRaw = 0;
  /**
   * The sync walks the kernel's table in batches (one system call each: a
   * lookup per entry cost 0.45 s for a full table of 131,072 entries,
   * holding the TUN path's packets up): the walk's number, its place, and
   * whether the next batch starts a new one.
   */
  private walk = 0;
  private readonly walkToken = Buffer.alloc(8);
  private walkFirst = true;
  private readonly batchKeys = Buffer.alloc(SYNC_BATCH * FAST_PATH_KEY_BYTES);
  private readonly batchValues = Buffer.alloc(SYNC_BATCH * FAST_PATH_VALUE_BYTES);
  private readonly counts: FastPathCounts = { packets: 0, bytes: 0, end: 0, endKnown: false };

  constructor(private readonly engine: Engine, private readonly kernel: FastPathKernel,
    private readonly lanIfindex: number, private readonly wanIfindex: number, private readonly capacity: number) {
    this.hostCap = Math.max(1, Math.floor(capacity / 4));
  }

  setWan(raw: number): void {
    this.wanRaw = raw;
  }

  /** After a batch: hands the engine's offers to the kernel (one engine call when there are none). */
  take(): void {
    const x = this.engine.x;
    const n = x.fastPathPending();
    if (n === 0) return;
    const dv = new DataView(this.engine.buffer);
    const ring = x.fastPathRing();
    const fs: number[] = [];
    for (let i = 0; i < n; i++) fs.push(dv.getUint32(ring + 4 * i, true));
    x.fastPathTaken();
    for (const f of fs) {
      if ((f & RING_ESP) !== 0) this.offloadEsp(dv, (f & ~RING_ESP) >>> 0);
      else if ((f & RING_CALL) !== 0) this.offloadCall(dv, (f & ~RING_CALL) >>> 0);
      else this.offload(dv, f);
    }
  }

  /**
   * An ESP association (vpn/esp.ts espOffer): the host's outbound SPI
   * toward its server leaves from the WAN address; the server's inbound SPI
   * to the WAN address goes to the host. Neither SPI is rewritten. A
   * forward's SA (a server behind the router) has one SPI, so one entry.
   */
  private offloadEsp(dv: DataView, r: number): void {
    const e = this.engine.x.espPtr() + r * A.ESP_SIZE;
    const lanA = dv.getUint32(e + A.ESP_LAN_ADDR, true);
    const remA = dv.getUint32(e + A.ESP_REM_ADDR, true);
    // The engine's SPIs (raw: the packet's bytes read little-endian), and as numbers: the keys' and values' two "ports".
    const spiOut = dv.getUint32(e + A.ESP_SPI_OUT, true), spiIn = dv.getUint32(e + A.ESP_SPI_IN, true);
    const spiOutN = dv.getUint32(e + A.ESP_SPI_OUT, false), spiInN = dv.getUint32(e + A.ESP_SPI_IN, false);
    const wan = this.wanRaw;
    const x = this.engine.x;
    this.hold(ESP_ID + r, lanA, {
      credit: (po, pi, bo, bi) => x.fastPathCreditEsp(r, lanA, remA, spiOut, spiIn, po, pi, bo, bi),
      check: (w) => x.fastPathCheckEsp(r, lanA, remA, spiOut, spiIn, w),
    },
    spiOut === 0 ? null : fastPathEspKey(rawToIp(lanA), rawToIp(remA), spiOutN),
    spiIn === 0 ? null : fastPathEspKey(rawToIp(remA), rawToIp(wan), spiInN),
    // The ports are unread for ESP (the SPI is never rewritten): the key's halves, as src/tun/fastpath.ts asks.
    valueOf(wan, remA, spiOutN >>> 16, spiOutN & 0xffff, this.lanIfindex, this.wanIfindex, 0, 0, false),
    valueOf(remA, lanA, spiInN >>> 16, spiInN & 0xffff, this.wanIfindex, this.lanIfindex, 0, 0, false));
  }

  /**
   * A PPTP call's GRE (vpn/pptp.ts callOffer): the host's packets to the
   * server carry the server's Call ID and leave from the WAN address
   * unchanged; the server's carry the call's alias, written back to the
   * host's own Call ID.
   */
  private offloadCall(dv: DataView, r: number): void {
    const c = this.engine.x.callPtr() + r * A.CALL_SIZE;
    const lanA = dv.getUint32(c + A.CALL_LAN_ADDR, true);
    const remA = dv.getUint32(c + A.CALL_REM_ADDR, true);
    const callLan = dv.getUint16(c + A.CALL_ID_LAN, true);
    const alias = dv.getUint16(c + A.CALL_ID_ALIAS, true);
    const callRemote = dv.getUint16(c + A.CALL_ID_REMOTE, true);
    const wan = this.wanRaw;
    const x = this.engine.x;
    this.hold(CALL_ID + r, lanA, {
      credit: (po, pi, bo, bi) => x.fastPathCreditCall(r, lanA, remA, callLan, alias, callRemote, po, pi, bo, bi),
      check: (w) => x.fastPathCheckCall(r, lanA, remA, callLan, alias, callRemote, w),
    }, fastPathGreKey(rawToIp(lanA), rawToIp(remA), callRemote), fastPathGreKey(rawToIp(remA), rawToIp(wan), alias),
    valueOf(wan, remA, 0, callRemote, this.lanIfindex, this.wanIfindex, 0, 0, false),
    valueOf(remA, lanA, 0, callLan, this.wanIfindex, this.lanIfindex, 0, 0, false));
  }

  private offload(dv: DataView, f: number): void {
    const r = this.engine.x.flowsPtr() + f * A.FLOW_SIZE;
    const proto = dv.getUint8(r + A.F_PROTO);
    const lanA = dv.getUint32(r + A.F_LAN_ADDR, true);
    const remA = dv.getUint32(r + A.F_REM_ADDR, true);
    const lanP = dv.getUint16(r + A.F_LAN_PORT, true);
    const remP = dv.getUint16(r + A.F_REM_PORT, true);
    const aliasP = dv.getUint16(r + A.F_ALIAS_PORT, true);
    const wan = this.wanRaw;
    const x = this.engine.x;
    const judge: Judge = {
      credit: (po, pi, bo, bi) => x.fastPathCredit(f, proto, lanA, lanP, remA, remP, aliasP, po, pi, bo, bi),
      check: (w, e) => x.fastPathCheck(f, proto, lanA, lanP, remA, remP, aliasP, w, e.endOut, e.endIn, e.known),
    };
    if (proto === ICMP) {
      // An echo: the identifier is the "port" (remP 0); requests go out, replies come in.
      this.hold(f, lanA, judge, keyOf(lanA, remA, lanP, 0, ICMP), keyOf(remA, wan, aliasP, 0, ICMP),
        valueOf(wan, remA, aliasP, 0, this.lanIfindex, this.wanIfindex, 0, 0, false),
        valueOf(remA, lanA, lanP, 0, this.wanIfindex, this.lanIfindex, 0, 0, false, true));
      return;
    }
    const tcpOut = dv.getUint8(r + A.F_TCP_OUT);
    const tcpIn = dv.getUint8(r + A.F_TCP_IN);
    const tcp = proto === TCP;
    // Each sender's FIN or RST is judged against its own end and the window its receiver advertised.
    const win = (info: number) => 2 ** Math.min(31, Math.max(WIN_LOG_FLOOR, info & WIN_LOG_MASK)) - 1;
    this.hold(f, lanA, judge, keyOf(lanA, remA, lanP, remP, proto), keyOf(remA, wan, remP, aliasP, proto),
      valueOf(wan, remA, aliasP, remP, this.lanIfindex, this.wanIfindex, tcp ? win(tcpIn) : 0,
        tcp ? dv.getUint32(r + A.F_END_OUT, true) : 0, tcp && (tcpOut & END_KNOWN) !== 0),
      valueOf(remA, lanA, remP, lanP, this.wanIfindex, this.lanIfindex, tcp ? win(tcpOut) : 0,
        tcp ? dv.getUint32(r + A.F_END_IN, true) : 0, tcp && (tcpIn & END_KNOWN) !== 0));
  }

  /**
   * Writes a flow's (or association's, or call's) two entries and holds it;
   * turned away (the judge's check with no WAN address unmarks it: the
   * engine keeps it) with no WAN address, the table full, or its host at its
   * share.
   */
  private hold(id: number, lanA: number, judge: Judge, outKey: Buffer | null, inKey: Buffer | null, outValue: Buffer, inValue: Buffer): void {
    const old = this.held.get(id);
    if (old) this.drop(old);
    const mine = this.perHost.get(lanA) ?? 0;
    if (this.wanRaw === 0 || this.held.size >= this.capacity || mine >= this.hostCap) {
      if (mine >= this.hostCap) this.hostCapped++;
      else this.full++;
      judge.check(0, NO_ENDS);
      return;
    }
    try {
      if (outKey) this.kernel.put(outKey, outValue);
      if (inKey) this.kernel.put(inKey, inValue);
    } catch {
      // The kernel's table is full (or refuses): the flow stays with the engine.
      if (outKey) this.kernel.remove(outKey);
      this.full++;
      judge.check(0, NO_ENDS);
      return;
    }
    this.perHost.set(lanA, mine + 1);
    const h: Held = {
      id, lanA, outKey, inKey, judge,
      pktsOut: 0, pktsIn: 0, bytesOut: 0, bytesIn: 0, ...NO_ENDS, walk: -1, met: 0, dPktsOut: 0, dPktsIn: 0, dBytesOut: 0, dBytesIn: 0,
    };
    this.held.set(id, h);
    if (outKey) this.byKey.set(keyId(outKey), { h, out: true });
    if (inKey) this.byKey.set(keyId(inKey), { h, out: false });
    this.offloaded++;
  }

  private drop(h: Held): void {
    for (const key of [h.outKey, h.inKey]) {
      if (!key) continue;
      this.kernel.remove(key);
      this.byKey.delete(keyId(key));
    }
    this.held.delete(h.id);
    const mine = (this.perHost.get(h.lanA) ?? 1) - 1;
    if (mine > 0) this.perHost.set(h.lanA, mine);
    else this.perHost.delete(h.lanA);
    this.withdrawn++;
  }

  /**
   * One direction's entry, met in this walk (its value at `off` of the
   * batch): the sender's end, and the packets and bytes the kernel added
   * since the last read, kept for the credit. Once both directions are met
   * the flow is settled. An entry the program no longer has is not met: its
   * flow keeps the last values read and is settled at the walk's end.
   */
  private meet(h: Held, out: boolean, off: number): void {
    if (h.walk !== this.walk) { h.walk = this.walk; h.met = 0; }
    if ((h.met & SETTLED) !== 0) return;
    const c = fastPathCounts(this.batchValues, off, this.counts);
    if (c.endKnown) {
      if (out) h.endOut = c.end;
      else h.endIn = c.end;
      h.known |= out ? 1 : 2;
    }
    if (out) {
      h.dPktsOut += c.packets - h.pktsOut; h.dBytesOut += c.bytes - h.bytesOut;
      h.pktsOut = c.packets; h.bytesOut = c.bytes;
    } else {
      h.dPktsIn += c.packets - h.pktsIn; h.dBytesIn += c.bytes - h.bytesIn;
      h.pktsIn = c.packets; h.bytesIn = c.bytes;
    }
    h.met |= out ? OUT_MET : IN_MET;
    if (h.met === entriesOf(h)) this.settle(h);
  }

  /** What the kernel moved credited to the flow, then the engine asked whether it still vouches for it. */
  private settle(h: Held): void {
    h.walk = this.walk;
    h.met = SETTLED;
    h.judge.credit(h.dPktsOut, h.dPktsIn, h.dBytesOut, h.dBytesIn);
    h.dPktsOut = h.dPktsIn = h.dBytesOut = h.dBytesIn = 0;
    if (h.judge.check(this.wanRaw, h) === 0) this.drop(h);
  }

  /**
   * Every held flow credited with what the kernel moved, or withdrawn
   * (taking the kernel's sequence ends): at once after a reload, a
   * `conntrack -D`, a flush or a new WAN address. A walk of its own, from
   * the table's start; the timer's next round starts another.
   */
  sync(): void {
    this.walkFirst = true;
    this.syncSlice(Infinity);
  }

  /**
   * The timer's round: about `budget` flows' entries of the current walk
   * (a new walk when the last has ended), SYNC_BATCH entries a system call,
   * then two engine calls for each flow both of whose entries were met. At
   * the walk's end every flow not settled in it (an entry the kernel no
   * longer has, one written after the walk passed its place) is settled
   * with what was met. With the table full a flow is still seen every
   * 65,536 / SYNC_SLICE rounds (16 s), well inside every timeout it could
   * miss.
   */
  syncSlice(budget = SYNC_SLICE): void {
    let entries = 0;
    while (entries < 2 * budget) {
      if (this.walkFirst) this.walk++;
      const { count, done } = this.kernel.readBatch(this.walkToken, this.walkFirst, this.batchKeys, this.batchValues);
      this.walkFirst = done;
      entries += count;
      for (let i = 0; i < count; i++) {
        const e = this.byKey.get(keyId(this.batchKeys, i * FAST_PATH_KEY_BYTES));
        // Not held (a flow withdrawn meanwhile; nothing else writes the table): nothing to credit.
        if (e) this.meet(e.h, e.out, i * FAST_PATH_VALUE_BYTES);
      }
      if (done) {
        for (const h of this.held.values()) if (h.walk !== this.walk || h.met !== SETTLED) this.settle(h);
        return;
      }
      if (count === 0) return; // cannot happen (the kernel ends a walk with ENOENT): never spin
    }
  }

  status(): FastPathStatus {
    const s = this.kernel.stats();
    return {
      flows: this.held.size, offloaded: this.offloaded, withdrawn: this.withdrawn, full: this.full, hostCapped: this.hostCapped, capacity: this.capacity,
      forwarded: s[0] ?? 0, outOfWindow: s[1] ?? 0, passedFlags: s[2] ?? 0, passedOther: s[3] ?? 0,
    };
  }

  /** Every flow back to the engine, the program detached (the links closed), the engine told. */
  close(): void {
    this.sync();
    this.kernel.close();
    this.held.clear();
    this.byKey.clear();
    this.perHost.clear();
    this.engine.x.setFastPath(0);
  }
}

/**
 * The kernel's half on `lan` and `wan` (src/tun/fastpath.ts): attached to
 * both devices' ingress by links this process holds, so a dead daemon
 * leaves no fast path behind. Throws with the kernel's reason (no tcx
 * before Linux 6.6, a device that is not Ethernet, no privileges).
 */
export function openKernelFastPath(lan: string, wan: string, capacity: number): FastPathKernel {
  // Each flow is two entries, one a direction.
  return KernelFastPath.open(lan, wan, capacity * 2);
}

/** A device's interface index in this network namespace, or an Error naming it. */
export function ifindexOf(dev: string): number {
  try {
    return Number(readFileSync(`/sys/class/net/${dev}/ifindex`, 'utf8').trim());
  } catch {
    throw new Error(`no device ${dev}`);
  }
}
