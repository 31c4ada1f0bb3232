// The per-packet path: check the IPv4 header once, apply the side's
// policy, dispatch to the protocol handler, follow fragments, compensate
// TTL, write a verdict. Never traps: everything malformed is a Drop reason.

import { SIDE_INSIDE, SIDE_OUTSIDE, VERDICT_DROP, VERDICT_PASS } from "../abi/codes";
import {
  C_CSUM_PARTIAL, C_GSO_BYTES, C_GSO_RX, C_PASS_BYTES_INSIDE, C_PASS_BYTES_OUTSIDE, C_PASS_INSIDE, C_PASS_OUTSIDE,
  C_RX_BYTES_INSIDE, C_RX_BYTES_OUTSIDE, C_RX_INSIDE, C_RX_OUTSIDE,
} from "../abi/counters";
import { acctOn, extraVerdicts, flowAcct, groOn, lens, slotCount, slotSize, slots, verdicts, vnetHdrs, vnetOn, VNET_STRIDE } from "../layout";
import { groBatch } from "./gro";
import { FLOW_ACCT_SIZE } from "../abi/records";
import {
  ipDst, ipId, ipSrc, ipv4Check,
} from "../wire/ipv4";
import { CTX_FRAG_OFFSET, CTX_HLEN, CTX_L4_PARTIAL, CTX_MORE_FRAGS, CTX_PROTO, CTX_TOTAL, CTX_VNET, packetContext } from "../wire/context";
import { L4_DST_PORT, L4_SRC_PORT, port } from "../wire/l4";
import { VNET_GSO_UDP_L4, VNET_MAX_PACKET, vnetCheck, vnetGsoType } from "../wire/vnet";
import { l4Check } from "../wire/l4";
import { routedVerdict, ruleKeys } from "./filter";
import { fragFollow, fragHoldReap, fragL4Key, fragNoteFirst, fragSweep } from "./fragments";
import { extraLen, extraPending, extraReap, extraSlot, splitMoved, splitSlot, splitsCount, usoSplit } from "./segment";
import { Drop } from "../abi/reasons";
import { dispatchIn, dispatchOut } from "./registry";
import { ttlCompensate } from "./rewrite";
import { countAdd, dropped, isLanAddr, isMartian, isRouterLan, wanAddr } from "./state";
import { hairpin } from "./hairpin";
import { espSweep } from "../vpn/esp";
import { IKE_PORT, ikeSweep } from "../vpn/isakmp";
import { callSweep } from "../vpn/pptp";
import { flowWarmIn, flowSweep, flowWarmOut, flowWarmSelect, rec } from "./table";

/**
 * The virtio_net_hdr of a TUN with offloads (wire/vnet.ts): checked against
 * the packet, counted. A super-packet is then translated like one packet:
 * its one header is every segment's header, its TCP flags and sequence range
 * those of the segments together, and the header goes back out unchanged
 * (the IP header length, hence csum_start, never changes). A UDP super-packet
 * (USO) to or from port 500 is cut into its datagrams (nat/segment.ts): IKE
 * is routed by each datagram's cookies, and the segments of one super-packet
 * may carry different ones; the first goes on here as a plain packet.
 */
function offloadCheck(p: usize, ctx: usize): u32 {
  const r = vnetCheck(ctx);
  if (r != Drop.NONE) return r;
  const h = <usize>load<u32>(ctx, CTX_VNET);
  const gso = vnetGsoType(h);
  if (load<u32>(ctx, CTX_L4_PARTIAL) != 0) countAdd(C_CSUM_PARTIAL, 1);
  if (gso != 0) {
    countAdd(C_GSO_RX, 1);
    countAdd(C_GSO_BYTES, <i64>load<u32>(ctx, CTX_TOTAL));
    if (gso == VNET_GSO_UDP_L4) {
      const l4 = p + load<u32>(ctx, CTX_HLEN);
      if (port(l4, L4_SRC_PORT) == IKE_PORT || port(l4, L4_DST_PORT) == IKE_PORT) return usoSplit(p, ctx);
    }
  }
  return Drop.NONE;
}

