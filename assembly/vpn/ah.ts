// AH (IP 51) authenticates the IP addresses (RFC 4302 §3.3.3.1), so a
// translated AH packet can only fail at the peer: drop it, count it, and log
// once per LAN host / server pair with the reason. AH that needs no
// translation passes: the router's own, and routed traffic a rule accepts
// (core.ts handles the latter before any handler runs).

import { PROTO_AH, SIDE_INSIDE, SIDE_OUTSIDE } from "../abi/codes";
import { EV_AH_REFUSED } from "../abi/counters";
import { ipDst, ipSrc } from "../wire/ipv4";
import { lanForwardVerdict, routerVerdict } from "../nat/filter";
import { protoForward } from "../nat/forward";
import { Drop } from "../abi/reasons";
import { eventPush, wanAddr } from "../nat/state";
import { hash1 } from "../nat/hash";

const SEEN_SLOTS: u32 = 256;
const seen: usize = memory.data(SEEN_SLOTS * 8);

function logOnce(lanA: u32, remA: u32, side: u32): void {
  // keyed (nat/hash.ts): nobody aims pairs at one slot to have them logged over and over
  const h = hash1(<u64>lanA | (<u64>remA << 32)) & (SEEN_SLOTS - 1);
  const s = seen + (<usize>h << 3);
  if (load<u32>(s) == lanA && load<u32>(s, 4) == remA) return;
  store<u32>(s, lanA); store<u32>(s, remA, 4);
  eventPush(EV_AH_REFUSED, Drop.AH_TRANSLATED, PROTO_AH, side, lanA, remA, 0, 0, 0, 0);
}

export function ahOut(p: usize): u32 {
  const lanA = ipSrc(p);
  if (lanA == wanAddr) return Drop.NONE; // the router's own AH: untouched
  // A rule that drops this host's traffic says so first (then it is policy, not AH).
  const verdict = lanForwardVerdict(PROTO_AH, lanA, ipDst(p), 0);
  if (verdict != Drop.NONE) return verdict;
  logOnce(lanA, ipDst(p), SIDE_INSIDE);
  return Drop.AH_TRANSLATED;
}

export function ahIn(p: usize): u32 {
  // To the router itself (its own IPsec), untranslated: rules decide.
  if (routerVerdict(PROTO_AH, ipSrc(p), ipDst(p), 0) == Drop.NONE) return Drop.NONE;
  // A protocol forward of AH would still need the destination rewritten.
  logOnce(protoForward(PROTO_AH) != 0 ? 1 : 0, ipSrc(p), SIDE_OUTSIDE);
  return Drop.AH_TRANSLATED;
}
