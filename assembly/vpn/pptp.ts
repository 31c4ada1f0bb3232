// PPTP (RFC 2637): the TCP 1723 control connection is masqueraded like any
// TCP flow; this handler translates the Call IDs inside it so many LAN
// clients (PNS) can call the same server, and LAN servers (PAC) can take
// calls at the same time. The Call ID a LAN host chooses for itself is
// replaced by an alias unique on the WAN side; Call IDs that name the LAN
// host's call in messages from the remote are mapped back. Enhanced GRE
// (gre.ts) then finds the call by the key field. The magic cookie, the
// message type and the exact length of every message in the segment are
// checked before anything is touched (FreeBSD-SA-20:12, the Linux
// pptp_msg_name bug); the TCP checksum is adjusted for every rewrite.
//
// Control message header:  0 u16 Length  2 u16 PPTP Message Type (1)
//   4 u32 Magic Cookie 0x1A2B3C4D  8 u16 Control Message Type  10 u16 Reserved0
//   12 u16 Call ID or Peer's Call ID   14 u16 Peer's Call ID (replies)
//
// Call record: CALL_SIZE bytes, fields CALL_* in abi/records.ts.
// Map keys: (remote, alias | IN) → call+1; (remote, callIdRemote | OUT) → call+1;
//           (lan ^ keyed mix(remote), callIdLan | LAN) → call+1.
// Keys may repeat (a server reuses a Call ID while the old call lingers
// disconnected; two LAN-side folded keys may coincide): every lookup walks
// all slots with its key, compares the full key with the record, and
// prefers a live call over a disconnected one.

import { C_CALLS_ACTIVE } from "../abi/counters";
import {
  CALL_EXPIRES, CALL_FLAGS, CALL_ID_ALIAS, CALL_ID_LAN, CALL_ID_REMOTE, CALL_IN_USE, CALL_LAN_ADDR,
  CALL_PKTS_IN, CALL_PKTS_OUT, CALL_REM_ADDR, CALL_SIZE, CF_DISCONNECTED, CF_OFFLOADED, CF_REMOTE_KNOWN,
} from "../abi/records";
import { callIdBitmap, callMap, callRecs, counters, CALL_CAP, CALL_MAP_SIZE } from "../layout";
import { RESTORE_BAD_FIELD, RESTORE_DUPLICATE, RESTORE_FULL, RESTORE_OK, SNAP_MAX_LIFETIME_DS } from "../abi/codes";
import { adjust16 } from "../wire/checksum";
import { CTX_L4_PARTIAL, packetContext } from "../wire/context";
import { TCP_CSUM, TCP_OFF } from "../wire/l4";
import { kmFirst, kmHas, kmInsert, kmNext, kmRemove, kmValueAt } from "./keymap";
import { Drop } from "../abi/reasons";
import { slabAlloc, slabFree, slabHighWater, slabInit } from "./slab";
import { countAdd, greDisconnectDs, greDs, nowDs, wanAddr } from "../nat/state";
import { hash1 } from "../nat/hash";
import { LIM_CALLS, srcCharge, srcRelease } from "../nat/limits";
import { RING_CALL, fastPathOn, passedByKernel, ringPush } from "../nat/fastpath";

export const PPTP_PORT: u32 = 1723;
const MAGIC: u32 = 0x1a2b3c4d;
// Control message header fields (offsets from the message start).
const M_LENGTH: usize = 0;
const M_PPTP_TYPE: usize = 2;
const M_MAGIC: usize = 4;
const M_CTRL_TYPE: usize = 8;
const M_CALL_ID: usize = 12;      // Call ID, or the Peer's Call ID in CCRQ/CDN/ICCN/WEN/SLI
const M_PEER_CALL_ID: usize = 14; // Peer's Call ID in replies
const M_HEADER: u32 = 12;
const K_IN: u32 = 0x10000;
const K_OUT: u32 = 0x20000;
const K_LAN: u32 = 0x30000;
const MAP_MASK: u32 = CALL_MAP_SIZE - 1;
const slab: usize = memory.data(16);
let sweepHand: u32 = 0;
let aliasHint: u32 = 1;