/** LAN (or the router itself) → WAN. */
function outbound(p: usize, len: u32, ctx: usize): u32 {
  let r = ipv4Check(p, len, ctx);
  if (r != Drop.NONE) return r;
  r = offloadCheck(p, ctx);
  if (r != Drop.NONE) return r;
  if (wanAddr == 0) return Drop.NO_WAN_ADDRESS;
  const src = ipSrc(p);
  if (src != wanAddr && !isLanAddr(src)) return Drop.BAD_SRC;
  // Never out of the WAN: our own address, multicast, broadcast, loopback,
  // 0/8, and nothing addressed to the LAN (it would carry a LAN address out,
  // translated or not). Fragments too. What comes for the WAN address or a
  // router address is NAT loopback's (nat/hairpin.ts) or dropped there.
  const dst = ipDst(p);
  if (dst == wanAddr) return hairpin(p, ctx, src, dst);
  if (isMartian(dst)) return Drop.BAD_DST;
  if (isLanAddr(dst) || isRouterLan(dst)) return hairpin(p, ctx, src, dst);
  const proto = load<u32>(ctx, CTX_PROTO);
  const hlen = load<u32>(ctx, CTX_HLEN);
  const l4 = p + hlen;
  const l4len = load<u32>(ctx, CTX_TOTAL) - hlen;
  const fragOffset = load<u32>(ctx, CTX_FRAG_OFFSET);
  const more = load<u32>(ctx, CTX_MORE_FRAGS) != 0;
  if (fragOffset != 0) return fragFollow(p, SIDE_INSIDE, proto, fragOffset, l4len, more);
  const first = more; // MF at offset 0: a first fragment
  r = l4Check(proto, l4, l4len, first);
  if (r != Drop.NONE) return r;
  const id = ipId(p);
  const key = first ? fragL4Key(proto, l4, l4len) : 0;
  r = dispatchOut(p, l4, l4len, proto, ctx);
  if (r != Drop.NONE) return r;
  if (first) return fragNoteFirst(p, SIDE_INSIDE, src, dst, id, proto, ipSrc(p), l4len, key);
  return Drop.NONE;
}

/** WAN → anything. */
function inbound(p: usize, len: u32, ctx: usize): u32 {
  let r = ipv4Check(p, len, ctx);
  if (r != Drop.NONE) return r;
  r = offloadCheck(p, ctx);
  if (r != Drop.NONE) return r;
  if (wanAddr == 0) return Drop.NO_WAN_ADDRESS;
  const src = ipSrc(p);
  const dst = ipDst(p);
  // A WAN packet claiming a LAN or our own source is spoofed, never outbound.
  if (src == wanAddr || isLanAddr(src) || isMartian(src)) return Drop.BAD_SRC;
  const proto = load<u32>(ctx, CTX_PROTO);
  const hlen = load<u32>(ctx, CTX_HLEN);
  const l4 = p + hlen;
  const l4len = load<u32>(ctx, CTX_TOTAL) - hlen;
  const fragOffset = load<u32>(ctx, CTX_FRAG_OFFSET);
  const more = load<u32>(ctx, CTX_MORE_FRAGS) != 0;
  // Later fragments follow their first (routed ones too: untranslated).
  if (fragOffset != 0) return fragFollow(p, SIDE_OUTSIDE, proto, fragOffset, l4len, more);
  const first = more;
  r = l4Check(proto, l4, l4len, first);
  if (r != Drop.NONE) return r;
  const id = ipId(p);
  const key = first ? fragL4Key(proto, l4, l4len) : 0;
  if (dst != wanAddr) {
    // Routed (untranslated) traffic only where a rule opens it, matched on
    // its ports or ICMP type and code like any rule.
    r = routedVerdict(proto, src, dst, ruleKeys(proto, l4), isLanAddr(dst));
    if (r == Drop.NONE && first) r = fragNoteFirst(p, SIDE_OUTSIDE, src, dst, id, proto, dst, l4len, key);
    return r;
  }
  r = dispatchIn(p, l4, l4len, proto, ctx);
  if (r == Drop.NONE && first) r = fragNoteFirst(p, SIDE_OUTSIDE, src, dst, id, proto, ipDst(p), l4len, key);
  return r;
}

/** Processes `n` packets in slots 0..n-1 read from one side; returns how many pass. */
export function processBatch(n: u32, side: u32): u32 {
  if (n > slotCount) n = slotCount;
  const maxLen = vnetOn ? VNET_MAX_PACKET : slotSize;
  fragHoldReap(); // the fragments the last batch released were written after it
  extraReap();    // and so were its extra packets
  warmBatch(n, side);
  let passed: u32 = 0;
  // Bytes for the metrics: summed in registers, added to the counters once per batch.
  let bytesRead: i64 = 0;
  let bytesPassed: i64 = 0;
  countAdd(side == SIDE_INSIDE ? C_RX_INSIDE : C_RX_OUTSIDE, <i64>n);
  for (let i: u32 = 0; i < n; i++) {
    const p = slots + <usize>i * slotSize;
    const len = load<u32>(lens + (<usize>i << 2));
    store<u32>(packetContext, vnetOn ? <u32>(vnetHdrs + <usize>i * VNET_STRIDE) : 0, CTX_VNET);
    store<u32>(packetContext, 0, CTX_L4_PARTIAL);
    flowWarmSelect(<i32>i); // its key and hash, as warmBatch found them this batch
    bytesRead += len;
    const pass = len <= maxLen ? judge(p, len, side) : refuse(Drop.OVERSIZE, side, p);
    store<u8>(verdicts + i, pass ? VERDICT_PASS : VERDICT_DROP);
    if (pass) {
      passed++;
      bytesPassed += len;
    }
  }
  flowWarmSelect(-1);
  // Option gro: same-flow datagrams of the batch leave as one UDP GSO write each (nat/gro.ts).
  // Every batch: its links are cleared even when nothing can merge (the addon reads the last batch's otherwise).
  if (groOn && vnetOn) groBatch(n, passed);
  if (extraPending() != 0) extrasRun(side);
  // Incremental expiry: a bounded slice of the table per batch.
  flowSweep((n >>> 1) + 8);
  espSweep(8); ikeSweep(8); callSweep(8); fragSweep(8);
  countAdd(side == SIDE_INSIDE ? C_PASS_INSIDE : C_PASS_OUTSIDE, <i64>passed);
  countAdd(side == SIDE_INSIDE ? C_RX_BYTES_INSIDE : C_RX_BYTES_OUTSIDE, bytesRead);
  countAdd(side == SIDE_INSIDE ? C_PASS_BYTES_INSIDE : C_PASS_BYTES_OUTSIDE, bytesPassed);
  return passed;
}

