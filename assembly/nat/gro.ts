// GRO on write: the reverse of segment.ts. After a batch's verdicts, the
// passed IPv4 UDP datagrams of one flow whose headers after translation are
// the same (but for the IP ID, the lengths and the checksums) are written to
// the TUN as ONE UDP GSO (USO) super-packet, which the kernel cuts back into
// exactly these datagrams further on (__udp_gso_segment: each segment the
// leader's headers with its own lengths, the ID plus its index, checksums
// finished). One write syscall (and one pass through the kernel's routing
// and forwarding) for the group instead of one per datagram.
//
// Policy here, mechanism in the addon (src/tun/addon.cc writeBatch): this
// pass picks the groups and rewrites the leader (IP total length and header
// checksum, UDP length and partial checksum, virtio header); each member
// gets VERDICT_FOLLOW and the slot before it in its group a link to it
// (groLinks, u16 per slot, 0 = end: a member is always a later slot than
// the one linking to it, so 0 is never a member). The addon gathers the
// leader and each member's UDP payload (slot + 28) with one writev.
//
// Merge rules, each one needed for the kernel's segments to be the very
// datagrams read:
// - the datagram was read with NEEDS_CSUM, csum_start 20, csum_offset 6
//   and no GSO: its checksum is not computed yet (a partial sum the kernel
//   finishes), so the kernel's per-segment checksum is the one it would
//   have finished for it alone. A datagram with a complete checksum (from
//   a raw socket, or forwarded from a link that checked it) is never
//   merged: a wrong checksum would be recomputed, i.e. "fixed", by the
//   segmentation;
// - IHL 5 (hdr_len 28), not a fragment, UDP length = IP payload, read
//   length = IP total length, at least one payload byte;
// - same addresses, ports, TOS, TTL and flags word (DF, the reserved bit)
//   as the leader: the kernel copies the leader's header into every segment;
// - IP ID = the previous datagram's + 1: the kernel numbers the segments
//   ID, ID + 1, … from the leader's;
// - every payload as long as the leader's (gso_size) but the last, which may
//   be shorter; total ≤ 65535 bytes, at most GRO_MAX_SEGS datagrams.
// Order within a flow never changes: a group is written at its leader's
// place; a datagram of the flow that cannot join closes the open group and
// starts the next one, written after it; any other passed UDP packet between
// the same two addresses (a complete checksum, a fragment, a super-packet)
// closes their open groups, so nothing of theirs is written ahead of it.
// Groups of one are written as they were read.

import { PROTO_UDP, VERDICT_FOLLOW, VERDICT_PASS } from "../abi/codes";
import { C_GRO_DATAGRAMS, C_GRO_GROUPS } from "../abi/counters";
import { groLinks, lens, slotSize, slots, verdicts, vnetHdrs, VNET_STRIDE } from "../layout";
import { adjust16, partialAdjust16 } from "../wire/checksum";
import { IP_CSUM, IP_DST, IP_FRAG, IP_ID, IP_SRC, IP_TOS, IP_TOTAL_LEN, IP_TTL } from "../wire/ipv4";
import { UDP_CSUM, UDP_LEN } from "../wire/l4";
import {
  VNET_CSUM_OFFSET, VNET_CSUM_START, VNET_F_NEEDS_CSUM, VNET_FLAGS, VNET_GSO_SIZE, VNET_GSO_TYPE, VNET_GSO_UDP_L4,
  VNET_HDR_LEN,
} from "../wire/vnet";
import { countAdd } from "./state";

/** At most this many datagrams in one write (the kernel takes up to UDP_MAX_SEGMENTS, 128). */
export const GRO_MAX_SEGS: u32 = 64;
/** IPv4 (no options) + UDP header: the super-packet's hdr_len, and where a member's payload starts. */
export const GRO_HDR: u32 = 28;
const MAX_TOTAL: u32 = 65535;