// Exact length of each control message type 1..15 (RFC 2637 §2).
const LENGTHS: usize = memory.data<u16>([0, 156, 156, 16, 16, 16, 20, 168, 32, 220, 24, 28, 16, 148, 40, 24]);
export const OCRQ: u32 = 7; export const OCRP: u32 = 8; export const ICRQ: u32 = 9; export const ICRP: u32 = 10;
export const ICCN: u32 = 11; export const CCRQ: u32 = 12; export const CDN: u32 = 13; export const WEN: u32 = 14;
export const SLI: u32 = 15;

export function pptpInit(): void {
  slabInit(slab, CALL_CAP, CALL_SIZE);
  memory.fill(callIdBitmap, 0, 65536 / 8);
  sweepHand = 0;
}

@inline function rec(r: u32): usize { return callRecs + <usize>r * CALL_SIZE; }
@inline function be16(p: usize): u32 { return <u32>bswap<u16>(load<u16>(p)); }
// The remote address goes through a keyed mix before it is folded with the
// LAN address: an XOR of the seed would cancel in the keymap's own hash, and
// two (host, server) pairs would fold to one key whatever the seed.
@inline function lanKey(lanA: u32, remA: u32): u32 { return lanA ^ hash1(<u64>remA); } // nat/hash.ts
@inline function aliasUsed(a: u32): bool { return (load<u8>(callIdBitmap + (a >>> 3)) & (1 << (a & 7))) != 0; }
@inline function aliasMark(a: u32, used: bool): void {
  const b = callIdBitmap + (a >>> 3);
  const bit = <u8>(<u32>1 << (a & 7));
  store<u8>(b, used ? load<u8>(b) | bit : load<u8>(b) & ~bit);
}

/** Checks every message of the segment; Drop.NONE when all are well formed and whole. */
export function pptpCheck(payload: usize, len: u32): u32 {
  let off: u32 = 0;
  while (off < len) {
    if (len - off < M_HEADER) return Drop.PPTP_BAD_LENGTH;
    const m = payload + off;
    const mlen = be16(m + M_LENGTH);
    if (bswap<u32>(load<u32>(m, M_MAGIC)) != MAGIC) return Drop.PPTP_BAD_MAGIC;
    if (be16(m + M_PPTP_TYPE) != 1) return Drop.PPTP_BAD_TYPE;
    const ctype = be16(m + M_CTRL_TYPE);
    if (ctype < 1 || ctype > 15) return Drop.PPTP_BAD_TYPE;
    if (mlen != <u32>load<u16>(LENGTHS + (<usize>ctype << 1)) || mlen > len - off) return Drop.PPTP_BAD_LENGTH;
    off += mlen;
  }
  return Drop.NONE;
}

function callFree(r: u32): void {
  const e = rec(r);
  const remA = load<u32>(e, CALL_REM_ADDR);
  kmRemove(callMap, MAP_MASK, remA, load<u16>(e, CALL_ID_ALIAS) | K_IN, r + 1);
  kmRemove(callMap, MAP_MASK, lanKey(load<u32>(e, CALL_LAN_ADDR), remA), load<u16>(e, CALL_ID_LAN) | K_LAN, r + 1);
  if (load<u16>(e, CALL_FLAGS) & <u16>CF_REMOTE_KNOWN) kmRemove(callMap, MAP_MASK, remA, load<u16>(e, CALL_ID_REMOTE) | K_OUT, r + 1);
  aliasMark(load<u16>(e, CALL_ID_ALIAS), false);
  srcRelease(load<u32>(e, CALL_LAN_ADDR), LIM_CALLS);
  slabFree(slab, callRecs, r);
  countAdd(C_CALLS_ACTIVE, -1);
}

