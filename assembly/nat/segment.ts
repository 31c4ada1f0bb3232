// Software segmentation of UDP GSO (USO) super-packets, for the one handler
// that reads every datagram's payload to route it: IKE on UDP 500 goes by
// each datagram's cookies (vpn/isakmp.ts), and the datagrams of one
// super-packet may name different exchanges, even different LAN hosts. Such
// a super-packet is cut here into its gso_size datagrams the way the kernel
// cuts it on the way out (__udp_gso_segment): each with its own IPv4 header
// (total length, the ID plus its index, header checksum adjusted) and UDP
// header (length, checksum). Everything else a USO super-packet carries
// (NAT-T on 4500 included) is NAPT on the 5-tuple every datagram shares, and
// is translated whole (core.ts).
//
// The first datagram stays in the batch slot with its virtio header zeroed:
// from here on a plain packet, handled in its place in the batch. The
// others go to the extra output ring: handled after the batch's own slots
// (core.ts extrasRun), each through the same per-packet path as any packet
// read, and written to the same TUN right after the batch (the supervisor,
// extraCount() > 0, as with released fragments). A later packet of the same
// batch can so overtake them; IKE over UDP takes reordering (each message
// stands alone, and IKEv2 fragments are reassembled in any order).
//
// Checksums: the super-packet's UDP field is a NEEDS_CSUM partial sum
// (wire/vnet.ts: the pseudo header's, with the super-packet's length, for
// the kernel to finish over the payload). The datagrams leave as plain
// packets that nobody finishes, so their UDP checksums are computed in full
// here over pseudo header, UDP header and payload: the one place the engine
// sums a payload, for rare traffic (no IKE daemon sends with UDP_SEGMENT;
// UDP GRO forwarding on the WAN side makes such packets). The IP header
// checksum is adjusted (RFC 1624) from the one ipv4Check verified.
//
// Refused: a UDP length that is not the super-packet's (vnet_bad_gso, like
// any inconsistent header); datagrams longer than an extra slot (2 KiB), or
// more than the ring has left this batch (vnet_gso_ike).

import { PROTO_UDP, VERDICT_DROP } from "../abi/codes";
import { C_USO_DATAGRAMS, C_USO_SPLIT } from "../abi/counters";
import { Drop } from "../abi/reasons";
import { extraLens, extraSlots, extraVerdicts, lens, vnetHdrs, EXTRA_CAP, SLOT_SIZE, VNET_STRIDE } from "../layout";
import { adjust16, sumBytes } from "../wire/checksum";
import { CTX_HLEN, CTX_L4_PARTIAL, CTX_TOTAL, CTX_VNET } from "../wire/context";
import { IP_CSUM, IP_DST, IP_ID, IP_SRC, IP_TOTAL_LEN, ipv4Check } from "../wire/ipv4";
import { UDP_CSUM, UDP_HEADER, UDP_LEN, port } from "../wire/l4";
import { VNET_GSO_SIZE, VNET_HDR_SIZE } from "../wire/vnet";
import { countAdd } from "./state";

let extraCount: u32 = 0;
// Slots whose super-packet was cut this batch, with the bytes that went to
// the ring: the batch counts a slot's read length as passed bytes when its
// first datagram passes, and extrasRun takes these back (GSO_SLOT_COUNT at most).
const splits: usize = memory.data(64 * 8); // u32 slot index, u32 bytes moved
let splitCount: u32 = 0;

@inline export function extraSlot(j: u32): usize { return extraSlots + <usize>j * SLOT_SIZE; }
@inline export function extraLen(j: u32): u32 { return load<u32>(extraLens + (<usize>j << 2)); }

/** Packets in the extra output ring this batch (slots 0..n-1, each with its verdict). */
export function extraPending(): u32 { return extraCount; }

/** Start of a batch: the last batch's extra packets have been written; the ring is empty again. */
export function extraReap(): void { extraCount = 0; splitCount = 0; }

/** How many slots were cut this batch; the j-th one's slot index and the bytes it lost to the ring. */
export function splitsCount(): u32 { return splitCount; }
@inline export function splitSlot(j: u32): u32 { return load<u32>(splits + (<usize>j << 3)); }
@inline export function splitMoved(j: u32): u32 { return load<u32>(splits + (<usize>j << 3), 4); }

/**
 * Finishes datagram `k` of a super-packet, its headers and `n` payload bytes
 * in place at `q`: lengths, IP ID + k, checksums. Returns its total length.
 */
