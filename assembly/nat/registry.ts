// The protocol handler table, in the spirit of libalias' proto_handler
// list: one place says which handler owns which IP protocol, each handler
// lives in a file of its own and answers Drop.NONE (pass, maybe rewritten)
// or a Drop reason. The VPN handlers (esp, ah, gre, isakmp on UDP 500,
// natt on UDP 4500, pptp on TCP 1723) register here.
//
//   proto  outbound (LAN → WAN)   inbound (WAN → WAN address)
//   TCP    masq.natOut            masq.natIn
//   UDP    masq.natOut            masq.natIn
//   ICMP   icmp.icmpOut           icmp.icmpIn
//   other  PROTO_UNSUPPORTED      rules (router endpoint) or NO_FLOW

import { PROTO_ICMP, PROTO_TCP, PROTO_UDP, ipDst, ipSrc } from "../wire/ipv4";
import { DEST_ROUTER, TARGET_ACCEPT, TARGET_NONE, TARGET_REJECT, ZONE_WAN, ruleMatch } from "./filter";
import { icmpIn, icmpOut } from "./icmp";
import { natIn, natOut } from "./masq";
import { Drop } from "./reasons";
import { count, C_LOCAL_ACCEPT } from "./state";

export function dispatchOut(p: usize, l4: usize, l4len: u32, proto: u32, headerPresent: bool): u32 {
  switch (proto) {
    case PROTO_TCP: return natOut(p, l4, proto, 0, headerPresent);
    case PROTO_UDP: return natOut(p, l4, proto, 1, headerPresent);
    case PROTO_ICMP: return icmpOut(p, l4, l4len);
    default: return Drop.PROTO_UNSUPPORTED;
  }
}

export function dispatchIn(p: usize, l4: usize, l4len: u32, proto: u32, headerPresent: bool): u32 {
  switch (proto) {
    case PROTO_TCP: return natIn(p, l4, proto, 0, headerPresent);
    case PROTO_UDP: return natIn(p, l4, proto, 1, headerPresent);
    case PROTO_ICMP: return icmpIn(p, l4, l4len);
    default: {
      const target = ruleMatch(ZONE_WAN, DEST_ROUTER, proto, ipSrc(p), ipDst(p), 0);
      if (target == TARGET_ACCEPT) { count(C_LOCAL_ACCEPT); return Drop.NONE; }
      if (target == TARGET_NONE) return Drop.NO_FLOW;
      return target == TARGET_REJECT ? Drop.POLICY_REJECT : Drop.POLICY_DROP;
    }
  }
}