@inline function live(r: u32): bool {
  const e = rec(r);
  if (load<u8>(e, CALL_IN_USE) == 0) return false;
  if (<i32>(nowDs - load<u32>(e, CALL_EXPIRES)) >= 0) { callFree(r); return false; }
  return true;
}

/** In use and not expired; never frees (safe while walking a key's slots). */
@inline function alive(e: usize): bool {
  return load<u8>(e, CALL_IN_USE) != 0 && <i32>(nowDs - load<u32>(e, CALL_EXPIRES)) < 0;
}
@inline function connected(e: usize): bool { return (load<u16>(e, CALL_FLAGS) & <u16>CF_DISCONNECTED) == 0; }

// Lookup kinds for pick(): which record fields must equal the key.
const BY_LAN: u32 = 0;    // lanAddr, remoteAddr, callIdLan
const BY_ALIAS: u32 = 1;  // remoteAddr, callIdAlias
const BY_REMOTE: u32 = 2; // remoteAddr, callIdRemote (known)

/**
 * Walks every slot with key (k1, k2) and returns the call (record + 1)
 * whose fields match in full: a live connected call first, else a live
 * disconnected one, else 0. `lanA` (0 = any) narrows BY_REMOTE to one host.
 */
function pick(k1: u32, k2: u32, kind: u32, lanA: u32, remA: u32, id: u32, connectedOnly: bool = false): u32 {
  let lingering: u32 = 0;
  for (let i = kmFirst(callMap, MAP_MASK, k1, k2); i >= 0; i = kmNext(callMap, MAP_MASK, k1, k2, i)) {
    const v = kmValueAt(callMap, i);
    const e = rec(v - 1);
    if (!alive(e) || load<u32>(e, CALL_REM_ADDR) != remA) continue;
    if (kind == BY_LAN) {
      if (load<u32>(e, CALL_LAN_ADDR) != lanA || <u32>load<u16>(e, CALL_ID_LAN) != id) continue;
    } else if (kind == BY_ALIAS) {
      if (<u32>load<u16>(e, CALL_ID_ALIAS) != id) continue;
    } else {
      if ((load<u16>(e, CALL_FLAGS) & <u16>CF_REMOTE_KNOWN) == 0 || <u32>load<u16>(e, CALL_ID_REMOTE) != id) continue;
      if (lanA != 0 && load<u32>(e, CALL_LAN_ADDR) != lanA) continue;
    }
    if (connected(e)) return v;
    if (lingering == 0) lingering = v;
  }
  return connectedOnly ? 0 : lingering;
}

/** The LAN host's call with its own Call ID; `connectedOnly`: a hung-up call does not count (a new call may reuse the ID). */
function findLan(lanA: u32, remA: u32, callLan: u32, connectedOnly: bool = false): u32 {
  return pick(lanKey(lanA, remA), callLan | K_LAN, BY_LAN, lanA, remA, callLan, connectedOnly);
}

/** The WAN-side alias of `lanA`'s call with its own Call ID `callLan` toward `remA` (0 if none): for ICMP quotes. */
export function callAliasOf(lanA: u32, remA: u32, callLan: u32): u32 {
  const v = findLan(lanA, remA, callLan);
  return v != 0 ? <u32>load<u16>(rec(v - 1), CALL_ID_ALIAS) : 0;
}

export function callFindIn(remA: u32, alias: u32): u32 {
  return pick(remA, alias | K_IN, BY_ALIAS, 0, remA, alias);
}
/** The call the remote knows as `callRemote`; `lanA` != 0: only that LAN host's. */
export function callFindOut(remA: u32, callRemote: u32, lanA: u32 = 0): u32 {
  return pick(remA, callRemote | K_OUT, BY_REMOTE, lanA, remA, callRemote);
}

const SRC_LIMIT: u32 = 0xffffffff;

