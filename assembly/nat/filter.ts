// Stateful filter policy: fw4 `rule` sections, first match wins, with
// fw4's meaning for every shape the config accepts:
//
//   input   (ZONE_WAN, DEST_ROUTER)   WAN → the router: what no flow or forward claimed
//   forward (ZONE_WAN, DEST_FORWARD)  WAN → a LAN host: routed to a LAN address, or
//                                     through a redirect / protocol forward, matched
//                                     after DNAT (the LAN host's address and port)
//   forward (ZONE_LAN, DEST_FORWARD)  a LAN host → the WAN, in every outbound handler
//                                     before translation; the router's own traffic
//                                     (fw4's output chain) never matches
//
// Rules decide only what opens something new: traffic of a flow, an
// association or a call that exists passes, as fw4's `ct state
// established,related accept` comes before every rule (and ICMP errors are
// related). Without a matching rule: LAN → WAN and forwards accept, WAN →
// router and routed WAN → LAN drop.
//
// A rule matches on the L4 keys of the packet, packed in one u32 by
// ruleKeys(): TCP/UDP (source port << 16) | destination port, ICMP
// (code << 16) | type, other protocols 0 (no keys to match).
//
// Rule record: RULE_SIZE bytes, fields RULE_* in abi/records.ts.

import {
  DEST_FORWARD, DEST_ROUTER, PROTO_ICMP, PROTO_TCP, PROTO_UDP, TARGET_ACCEPT, TARGET_DROP, TARGET_NONE, TARGET_REJECT,
  ZONE_LAN, ZONE_WAN,
} from "../abi/codes";
import { C_LOCAL_ACCEPT } from "../abi/counters";
import {
  RULE_ANY_PROTO, RULE_DEST_ZONE, RULE_DPORT_HI, RULE_DPORT_LO, RULE_DST_MASK, RULE_DST_NET, RULE_ICMP_CODE,
  RULE_ICMP_TYPE, RULE_PROTO, RULE_SIZE, RULE_SPORT_HI, RULE_SPORT_LO, RULE_SRC_MASK, RULE_SRC_NET, RULE_SRC_ZONE,
  RULE_TARGET,
} from "../abi/records";
import { rules, MAX_RULES } from "../layout";
import { Drop } from "../abi/reasons";
import { count, wanAddr } from "./state";

let ruleCount: u32 = 0;

export function rulesClear(): void { ruleCount = 0; }

/** One rule: protocol (-1 any), ICMP type and code (-1 any), networks, source and destination port ranges. */
export function ruleAdd(srcZone: u32, destZone: u32, target: u32, proto: i32, icmpType: i32, icmpCode: i32,
  srcNet: u32, srcMask: u32, dstNet: u32, dstMask: u32, sportLo: u32, sportHi: u32, dportLo: u32, dportHi: u32): i32 {
  if (ruleCount >= MAX_RULES) return -1;
  if (sportLo > sportHi || sportHi > 65535 || dportLo > dportHi || dportHi > 65535) return -1;
  const r = rules + <usize>ruleCount * RULE_SIZE;
  store<u8>(r, <u8>srcZone, RULE_SRC_ZONE); store<u8>(r, <u8>target, RULE_TARGET); store<u8>(r, <u8>destZone, RULE_DEST_ZONE);
  store<u8>(r, proto < 0 ? 1 : 0, RULE_ANY_PROTO); store<u16>(r, <u16>(proto < 0 ? 0 : proto), RULE_PROTO);
  store<i16>(r, <i16>icmpType, RULE_ICMP_TYPE); store<i16>(r, <i16>icmpCode, RULE_ICMP_CODE);
  store<u32>(r, srcNet & srcMask, RULE_SRC_NET); store<u32>(r, srcMask, RULE_SRC_MASK);
  store<u32>(r, dstNet & dstMask, RULE_DST_NET); store<u32>(r, dstMask, RULE_DST_MASK);
  store<u16>(r, <u16>sportLo, RULE_SPORT_LO); store<u16>(r, <u16>sportHi, RULE_SPORT_HI);
  store<u16>(r, <u16>dportLo, RULE_DPORT_LO); store<u16>(r, <u16>dportHi, RULE_DPORT_HI);
  ruleCount++;
  return <i32>(ruleCount - 1);
}

/** The L4 keys rules match on (see above). The L4 header must have been checked (l4Check). */
@inline export function ruleKeys(proto: u32, l4: usize): u32 {
  if (proto == PROTO_TCP || proto == PROTO_UDP) return (<u32>bswap<u16>(load<u16>(l4)) << 16) | <u32>bswap<u16>(load<u16>(l4, 2));
  if (proto == PROTO_ICMP) return (<u32>load<u8>(l4, 1) << 16) | <u32>load<u8>(l4);
  return 0;
}

