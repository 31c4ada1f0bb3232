// Fragments, tracked by IP ID as libalias does: the first fragment (offset
// 0) carries the L4 header and is translated like any packet; the engine
// remembers (src, dst, id, proto) → new address, and later fragments follow
// it. Memory is a fixed set-associative table (FRAG_CAP entries, 4 ways);
// entries die when the datagram is complete or after frag_timeout.
// Dropped: later fragments whose first was not seen, first fragments too
// short for the L4 header (tiny-fragment attack, RFC 1858), fragments that
// overlap the first (RFC 1858 §3.2 / RFC 3128 overlapping attack).
//
// Entry: FRAG_SIZE bytes, fields FRAG_* in abi/records.ts.

import { C_FRAGS_ACTIVE } from "../abi/counters";
import {
  FRAG_DST_ADDR, FRAG_EXPIRES, FRAG_FIRST_END, FRAG_IP_ID, FRAG_NEW_ADDR, FRAG_PROTO, FRAG_SEEN, FRAG_SIDE,
  FRAG_SIZE, FRAG_SRC_ADDR, FRAG_TOTAL,
} from "../abi/records";
import { frags, FRAG_CAP } from "../layout";
import { IP_DST, IP_SRC, ipId, ipDst, ipSrc } from "../wire/ipv4";
import { Drop } from "../abi/reasons";
import { rewriteAddr } from "./rewrite";
import { countAdd, fragDs, hashSeed, nowDs } from "./state";
import { LIM_FRAGS, srcCharge, srcRelease } from "./limits";
import { hash2 } from "./hash";

const WAYS: u32 = 4;
const BUCKETS: u32 = FRAG_CAP / WAYS;

@inline function bucketOf(src: u32, dst: u32, id: u32, proto: u32): usize {
  const h = hash2(<u64>src | (<u64>dst << 32), <u64>id | (<u64>proto << 16)); // nat/hash.ts
  return frags + <usize>((h & (BUCKETS - 1)) * WAYS) * FRAG_SIZE;
}

@inline function live(e: usize): bool {
  return load<u8>(e, FRAG_SIDE) != 0 && <i32>(nowDs - load<u32>(e, FRAG_EXPIRES)) < 0;
}

function free(e: usize): void {
  const side1 = load<u8>(e, FRAG_SIDE);
  if (side1 != 0) countAdd(C_FRAGS_ACTIVE, -1);
  if (side1 == 1) srcRelease(load<u32>(e, FRAG_SRC_ADDR), LIM_FRAGS); // outbound: its LAN host's count (limits.ts)
  store<u8>(e, 0, FRAG_SIDE);
}

function find(src: u32, dst: u32, id: u32, proto: u32, side: u32): usize {
  const b = bucketOf(src, dst, id, proto);
  for (let w: u32 = 0; w < WAYS; w++) {
    const e = b + <usize>w * FRAG_SIZE;
    if (load<u8>(e, FRAG_SIDE) == <u8>(side + 1) && load<u32>(e, FRAG_SRC_ADDR) == src && load<u32>(e, FRAG_DST_ADDR) == dst &&
        load<u16>(e, FRAG_IP_ID) == <u16>id && load<u8>(e, FRAG_PROTO) == <u8>proto) {
      if (live(e)) return e;
      free(e);
      return 0;
    }
  }
  return 0;
}

/** Accounts the bytes of one fragment; frees the entry when the datagram is complete. */
function account(e: usize, offset: u32, payload: u32, more: bool): void {
  const seen = load<u32>(e, FRAG_SEEN) + payload;
  store<u32>(e, seen, FRAG_SEEN);
  if (!more) store<u32>(e, offset + payload, FRAG_TOTAL);
  const total = load<u32>(e, FRAG_TOTAL);
  if (total != 0 && seen >= total) free(e);
}

/**
 * After a first fragment (MF set, offset 0) was translated: remember how
 * the rest of its datagram is rewritten. `src`/`dst` are the addresses as
 * received; `newAddr` replaces src (side 0, outbound) or dst (side 1).
 */
export function fragNoteFirst(side: u32, src: u32, dst: u32, id: u32, proto: u32, newAddr: u32, payload: u32): u32 {
  let e = find(src, dst, id, proto, side);
  if (e == 0) {
    const b = bucketOf(src, dst, id, proto);
    for (let w: u32 = 0; w < WAYS; w++) {
      const c = b + <usize>w * FRAG_SIZE;
      if (!live(c)) { free(c); e = c; break; }
    }
    if (e == 0) return Drop.FRAG_TABLE_FULL;
    // A LAN host holds at most src_max_frags datagrams in flight.
    if (side == 0 && !srcCharge(src, LIM_FRAGS)) return Drop.SRC_FRAG_LIMIT;
    store<u32>(e, src, FRAG_SRC_ADDR); store<u32>(e, dst, FRAG_DST_ADDR); store<u16>(e, <u16>id, FRAG_IP_ID); store<u8>(e, <u8>proto, FRAG_PROTO);
    store<u8>(e, <u8>(side + 1), FRAG_SIDE);
    store<u32>(e, 0, FRAG_SEEN); store<u32>(e, 0, FRAG_TOTAL);
    countAdd(C_FRAGS_ACTIVE, 1);
  }
  store<u32>(e, newAddr, FRAG_NEW_ADDR);
  store<u32>(e, nowDs + fragDs, FRAG_EXPIRES);
  store<u32>(e, payload, FRAG_FIRST_END);
  account(e, 0, payload, true);
  return Drop.NONE;
}

/** A later fragment (offset > 0): rewrite it like its first fragment was. */
export function fragFollow(p: usize, side: u32, proto: u32, offset: u32, payload: u32, more: bool): u32 {
  const src = ipSrc(p);
  const dst = ipDst(p);
  const e = find(src, dst, ipId(p), proto, side);
  if (e == 0) return Drop.FRAG_NO_HEAD;
  if (offset < load<u32>(e, FRAG_FIRST_END)) return Drop.FRAG_OVERLAP;
  rewriteAddr(p, side == 0 ? IP_SRC : IP_DST, load<u32>(e, FRAG_NEW_ADDR));
  account(e, offset, payload, more);
  return Drop.NONE;
}

let sweepHand: u32 = 0;

/** Frees up to `budget` entries past their timeout (datagrams whose fragments never all came). */
export function fragSweep(budget: u32): void {
  if (budget > FRAG_CAP) budget = FRAG_CAP;
  for (let n: u32 = 0; n < budget; n++) {
    if (sweepHand >= FRAG_CAP) sweepHand = 0;
    const e = frags + <usize>(sweepHand++) * FRAG_SIZE;
    if (load<u8>(e, FRAG_SIDE) != 0 && !live(e)) free(e);
  }
}

/** Drops every entry (a new WAN address). */
export function fragFlushAll(): void {
  for (let i: u32 = 0; i < FRAG_CAP; i++) free(frags + <usize>i * FRAG_SIZE);
}