/** The LAN host's call `callLan` with `remA`, opened if new; 0 when the table is full, SRC_LIMIT at the host's cap (src_max_calls). */
function callOpen(lanA: u32, remA: u32, callLan: u32): u32 {
  let v = findLan(lanA, remA, callLan, true);
  if (v != 0) return v;
  if (!srcCharge(lanA, LIM_CALLS)) return SRC_LIMIT;
  let alias: u32 = 0;
  if (callLan != 0 && !aliasUsed(callLan)) alias = callLan;
  else {
    for (let n: u32 = 0; n < 65535; n++) {
      const a = aliasHint;
      aliasHint = aliasHint >= 65535 ? 1 : aliasHint + 1;
      if (!aliasUsed(a)) { alias = a; break; }
    }
    if (alias == 0) { srcRelease(lanA, LIM_CALLS); return 0; }
  }
  v = slabAlloc(slab, callRecs);
  if (v == 0) { srcRelease(lanA, LIM_CALLS); return 0; }
  const e = rec(v - 1);
  store<u32>(e, lanA, CALL_LAN_ADDR); store<u32>(e, remA, CALL_REM_ADDR); store<u16>(e, <u16>callLan, CALL_ID_LAN); store<u16>(e, <u16>alias, CALL_ID_ALIAS);
  store<u32>(e, nowDs + greDs, CALL_EXPIRES); store<u8>(e, 1, CALL_IN_USE);
  aliasMark(alias, true);
  kmInsert(callMap, MAP_MASK, remA, alias | K_IN, v);
  kmInsert(callMap, MAP_MASK, lanKey(lanA, remA), callLan | K_LAN, v);
  countAdd(C_CALLS_ACTIVE, 1);
  return v;
}

function setRemote(v: u32, callRemote: u32): void {
  const e = rec(v - 1);
  const flags = <u32>load<u16>(e, CALL_FLAGS);
  if (flags & CF_REMOTE_KNOWN) {
    if (<u32>load<u16>(e, CALL_ID_REMOTE) == callRemote) return;
    kmRemove(callMap, MAP_MASK, load<u32>(e, CALL_REM_ADDR), load<u16>(e, CALL_ID_REMOTE) | K_OUT, v);
  }
  store<u16>(e, <u16>callRemote, CALL_ID_REMOTE);
  store<u16>(e, <u16>(flags | CF_REMOTE_KNOWN), CALL_FLAGS);
  kmInsert(callMap, MAP_MASK, load<u32>(e, CALL_REM_ADDR), callRemote | K_OUT, v);
}

function disconnect(v: u32): void {
  const e = rec(v - 1);
  store<u16>(e, load<u16>(e, CALL_FLAGS) | <u16>CF_DISCONNECTED, CALL_FLAGS);
  const soon = nowDs + greDisconnectDs;
  if (<i32>(load<u32>(e, CALL_EXPIRES) - soon) > 0) store<u32>(e, soon, CALL_EXPIRES);
}

/**
 * Rewrites the 16-bit field at `f` to `value` (host order) and adjusts the TCP
 * checksum, unless it is a NEEDS_CSUM partial sum (TUN offloads, wire/vnet.ts):
 * the payload lies inside the region the final sum covers, so the field stays.
 * A super-packet's payload is the segments' payloads in order, so messages
 * are walked across it just as across one segment.
 */
function put(l4: usize, f: usize, value: u32): void {
  const oldW = <u32>load<u16>(f);
  const newW = <u32>bswap<u16>(<u16>value);
  if (oldW == newW) return;
  store<u16>(f, <u16>newW);
  if (load<u32>(packetContext, CTX_L4_PARTIAL) != 0) return;
  store<u16>(l4, <u16>adjust16(load<u16>(l4, TCP_CSUM), oldW, newW), TCP_CSUM);
}

@inline function payloadOf(l4: usize): usize { return l4 + ((<usize>load<u8>(l4, TCP_OFF) >>> 4) << 2); }

/**
 * Control messages from a LAN host (`lanA`) to `remA`, already checked.
 * The LAN host's own Call IDs become aliases.
 */
