// Stateful filter policy: fw4-style `rule` sections, first match wins.
// Flows that exist are always allowed (like `ct state established accept`);
// rules are consulted only for traffic that would open something new.
// Defaults: LAN → WAN accept; WAN → router or LAN drop.
//
// Rule record (RULE_SIZE = 32 bytes):
//   0 u8 srcZone (0 wan, 1 lan)   1 u8 target   2 u8 destZone (0 router, 1 lan)
//   3 u8 anyProto   4 u16 proto   6 i16 icmpType (-1 any)
//   8 u32 srcNet  12 u32 srcMask  16 u32 dstNet  20 u32 dstMask
//  24 u16 portLo  26 u16 portHi   (host order; 0..65535 = any)

import {
  DEST_ROUTER, PROTO_ICMP, PROTO_TCP, PROTO_UDP, TARGET_ACCEPT, TARGET_NONE, TARGET_REJECT, ZONE_WAN,
} from "../abi/codes";
import { C_LOCAL_ACCEPT } from "../abi/counters";
import { rules, MAX_RULES, RULE_SIZE } from "../layout";
import { Drop } from "../abi/reasons";
import { count } from "./state";

let ruleCount: u32 = 0;

export function rulesClear(): void { ruleCount = 0; }

export function ruleAdd(srcZone: u32, destZone: u32, target: u32, proto: i32, icmpType: i32,
  srcNet: u32, srcMask: u32, dstNet: u32, dstMask: u32, portLo: u32, portHi: u32): i32 {
  if (ruleCount >= MAX_RULES) return -1;
  const r = rules + <usize>ruleCount * RULE_SIZE;
  store<u8>(r, <u8>srcZone, 0); store<u8>(r, <u8>target, 1); store<u8>(r, <u8>destZone, 2);
  store<u8>(r, proto < 0 ? 1 : 0, 3); store<u16>(r, <u16>(proto < 0 ? 0 : proto), 4);
  store<i16>(r, <i16>icmpType, 6);
  store<u32>(r, srcNet & srcMask, 8); store<u32>(r, srcMask, 12);
  store<u32>(r, dstNet & dstMask, 16); store<u32>(r, dstMask, 20);
  store<u16>(r, <u16>portLo, 24); store<u16>(r, <u16>portHi, 26);
  ruleCount++;
  return <i32>(ruleCount - 1);
}

/** `dport` is the destination port (TCP/UDP) or the ICMP type for ICMP. */
export function ruleMatch(srcZone: u32, destZone: u32, proto: u32, srcA: u32, dstA: u32, dport: u32): u32 {
  for (let i: u32 = 0; i < ruleCount; i++) {
    const r = rules + <usize>i * RULE_SIZE;
    if (load<u8>(r, 0) != srcZone || load<u8>(r, 2) != destZone) continue;
    if (load<u8>(r, 3) == 0 && load<u16>(r, 4) != proto) continue;
    if ((srcA & load<u32>(r, 12)) != load<u32>(r, 8)) continue;
    if ((dstA & load<u32>(r, 20)) != load<u32>(r, 16)) continue;
    if (proto == PROTO_TCP || proto == PROTO_UDP) {
      if (dport < <u32>load<u16>(r, 24) || dport > <u32>load<u16>(r, 26)) continue;
    } else if (proto == PROTO_ICMP) {
      const t = <i32>load<i16>(r, 6);
      if (t >= 0 && <u32>t != dport) continue;
    }
    return load<u8>(r, 1);
  }
  return TARGET_NONE;
}

/**
 * The verdict for WAN traffic to the router itself that no flow or forward
 * claimed: pass untranslated (counted as a local accept) when a rule
 * accepts it, else the rule's drop reason, else no_flow.
 */
export function routerVerdict(proto: u32, srcA: u32, dstA: u32, dport: u32): u32 {
  const target = ruleMatch(ZONE_WAN, DEST_ROUTER, proto, srcA, dstA, dport);
  if (target == TARGET_ACCEPT) { count(C_LOCAL_ACCEPT); return Drop.NONE; }
  if (target == TARGET_NONE) return Drop.NO_FLOW;
  return target == TARGET_REJECT ? Drop.POLICY_REJECT : Drop.POLICY_DROP;
}