function datagramFinish(q: usize, hlen: u32, n: u32, k: u32): u32 {
  const total = hlen + UDP_HEADER + n;
  const oldLen = <u32>load<u16>(q, IP_TOTAL_LEN);
  const newLen = <u32>bswap<u16>(<u16>total);
  store<u16>(q, <u16>newLen, IP_TOTAL_LEN);
  let c = adjust16(load<u16>(q, IP_CSUM), oldLen, newLen);
  if (k != 0) {
    // The kernel numbers a super-packet's segments ID, ID + 1, … (inet_gso_segment).
    const oldId = <u32>load<u16>(q, IP_ID);
    const newId = <u32>bswap<u16>(<u16>(<u32>bswap<u16>(<u16>oldId) + k));
    store<u16>(q, <u16>newId, IP_ID);
    c = adjust16(c, oldId, newId);
  }
  store<u16>(q, <u16>c, IP_CSUM);
  const u = q + hlen;
  const ulen = <u32>bswap<u16>(<u16>(UDP_HEADER + n));
  store<u16>(u, <u16>ulen, UDP_LEN);
  store<u16>(u, 0, UDP_CSUM);
  // Pseudo header (RFC 768): both addresses, zero and the protocol, the UDP
  // length; words as load<u16> reads them, like the data (checksum.ts).
  const pseudo = <u32>load<u16>(q, IP_SRC) + <u32>load<u16>(q, IP_SRC + 2) + <u32>load<u16>(q, IP_DST) +
    <u32>load<u16>(q, IP_DST + 2) + (PROTO_UDP << 8) + ulen;
  let s = ~sumBytes(u, UDP_HEADER + n, pseudo) & 0xffff;
  if (s == 0) s = 0xffff; // RFC 768: a computed 0 is sent as all ones
  store<u16>(u, <u16>s, UDP_CSUM);
  return total;
}

/**
 * Cuts the USO super-packet in batch slot `p` (ipv4Check and vnetCheck
 * passed, its context in `ctx`) into its datagrams: the first stays in `p`
 * and `ctx` describes it afresh (a plain packet, complete checksum); the
 * others wait in the extra ring. Drop.NONE, or why not (nothing changed then).
 */
export function usoSplit(p: usize, ctx: usize): u32 {
  const h = <usize>load<u32>(ctx, CTX_VNET);
  const hlen = load<u32>(ctx, CTX_HLEN);
  const l4 = p + hlen;
  const l4len = load<u32>(ctx, CTX_TOTAL) - hlen;
  // vnetCheck made sure of UDP, gso_size > 0, the partial sum at the UDP checksum, no fragment.
  if (l4len < UDP_HEADER || port(l4, UDP_LEN) != l4len) return Drop.VNET_BAD_GSO;
  const gsoSize = <u32>load<u16>(h, VNET_GSO_SIZE);
  const hdr = hlen + UDP_HEADER;
  const payload = l4len - UDP_HEADER;
  const segs: u32 = payload <= gsoSize ? 1 : (payload + gsoSize - 1) / gsoSize;
  if (segs > 1 && (hdr + gsoSize > SLOT_SIZE || segs - 1 > EXTRA_CAP - extraCount)) return Drop.VNET_GSO_IKE;
  countAdd(C_USO_SPLIT, 1);
  countAdd(C_USO_DATAGRAMS, <i64>segs);
  // The later datagrams first, while the slot still holds the original headers.
  for (let k: u32 = 1; k < segs; k++) {
    const off = k * gsoSize;
    const n = payload - off < gsoSize ? payload - off : gsoSize;
    const q = extraSlot(extraCount);
    memory.copy(q, p, hdr);
    memory.copy(q + hdr, l4 + UDP_HEADER + off, n);
    store<u32>(extraLens + (<usize>extraCount << 2), datagramFinish(q, hlen, n, k));
    store<u8>(extraVerdicts + extraCount, VERDICT_DROP);
    extraCount++;
  }
  const total = load<u32>(ctx, CTX_TOTAL);
  const len = datagramFinish(p, hlen, payload < gsoSize ? payload : gsoSize, 0);
  // The slot's own header (slot i's at vnetHdrs + i × VNET_STRIDE) and read length: a plain packet.
  const slot = <u32>((h - vnetHdrs) / VNET_STRIDE);
  store<u32>(lens + (<usize>slot << 2), len);
  if (segs > 1 && splitCount < 64) {
    store<u32>(splits + (<usize>splitCount << 3), slot);
    store<u32>(splits + (<usize>splitCount << 3), total - len, 4);
    splitCount++;
  }
  memory.fill(h, 0, VNET_HDR_SIZE);
  store<u32>(ctx, 0, CTX_VNET);
  store<u32>(ctx, 0, CTX_L4_PARTIAL);
  return ipv4Check(p, len, ctx);
}