export function pptpOut(l4: usize, l4len: u32, lanA: u32, remA: u32): u32 {
  // Messages follow each other; pptpCheck made sure their lengths add up to the segment.
  for (let m = payloadOf(l4), end = l4 + l4len; m < end; m += be16(m + M_LENGTH)) {
    const ctype = be16(m + M_CTRL_TYPE);
    const own = be16(m + M_CALL_ID);
    if (ctype == OCRQ || ctype == OCRP || ctype == ICRQ || ctype == ICRP) {
      const v = callOpen(lanA, remA, own);
      if (v == 0) return Drop.PPTP_TABLE_FULL;
      if (v == SRC_LIMIT) return Drop.SRC_CALL_LIMIT;
      if (ctype == OCRP || ctype == ICRP) setRemote(v, be16(m + M_PEER_CALL_ID));
      put(l4, m + M_CALL_ID, load<u16>(rec(v - 1), CALL_ID_ALIAS));
    } else if (ctype == CCRQ || ctype == CDN) {
      const v = findLan(lanA, remA, own);
      if (v == 0) return Drop.PPTP_NO_CALL;
      disconnect(v);
      put(l4, m + M_CALL_ID, load<u16>(rec(v - 1), CALL_ID_ALIAS));
    }
    // ICCN, WEN, SLI from the LAN name the remote's Call ID: unchanged.
  }
  return Drop.NONE;
}

/** Control messages from `remA` to a LAN host, already checked: aliases go back to the LAN's Call IDs. */
export function pptpIn(l4: usize, l4len: u32, remA: u32): u32 {
  // Messages follow each other; pptpCheck made sure their lengths add up to the segment.
  for (let m = payloadOf(l4), end = l4 + l4len; m < end; m += be16(m + M_LENGTH)) {
    const ctype = be16(m + M_CTRL_TYPE);
    if (ctype == OCRP || ctype == ICRP) {
      const v = callFindIn(remA, be16(m + M_PEER_CALL_ID));
      if (v == 0) return Drop.PPTP_NO_CALL;
      setRemote(v, be16(m + M_CALL_ID));
      put(l4, m + M_PEER_CALL_ID, load<u16>(rec(v - 1), CALL_ID_LAN));
    } else if (ctype == ICCN || ctype == WEN || ctype == SLI) {
      const v = callFindIn(remA, be16(m + M_CALL_ID));
      if (v == 0) return Drop.PPTP_NO_CALL;
      put(l4, m + M_CALL_ID, load<u16>(rec(v - 1), CALL_ID_LAN));
    } else if (ctype == CCRQ || ctype == CDN) {
      const v = callFindOut(remA, be16(m + M_CALL_ID));
      if (v != 0) disconnect(v);
    }
  }
  return Drop.NONE;
}

export function callTouch(v: u32, outbound: bool): void {
  const e = rec(v - 1);
  if ((load<u16>(e, CALL_FLAGS) & <u16>CF_DISCONNECTED) == 0) store<u32>(e, nowDs + greDs, CALL_EXPIRES);
  if (outbound) store<u32>(e, load<u32>(e, CALL_PKTS_OUT) + 1, CALL_PKTS_OUT);
  else store<u32>(e, load<u32>(e, CALL_PKTS_IN) + 1, CALL_PKTS_IN);
  if (fastPathOn) callOffer(v - 1);
}

// ---- the flow fast path (nat/fastpath.ts; option flow_offload) -------------

/**
 * A connected call whose both Call IDs are known has its GRE carried by the
 * kernel: (host, server, the server's Call ID) leaves from the WAN address
 * unchanged, (server, WAN address, the call's alias) goes to the host with
 * the alias written back to the host's own Call ID, exactly what greOut and
 * greIn do. The control connection on 1723 stays with the engine, so it
 * sees every hang-up (a disconnected call is withdrawn and lingers here).
 */
