// The protocol handler table, in the spirit of libalias' proto_handler
// list: one place says which handler owns which traffic, each handler lives
// in a file of its own and answers Drop.NONE (pass, maybe rewritten) or a
// Drop reason.
//
//   traffic                    outbound (LAN → WAN)      inbound (WAN → WAN address)
//   TCP                        masq.natOut               masq.natIn
//   TCP port 1723 (PPTP ctrl)  + pptp.pptpOut            + pptp.pptpIn
//   UDP                        masq.natOut               masq.natIn
//   UDP from/to port 500 (IKE) isakmp.ikeOut             isakmp.ikeIn
//   UDP port 4500 (NAT-T)      masq (natt_timeout)       masq
//   ICMP                       icmp.icmpOut              icmp.icmpIn
//   ESP (50)                   esp.espOut                esp.espIn
//   AH (51)                    ah.ahOut                  ah.ahIn
//   GRE (47)                   gre.greOut                gre.greIn
//   any other protocol         protocol forward          protocol forward, rules

import { PROTO_AH, PROTO_ESP, PROTO_GRE, PROTO_ICMP, PROTO_TCP, PROTO_UDP } from "../abi/codes";
import { BIND_TCP, BIND_UDP } from "../abi/records";
import { CTX_MORE_FRAGS } from "../wire/context";
import { IP_DST, IP_SRC, ipDst, ipSrc } from "../wire/ipv4";
import { L4_DST_PORT, L4_SRC_PORT, TCP_OFF, port } from "../wire/l4";
import { ahIn, ahOut } from "../vpn/ah";
import { espIn, espOut } from "../vpn/esp";
import { dnatVerdict, lanForwardVerdict, routerVerdict } from "./filter";
import { protoForward } from "./forward";
import { greIn, greOut } from "../vpn/gre";
import { icmpIn, icmpOut } from "./icmp";
import { IKE_PORT, ikeIn, ikeOut } from "../vpn/isakmp";
import { natIn, natOut } from "./masq";
import { PPTP_PORT, pptpCheck, pptpIn, pptpOut } from "../vpn/pptp";
import { Drop } from "../abi/reasons";
import { rewriteAddr } from "./rewrite";
import { wanAddr } from "./state";

@inline function isPptp(l4: usize): bool {
  return port(l4, L4_SRC_PORT) == PPTP_PORT || port(l4, L4_DST_PORT) == PPTP_PORT;
}

function pptpChecked(l4: usize, l4len: u32): u32 {
  const payload = l4 + ((<usize>load<u8>(l4, TCP_OFF) >>> 4) << 2);
  return pptpCheck(payload, l4len - <u32>(payload - l4));
}

export function dispatchOut(p: usize, l4: usize, l4len: u32, proto: u32, ctx: usize): u32 {
  switch (proto) {
    case PROTO_TCP: {
      const pptp = isPptp(l4) && load<u32>(ctx, CTX_MORE_FRAGS) == 0;
      if (pptp) { const r = pptpChecked(l4, l4len); if (r != Drop.NONE) return r; }
      const lanA = ipSrc(p);
      const remA = ipDst(p);
      const r = natOut(p, l4, proto, BIND_TCP);
      if (r != Drop.NONE || !pptp) return r;
      return pptpOut(l4, l4len, lanA, remA);
    }
    case PROTO_UDP:
      if (port(l4, L4_SRC_PORT) == IKE_PORT) return ikeOut(p, l4, l4len);
      return natOut(p, l4, proto, BIND_UDP);
    case PROTO_ICMP: return icmpOut(p, l4, l4len, ctx);
    case PROTO_ESP: return espOut(p, l4, l4len);
    case PROTO_AH: return ahOut(p);
    case PROTO_GRE: return greOut(p, l4, l4len);
    default: {
      const src = ipSrc(p);
      if (src == wanAddr) return Drop.NONE; // the router's own, untranslated
      if (protoForward(proto) == src) {
        // The server behind a protocol forward sends its protocol out: forward rules first.
        const verdict = lanForwardVerdict(proto, src, ipDst(p), 0);
        if (verdict != Drop.NONE) return verdict;
        rewriteAddr(p, IP_SRC, wanAddr);
        return Drop.NONE;
      }
      return Drop.PROTO_UNSUPPORTED;
    }
  }
}

export function dispatchIn(p: usize, l4: usize, l4len: u32, proto: u32, ctx: usize): u32 {
  switch (proto) {
    case PROTO_TCP: {
      const pptp = isPptp(l4) && load<u32>(ctx, CTX_MORE_FRAGS) == 0;
      if (pptp) { const r = pptpChecked(l4, l4len); if (r != Drop.NONE) return r; }
      const remA = ipSrc(p);
      const r = natIn(p, l4, proto, BIND_TCP);
      if (r != Drop.NONE || !pptp || ipDst(p) == wanAddr) return r;
      return pptpIn(l4, l4len, remA);
    }
    case PROTO_UDP:
      if (port(l4, L4_DST_PORT) == IKE_PORT) return ikeIn(p, l4, l4len);
      return natIn(p, l4, proto, BIND_UDP);
    case PROTO_ICMP: return icmpIn(p, l4, l4len, ctx);
    case PROTO_ESP: return espIn(p, l4, l4len);
    case PROTO_AH: return ahIn(p);
    case PROTO_GRE: return greIn(p, l4, l4len);
    default: {
      const fwd = protoForward(proto);
      if (fwd != 0) {
        const verdict = dnatVerdict(proto, ipSrc(p), fwd, 0);
        if (verdict != Drop.NONE) return verdict;
        rewriteAddr(p, IP_DST, fwd);
        return Drop.NONE;
      }
      return routerVerdict(proto, ipSrc(p), ipDst(p), 0);
    }
  }
}