// The open groups of this batch (at most one per slot): leader slot, last
// slot, datagram count, total IP length, gso_size, and whether it still
// takes members. Scanned linearly: a batch has at most 64 slots with
// offloads, and a router's batch a handful of flows.
const MAX_GROUPS: u32 = 256;
const gLeader: usize = memory.data(MAX_GROUPS * 2);
const gLast: usize = memory.data(MAX_GROUPS * 2);
const gCount: usize = memory.data(MAX_GROUPS * 2);
const gTotal: usize = memory.data(MAX_GROUPS * 4);
const gSize: usize = memory.data(MAX_GROUPS * 2);
const gOpen: usize = memory.data(MAX_GROUPS);
let groups: u32 = 0;

@inline function slotAt(i: u32): usize { return slots + <usize>i * slotSize; }
@inline function vnetAt(i: u32): usize { return vnetHdrs + <usize>i * VNET_STRIDE; }
@inline function be16(p: usize, off: usize): u32 { return <u32>bswap<u16>(load<u16>(p + off)); }

/**
 * 0 when slot i (verdict PASS) is not IPv4 UDP; 1 when it is UDP but may not
 * be merged; 2 when it is a candidate (every per-datagram rule above).
 */
function kind(i: u32): u32 {
  const p = slotAt(i);
  const len = load<u32>(lens + (<usize>i << 2));
  if (len < GRO_HDR || load<u8>(p, 9) != <u8>PROTO_UDP) return 0;
  if (load<u8>(p) != 0x45) return 1;
  const h = vnetAt(i);
  if (load<u8>(h, VNET_FLAGS) != <u8>VNET_F_NEEDS_CSUM || load<u8>(h, VNET_GSO_TYPE) != 0) return 1;
  if (load<u16>(h, VNET_CSUM_START) != 20 || load<u16>(h, VNET_CSUM_OFFSET) != <u16>UDP_CSUM) return 1;
  if ((be16(p, IP_FRAG) & 0x3fff) != 0) return 1; // MF or an offset
  const total = be16(p, IP_TOTAL_LEN);
  if (total != len || total <= GRO_HDR || be16(p, 20 + UDP_LEN) != total - 20) return 1;
  return 2;
}

/** Same flow: addresses and ports (the 12 bytes from the source address on). */
@inline function sameFlow(a: usize, b: usize): bool {
  return load<u64>(a, IP_SRC) == load<u64>(b, IP_SRC) && load<u32>(a, 20) == load<u32>(b, 20);
}

/** Same addresses (for closing on a UDP packet that may not be merged). */
@inline function samePair(a: usize, b: usize): bool {
  return load<u64>(a, IP_SRC) == load<u64>(b, IP_SRC);
}

/** The header fields the kernel copies into every segment: TOS, flags word (DF, reserved; MF/offset are 0), TTL. */
@inline function sameHeader(a: usize, b: usize): bool {
  return load<u8>(a, IP_TOS) == load<u8>(b, IP_TOS) && load<u16>(a, IP_FRAG) == load<u16>(b, IP_FRAG) &&
    load<u8>(a, IP_TTL) == load<u8>(b, IP_TTL);
}