function callOffer(r: u32): void {
  const e = rec(r);
  const flags = <u32>load<u16>(e, CALL_FLAGS);
  if ((flags & (CF_OFFLOADED | CF_DISCONNECTED)) != 0 || (flags & CF_REMOTE_KNOWN) == 0) return;
  if (wanAddr == 0 || load<u32>(e, CALL_LAN_ADDR) == wanAddr) return;
  if (!ringPush(RING_CALL | r)) return;
  store<u16>(e, <u16>(flags | CF_OFFLOADED), CALL_FLAGS);
}

/** The call the thread offloaded as record `r` with these Call IDs: still that one, connected and offloaded? */
function callSame(r: u32, lanA: u32, remA: u32, callLan: u32, alias: u32, callRemote: u32): bool {
  if (r >= slabHighWater(slab)) return false;
  const e = rec(r);
  const flags = <u32>load<u16>(e, CALL_FLAGS);
  return load<u8>(e, CALL_IN_USE) != 0 && (flags & CF_OFFLOADED) != 0 && (flags & CF_REMOTE_KNOWN) != 0 &&
    load<u32>(e, CALL_LAN_ADDR) == lanA && load<u32>(e, CALL_REM_ADDR) == remA && <u32>load<u16>(e, CALL_ID_LAN) == callLan &&
    <u32>load<u16>(e, CALL_ID_ALIAS) == alias && <u32>load<u16>(e, CALL_ID_REMOTE) == callRemote;
}

/** The sync's question: 1 keep, 0 withdraw (freed, expired, reused, hung up, a new WAN address, the option off). */
export function callFastCheck(r: u32, lanA: u32, remA: u32, callLan: u32, alias: u32, callRemote: u32, wan: u32): u32 {
  if (!callSame(r, lanA, remA, callLan, alias, callRemote) || !live(r)) return 0;
  const e = rec(r);
  if (fastPathOn && wan == wanAddr && connected(e)) return 1;
  store<u16>(e, load<u16>(e, CALL_FLAGS) & ~<u16>CF_OFFLOADED, CALL_FLAGS);
  return 0;
}

/** What the kernel carried since the last sync: counted each way, and the call kept alive as its packets would. */
export function callFastCredit(r: u32, lanA: u32, remA: u32, callLan: u32, alias: u32, callRemote: u32,
  pktsOut: u32, pktsIn: u32, bytesOut: f64, bytesIn: f64): u32 {
  if (!callSame(r, lanA, remA, callLan, alias, callRemote)) return 0;
  if (pktsOut == 0 && pktsIn == 0) return 1;
  passedByKernel(pktsOut, pktsIn, bytesOut, bytesIn);
  const e = rec(r);
  store<u32>(e, load<u32>(e, CALL_PKTS_OUT) + pktsOut, CALL_PKTS_OUT);
  store<u32>(e, load<u32>(e, CALL_PKTS_IN) + pktsIn, CALL_PKTS_IN);
  if (connected(e)) store<u32>(e, nowDs + greDs, CALL_EXPIRES);
  return 1;
}

/** Every call unmarked (the fast path closed, or a restore). */
export function callForgetOffloaded(): void {
  const hw = slabHighWater(slab);
  for (let r: u32 = 0; r < hw; r++) {
    const e = rec(r);
    store<u16>(e, load<u16>(e, CALL_FLAGS) & ~<u16>CF_OFFLOADED, CALL_FLAGS);
  }
}
export function callLanAddr(v: u32): u32 { return load<u32>(rec(v - 1), CALL_LAN_ADDR); }
export function callLanId(v: u32): u32 { return load<u16>(rec(v - 1), CALL_ID_LAN); }

export function callSweep(budget: u32): void {
  const hw = slabHighWater(slab);
  for (let n: u32 = 0; n < budget && n < hw; n++) {
    if (sweepHand >= hw) sweepHand = 0;
    live(sweepHand++);
  }
}
export function callFlushAll(): void {
  const hw = slabHighWater(slab);
  for (let r: u32 = 0; r < hw; r++) if (load<u8>(rec(r), CALL_IN_USE) != 0) callFree(r);
}
/** `conntrack -D`: frees call r (and its GRE mapping) if it is in use. */
export function callDelete(r: u32): bool {
  if (r >= slabHighWater(slab) || load<u8>(rec(r), CALL_IN_USE) == 0) return false;
  callFree(r);
  return true;
}
export function callHighWater(): u32 { return slabHighWater(slab); }