/** One packet through its side's path: TTL compensated when it passes, the drop counted when not. */
@inline function judge(p: usize, len: u32, side: u32): bool {
  const r = side == SIDE_INSIDE ? outbound(p, len, packetContext) : inbound(p, len, packetContext);
  if (r != Drop.NONE) return refuse(r, side, p);
  ttlCompensate(p);
  return true;
}

@inline function refuse(r: u32, side: u32, p: usize): bool {
  dropped(r, side, p);
  return false;
}

/**
 * The datagrams cut from this batch's super-packets beyond their first
 * (nat/segment.ts): each handled like a packet read after the batch, with
 * its own verdict in the extra ring and its own counts (rx = pass + drops).
 */
function extrasRun(side: u32): void {
  const n = extraPending();
  let passed: u32 = 0;
  let bytesPassed: i64 = 0;
  for (let j: u32 = 0; j < n; j++) {
    const q = extraSlot(j);
    const len = extraLen(j);
    store<u32>(packetContext, 0, CTX_VNET);
    store<u32>(packetContext, 0, CTX_L4_PARTIAL);
    if (judge(q, len, side)) {
      store<u8>(extraVerdicts + j, VERDICT_PASS);
      passed++;
      bytesPassed += len;
    }
  }
  // A cut slot whose first datagram passed was counted above with the super-packet's read length.
  for (let j: u32 = 0, k = splitsCount(); j < k; j++) {
    if (load<u8>(verdicts + splitSlot(j)) == VERDICT_PASS) bytesPassed -= <i64>splitMoved(j);
  }
  countAdd(side == SIDE_INSIDE ? C_RX_INSIDE : C_RX_OUTSIDE, <i64>n);
  countAdd(side == SIDE_INSIDE ? C_PASS_INSIDE : C_PASS_OUTSIDE, <i64>passed);
  countAdd(side == SIDE_INSIDE ? C_PASS_BYTES_INSIDE : C_PASS_BYTES_OUTSIDE, bytesPassed);
}

// Wasm has no prefetch instruction, but loads whose results are only summed
// let the CPU keep many cache misses in flight at once, where the real pass
// would wait for them one packet at a time (VPP's dual-loop idea). Reading
// slot bytes without validation is safe here: slots are fixed memory, and
// a garbage hash only warms a useless line.
let sink: u32 = 0;
function warmBatch(n: u32, side: u32): void {
  let acc: u32 = 0;
  for (let i: u32 = 0; i < n; i++) {
    const p = slots + <usize>i * slotSize;
    const l4 = p + ((<usize>load<u8>(p) & 0xf) << 2);
    const proto = <u32>load<u8>(p, 9);
    const sp = <u32>bswap<u16>(load<u16>(l4));
    const dp = <u32>bswap<u16>(load<u16>(l4, 2));
    const e = side == SIDE_INSIDE
      ? flowWarmOut(i, proto, load<u32>(p, 12), sp, load<u32>(p, 16), dp) // the lookup takes this hash again (table.ts)
      : flowWarmIn(i, proto, dp, load<u32>(p, 12), sp);
    store<u32>(warmIdx + (<usize>i << 2), e);
    acc += e;
  }
  for (let i: u32 = 0; i < n; i++) {
    const e = load<u32>(warmIdx + (<usize>i << 2));
    if (e != 0) {
      acc += load<u32>(rec(e - 1));
      if (acctOn) acc += load<u32>(flowAcct + <usize>(e - 1) * FLOW_ACCT_SIZE); // its byte counters: another line
    }
  }
  sink = acc;
}
const warmIdx: usize = memory.data(256 * 4);