/** Slots 0..n-1 with their verdicts: forms the groups and rewrites their leaders. */
export function groBatch(n: u32, passed: u32): void {
  memory.fill(groLinks, 0, <usize>n << 1);
  groups = 0;
  if (passed < 2) return;
  for (let i: u32 = 0; i < n; i++) {
    if (load<u8>(verdicts + i) != VERDICT_PASS) continue;
    const k = kind(i);
    if (k == 0) continue;
    const p = slotAt(i);
    if (k == 1) {
      // A UDP packet that may not join: nothing between its addresses is written ahead of it.
      for (let g: u32 = 0; g < groups; g++) {
        if (load<u8>(gOpen + g) != 0 && samePair(slotAt(<u32>load<u16>(gLeader + (<usize>g << 1))), p)) store<u8>(gOpen + g, 0);
      }
      continue;
    }
    const payload = be16(p, IP_TOTAL_LEN) - GRO_HDR;
    let joined = false;
    for (let g: u32 = 0; g < groups; g++) {
      if (load<u8>(gOpen + g) == 0) continue;
      const lead = <u32>load<u16>(gLeader + (<usize>g << 1));
      const q = slotAt(lead);
      if (!sameFlow(q, p)) continue;
      // This flow's open group: join it, or close it (and lead the next one below).
      store<u8>(gOpen + g, 0);
      const last = <u32>load<u16>(gLast + (<usize>g << 1));
      const count = <u32>load<u16>(gCount + (<usize>g << 1));
      const total = load<u32>(gTotal + (<usize>g << 2));
      const size = <u32>load<u16>(gSize + (<usize>g << 1));
      if (!sameHeader(q, p)) break;
      if (be16(p, IP_ID) != ((be16(slotAt(last), IP_ID) + 1) & 0xffff)) break;
      if (payload > size || total + payload > MAX_TOTAL) break;
      store<u16>(groLinks + (<usize>last << 1), <u16>i);
      store<u8>(verdicts + i, VERDICT_FOLLOW);
      store<u16>(gLast + (<usize>g << 1), <u16>i);
      store<u16>(gCount + (<usize>g << 1), <u16>(count + 1));
      store<u32>(gTotal + (<usize>g << 2), total + payload);
      // Open for more while every payload so far is gso_size long and there is room.
      if (payload == size && count + 1 < GRO_MAX_SEGS && total + payload + 1 <= MAX_TOTAL) store<u8>(gOpen + g, 1);
      joined = true;
      break;
    }
    if (joined) continue;
    const g = groups++;
    store<u16>(gLeader + (<usize>g << 1), <u16>i);
    store<u16>(gLast + (<usize>g << 1), <u16>i);
    store<u16>(gCount + (<usize>g << 1), 1);
    store<u32>(gTotal + (<usize>g << 2), GRO_HDR + payload);
    store<u16>(gSize + (<usize>g << 1), <u16>payload);
    store<u8>(gOpen + g, 1);
  }
  let made: u32 = 0;
  let carried: u32 = 0;
  for (let g: u32 = 0; g < groups; g++) {
    const count = <u32>load<u16>(gCount + (<usize>g << 1));
    if (count < 2) continue;
    leaderRewrite(<u32>load<u16>(gLeader + (<usize>g << 1)), load<u32>(gTotal + (<usize>g << 2)), <u32>load<u16>(gSize + (<usize>g << 1)));
    made++;
    carried += count;
  }
  if (made != 0) {
    countAdd(C_GRO_GROUPS, <i64>made);
    countAdd(C_GRO_DATAGRAMS, <i64>carried);
  }
}

/**
 * The leader of a group as the head of a USO super-packet of `total` IP
 * bytes: IP total length (header checksum adjusted, RFC 1624), UDP length
 * (the partial sum moved by the pseudo header's length, like the kernel's
 * own __udp_gso_segment moves it back per segment), virtio header. Its slot
 * keeps its own bytes and read length: the addon appends the members.
 */
function leaderRewrite(i: u32, total: u32, gsoSize: u32): void {
  const p = slotAt(i);
  const oldTotal = <u32>load<u16>(p, IP_TOTAL_LEN);
  const newTotal = <u32>bswap<u16>(<u16>total);
  store<u16>(p, <u16>newTotal, IP_TOTAL_LEN);
  store<u16>(p, <u16>adjust16(<u32>load<u16>(p, IP_CSUM), oldTotal, newTotal), IP_CSUM);
  const u = p + 20;
  const oldLen = <u32>load<u16>(u, UDP_LEN);
  const newLen = <u32>bswap<u16>(<u16>(total - 20));
  store<u16>(u, <u16>newLen, UDP_LEN);
  store<u16>(u, <u16>partialAdjust16(<u32>load<u16>(u, UDP_CSUM), oldLen, newLen), UDP_CSUM);
  const h = vnetAt(i);
  store<u8>(h, <u8>VNET_F_NEEDS_CSUM, VNET_FLAGS);
  store<u8>(h, <u8>VNET_GSO_UDP_L4, VNET_GSO_TYPE);
  store<u16>(h, <u16>GRO_HDR, VNET_HDR_LEN);
  store<u16>(h, <u16>gsoSize, VNET_GSO_SIZE);
  store<u16>(h, 20, VNET_CSUM_START);
  store<u16>(h, <u16>UDP_CSUM, VNET_CSUM_OFFSET);
}