// ---- state snapshot restore (assembly/snapshot.ts) -------------------------

/** One saved call (CALL_SIZE bytes at `src`): skipped when free or expired, else checked and inserted with its alias. */
export function callRestore(src: usize): u32 {
  if (load<u8>(src, CALL_IN_USE) == 0) return RESTORE_OK;
  // Offloaded is this run's business (the kernel's table is gone with it): re-offered by the next packet.
  const flags = <u32>load<u16>(src, CALL_FLAGS) & ~CF_OFFLOADED;
  if ((flags & ~(CF_REMOTE_KNOWN | CF_DISCONNECTED)) != 0) return RESTORE_BAD_FIELD;
  const left = load<u32>(src, CALL_EXPIRES) - nowDs;
  if (<i32>left <= 0) return RESTORE_OK;
  if (left > SNAP_MAX_LIFETIME_DS) return RESTORE_BAD_FIELD;
  const lanA = load<u32>(src, CALL_LAN_ADDR), remA = load<u32>(src, CALL_REM_ADDR);
  const callLan = <u32>load<u16>(src, CALL_ID_LAN), alias = <u32>load<u16>(src, CALL_ID_ALIAS);
  const callRemote = <u32>load<u16>(src, CALL_ID_REMOTE);
  if (alias == 0) return RESTORE_BAD_FIELD;
  if (aliasUsed(alias)) return RESTORE_DUPLICATE;
  // The same host's call with its own Call ID twice is a duplicate unless one
  // of them was hung up (a new call may reuse the ID, as a server may reuse
  // its own Call ID while an old call lingers: that is no duplicate either).
  const vl = findLan(lanA, remA, callLan, true);
  if (vl != 0 && (flags & CF_DISCONNECTED) == 0) return RESTORE_DUPLICATE;
  const v = slabAlloc(slab, callRecs);
  if (v == 0) return RESTORE_FULL;
  memory.copy(rec(v - 1), src, CALL_SIZE);
  store<u8>(rec(v - 1), 1, CALL_IN_USE);
  store<u16>(rec(v - 1), <u16>flags, CALL_FLAGS);
  aliasMark(alias, true);
  srcCharge(lanA, LIM_CALLS); // over a cap lowered since, the call stays (its release finds the count at the cap)
  kmInsert(callMap, MAP_MASK, remA, alias | K_IN, v);
  kmInsert(callMap, MAP_MASK, lanKey(lanA, remA), callLan | K_LAN, v);
  if ((flags & CF_REMOTE_KNOWN) != 0) kmInsert(callMap, MAP_MASK, remA, callRemote | K_OUT, v);
  countAdd(C_CALLS_ACTIVE, 1);
  return RESTORE_OK;
}

/** Every live call is found by its alias (and the remote's Call ID) and owns the alias; the gauge matches. */
export function callVerify(): bool {
  const hw = slabHighWater(slab);
  let live: u32 = 0;
  for (let r: u32 = 0; r < hw; r++) {
    const e = rec(r);
    if (load<u8>(e, CALL_IN_USE) == 0) continue;
    live++;
    const remA = load<u32>(e, CALL_REM_ADDR);
    const alias = <u32>load<u16>(e, CALL_ID_ALIAS);
    if (!aliasUsed(alias) || !kmHas(callMap, MAP_MASK, remA, alias | K_IN, r + 1)) return false;
    if ((load<u16>(e, CALL_FLAGS) & <u16>CF_REMOTE_KNOWN) != 0 &&
        !kmHas(callMap, MAP_MASK, remA, <u32>load<u16>(e, CALL_ID_REMOTE) | K_OUT, r + 1)) return false;
  }
  return <u64>live == load<u64>(counters + (<usize>C_CALLS_ACTIVE << 3));
}
