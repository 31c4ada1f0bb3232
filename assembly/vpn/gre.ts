// Enhanced GRE (RFC 2637 §4.1), the data channel of PPTP: demultiplexed by
// the Call ID in the key field. Inbound packets carry the alias the PPTP
// handler gave the LAN host's call: it is mapped back and the packet goes
// to that host. Outbound packets carry the remote's Call ID, unchanged.
// Anything but version 1 / protocol 0x880B / key present is not PPTP: it
// goes to a protocol forward (redirect proto gre) when there is one, else
// it is dropped and counted.
//
//   0 C R K S s Recur | A Flags Ver(3)   2 Protocol Type 0x880B
//   4 Key: Payload Length (16)           6 Key: Call ID (16)
//   8 Sequence Number (if S)   Acknowledgment Number (if A)

import { PROTO_GRE } from "../abi/codes";
import { IP_DST, IP_SRC, ipDst, ipSrc } from "../wire/ipv4";
import { protoForward } from "../nat/forward";
import { callFindIn, callFindOut, callLanAddr, callLanId, callTouch } from "./pptp";
import { dnatVerdict, lanForwardVerdict } from "../nat/filter";
import { Drop } from "../abi/reasons";
import { rewriteAddr } from "../nat/rewrite";
import { wanAddr } from "../nat/state";

const GRE_HEADER: u32 = 8;
const GRE_PPP: u32 = 0x880b;
export const GRE_CALL_ID: u32 = 6; // the key's Call ID (u16)

function enhanced(l4: usize, l4len: u32): bool {
  if (l4len < GRE_HEADER) return false;
  const flags = <u32>load<u8>(l4);
  const ver = <u32>load<u8>(l4, 1) & 7;
  // C and R clear, K set, no recursion, version 1, PPP.
  return (flags & 0xc0) == 0 && (flags & 0x20) != 0 && (flags & 0x07) == 0 && ver == 1 &&
    <u32>bswap<u16>(load<u16>(l4, 2)) == GRE_PPP;
}

export function greOut(p: usize, l4: usize, l4len: u32): u32 {
  const lanA = ipSrc(p);
  if (lanA == wanAddr) return Drop.NONE; // the router's own GRE
  // Forward rules (src lan, dest wan). GRE has no ports: a rule's answer is
  // the same for every packet between two hosts, so asking it per packet
  // equals asking it for the first.
  const verdict = lanForwardVerdict(PROTO_GRE, lanA, ipDst(p), 0);
  if (verdict != Drop.NONE) return verdict;
  if (!enhanced(l4, l4len)) {
    if (protoForward(PROTO_GRE) == lanA) { rewriteAddr(p, IP_SRC, wanAddr); return Drop.NONE; }
    return Drop.GRE_BAD_HEADER;
  }
  // This host's call with that remote Call ID (another host's lingering call may share it).
  const v = callFindOut(ipDst(p), <u32>bswap<u16>(load<u16>(l4, GRE_CALL_ID)), lanA);
  if (v == 0) return Drop.GRE_NO_CALL;
  callTouch(v, true);
  rewriteAddr(p, IP_SRC, wanAddr);
  return Drop.NONE;
}

/** GRE for the server behind the router (redirect proto gre), unless a forward rule (src wan, dest lan) drops it. */
function toForward(p: usize, fwd: u32): u32 {
  const verdict = dnatVerdict(PROTO_GRE, ipSrc(p), fwd, 0);
  if (verdict != Drop.NONE) return verdict;
  rewriteAddr(p, IP_DST, fwd);
  return Drop.NONE;
}

export function greIn(p: usize, l4: usize, l4len: u32): u32 {
  if (!enhanced(l4, l4len)) {
    const fwd = protoForward(PROTO_GRE);
    if (fwd != 0) return toForward(p, fwd);
    return Drop.GRE_BAD_HEADER;
  }
  const v = callFindIn(ipSrc(p), <u32>bswap<u16>(load<u16>(l4, GRE_CALL_ID)));
  if (v == 0) {
    const fwd = protoForward(PROTO_GRE);
    if (fwd != 0) return toForward(p, fwd);
    return Drop.GRE_NO_CALL;
  }
  callTouch(v, false);
  // GRE here carries no checksum (C clear): only the key changes.
  store<u16>(l4, bswap<u16>(<u16>callLanId(v)), GRE_CALL_ID);
  rewriteAddr(p, IP_DST, callLanAddr(v));
  return Drop.NONE;
}