/** The keys with another destination port: after DNAT, rules see the LAN host's port. */
@inline export function keysToPort(keys: u32, dport: u32): u32 { return (keys & 0xffff0000) | (dport & 0xffff); }

/** The target of the first rule matching, or TARGET_NONE. */
export function ruleMatch(srcZone: u32, destZone: u32, proto: u32, srcA: u32, dstA: u32, keys: u32): u32 {
  for (let i: u32 = 0; i < ruleCount; i++) {
    const r = rules + <usize>i * RULE_SIZE;
    if (load<u8>(r, RULE_SRC_ZONE) != srcZone || load<u8>(r, RULE_DEST_ZONE) != destZone) continue;
    if (load<u8>(r, RULE_ANY_PROTO) == 0 && load<u16>(r, RULE_PROTO) != proto) continue;
    if ((srcA & load<u32>(r, RULE_SRC_MASK)) != load<u32>(r, RULE_SRC_NET)) continue;
    if ((dstA & load<u32>(r, RULE_DST_MASK)) != load<u32>(r, RULE_DST_NET)) continue;
    if (proto == PROTO_TCP || proto == PROTO_UDP) {
      const sport = keys >>> 16;
      const dport = keys & 0xffff;
      if (dport < <u32>load<u16>(r, RULE_DPORT_LO) || dport > <u32>load<u16>(r, RULE_DPORT_HI)) continue;
      if (sport < <u32>load<u16>(r, RULE_SPORT_LO) || sport > <u32>load<u16>(r, RULE_SPORT_HI)) continue;
    } else if (proto == PROTO_ICMP) {
      const t = <i32>load<i16>(r, RULE_ICMP_TYPE);
      if (t >= 0 && <u32>t != (keys & 0xff)) continue;
      const c = <i32>load<i16>(r, RULE_ICMP_CODE);
      if (c >= 0 && <u32>c != (keys >>> 16)) continue;
    }
    return load<u8>(r, RULE_TARGET);
  }
  return TARGET_NONE;
}

@inline function policy(target: u32): u32 {
  return target == TARGET_REJECT ? Drop.POLICY_REJECT : Drop.POLICY_DROP;
}

/**
 * The verdict for WAN traffic to the router itself that no flow or forward
 * claimed (input): pass untranslated (counted as a local accept) when a rule
 * accepts it, else the rule's drop reason, else no_flow.
 */
export function routerVerdict(proto: u32, srcA: u32, dstA: u32, keys: u32): u32 {
  const target = ruleMatch(ZONE_WAN, DEST_ROUTER, proto, srcA, dstA, keys);
  if (target == TARGET_ACCEPT) { count(C_LOCAL_ACCEPT); return Drop.NONE; }
  if (target == TARGET_NONE) return Drop.NO_FLOW;
  return policy(target);
}

/**
 * Something new from a LAN host toward the WAN (forward, src lan dest wan),
 * before it is translated: passes unless a rule drops or rejects it. The
 * router's own traffic is fw4's output chain, not forwarded: never matched.
 */
export function lanForwardVerdict(proto: u32, srcA: u32, dstA: u32, keys: u32): u32 {
  if (ruleCount == 0 || srcA == wanAddr) return Drop.NONE;
  const target = ruleMatch(ZONE_LAN, DEST_FORWARD, proto, srcA, dstA, keys);
  return target == TARGET_DROP || target == TARGET_REJECT ? policy(target) : Drop.NONE;
}

/**
 * Something new from the WAN that a redirect or protocol forward sends to
 * `lanA` (forward, src wan dest lan, matched after DNAT: `keys` carry the
 * LAN host's port): the forward accepts it unless a rule drops or rejects it.
 */
export function dnatVerdict(proto: u32, srcA: u32, lanA: u32, keys: u32): u32 {
  if (ruleCount == 0) return Drop.NONE;
  const target = ruleMatch(ZONE_WAN, DEST_FORWARD, proto, srcA, lanA, keys);
  return target == TARGET_DROP || target == TARGET_REJECT ? policy(target) : Drop.NONE;
}

/**
 * Routed (untranslated) WAN traffic to an address that is not the WAN
 * address: to a LAN host (forward) or another address of the router
 * (input); only a rule opens it.
 */
export function routedVerdict(proto: u32, srcA: u32, dstA: u32, keys: u32, toLan: bool): u32 {
  const target = ruleMatch(ZONE_WAN, toLan ? DEST_FORWARD : DEST_ROUTER, proto, srcA, dstA, keys);
  if (target == TARGET_ACCEPT) return Drop.NONE;
  if (target != TARGET_NONE) return policy(target);
  return toLan ? Drop.WAN_TO_LAN : Drop.NOT_FOR_US;
}
