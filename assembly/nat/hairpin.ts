// NAT loopback (fw4's `reflection` on a redirect): a LAN host that reaches a
// port forward through the WAN address gets the LAN server, both ways
// translated, so the server's answers come back through the router and the
// host sees them from the address it called:
//
//   host H:hp → W:fp     becomes  V:alias → S:sp   (V: the router's LAN address
//   server S:sp → V:alias becomes  W:fp → H:hp      for reflection_src internal,
//                                                   the WAN address W for external)
//
// The kernel hands exactly these packets to the inside TUN (src/net/routes.ts:
// LAN → W at a forwarded port, and a forward's server port → a router address
// at a masquerade pool port); they come back out of it and are routed on.
//
// A hairpin flow is an ordinary flow record with FL_HAIRPIN: lan = H:hp,
// remote = S:sp, alias = the pool port, charged to H. Its outbound key
// (H, hp, S, sp) and inbound key (alias, S, sp) cannot meet a masquerade
// flow's, whose remote is never a LAN address. The alias is not a port
// binding: it only has to be unique among the flows to S:sp (so the
// server's answer finds its flow) and never a forwarded port, and it is
// always a pool port (the kernel diverts only those to the engine). The
// forwarded port fp lives in the record's server-side sequence word
// (F_HAIRPIN_PORT: that side is not window-tracked; only LAN hosts can reach
// these flows anyway). WAN packets never look at them: a WAN packet with a
// LAN source is dropped as spoofed before any lookup.

import { PROTO_TCP, PROTO_UDP, REFLECT_EXTERNAL, REFLECT_OFF } from "../abi/codes";
import { BF_STATIC, B_FLAGS, FL_CHARGED, FL_HAIRPIN, FL_NATT, FL_REPLIED, F_ALIAS_PORT, F_FLAGS, F_HAIRPIN_PORT, F_HAIRPIN_SRC, F_LAN_ADDR, F_LAN_PORT, F_PKTS_IN, F_PKTS_OUT, F_REM_ADDR, F_STATE } from "../abi/records";
import { Drop } from "../abi/reasons";
import { CTX_FRAG_OFFSET, CTX_HLEN, CTX_MORE_FRAGS, CTX_PROTO, CTX_TOTAL } from "../wire/context";
import { IP_DST, IP_SRC } from "../wire/ipv4";
import { L4_DST_PORT, L4_SRC_PORT, TCP_RST, TCP_SYN, l4Check, port, tcpFlags } from "../wire/l4";
import { NO_PORT, owner, protoIndex } from "./binding";
import { redirectDest, redirectDestPort, redirectFindFrom, redirectReflection } from "./forward";
import { hash1 } from "./hash";
import { LIM_FLOWS, srcCharge, srcRelease } from "./limits";
import { NATT_PORT, TCP_ESTABLISHED, TCP_SYN_SENT, TRACK_DROP, UDP_REPLIED, UDP_UNREPLIED, lifetimeOf, tcpInitFlags, tcpTrack } from "./masq";
import { rewriteAddrPort } from "./rewrite";
import { isLanAddr, isRouterLan, poolHi, poolLo, routerLanFor, wanAddr } from "./state";
import { flowFindIn, flowFindOut, flowInsert, flowTouch, rec } from "./table";

/**
 * An inside packet to the WAN address or to a router address on the LAN:
 * a hairpin flow's packet (translated) or a drop. Only the forwarded ports
 * and the servers' answers ever get here on a running router; anything else
 * is what it always was: `hairpin` to the router's addresses, `lan_dst` to
 * another LAN host.
 */
export function hairpin(p: usize, ctx: usize, src: u32, dst: u32): u32 {
  const toWan = dst == wanAddr;
  if (!toWan && !isRouterLan(dst)) return Drop.LAN_DST;
  const proto = load<u32>(ctx, CTX_PROTO);
  if (proto != PROTO_TCP && proto != PROTO_UDP) return Drop.HAIRPIN;
  // Fragments are not reflected (README).
  if (load<u32>(ctx, CTX_FRAG_OFFSET) != 0 || load<u32>(ctx, CTX_MORE_FRAGS) != 0) return Drop.HAIRPIN;
  const hlen = load<u32>(ctx, CTX_HLEN);
  const l4 = p + hlen;
  const r = l4Check(proto, l4, load<u32>(ctx, CTX_TOTAL) - hlen, false);
  if (r != Drop.NONE) return r;
  const sp = port(l4, L4_SRC_PORT);
  const dp = port(l4, L4_DST_PORT);
  if (sp == 0 || dp == 0) return Drop.BAD_PORT;
  // A server's answer: found by its own address and port and the alias it
  // was sent to, and only at the address the flow's packets came from.
  const e = flowFindIn(proto, dp, src, sp);
  if (e != 0) {
    const f = rec(e - 1);
    if ((load<u16>(f, F_FLAGS) & <u16>FL_HAIRPIN) != 0 && dst == hairpinSource(f)) return hairpinReply(p, l4, proto, f);
  }
  if (!toWan) return Drop.HAIRPIN;
  return hairpinOut(p, l4, proto, src, sp, dp);
}

/** The address a hairpin flow's server sees as its source (0: the router has no LAN address). */
@inline function hairpinSource(f: usize): u32 {
  return load<u8>(f, F_HAIRPIN_SRC) == <u8>REFLECT_EXTERNAL ? wanAddr : routerLanFor(load<u32>(f, F_REM_ADDR));
}

/** H:hp → W:fp: find or open the hairpin flow, then H:hp → S:sp from V:alias. */
function hairpinOut(p: usize, l4: usize, proto: u32, lanA: u32, lanP: u32, fwdPort: u32): u32 {
  // Only LAN hosts: never the router's own address, never anything else.
  if (!isLanAddr(lanA)) return Drop.HAIRPIN;
  // The forward as a WAN host would find it (fw4's src_ip, src_port, src_dip apply).
  const fwd = redirectFindFrom(proto, fwdPort, lanA, lanP, wanAddr);
  if (fwd == 0) return Drop.HAIRPIN;
  const mode = redirectReflection(fwd);
  if (mode == REFLECT_OFF) return Drop.HAIRPIN;
  const srvA = redirectDest(fwd);
  const srvP = redirectDestPort(fwd, fwdPort);
  let e = flowFindOut(proto, lanA, lanP, srvA, srvP);
  let f: usize;
  const flags = proto == PROTO_TCP ? tcpFlags(l4) : 0;
  if (e == 0) {
    if (flags & TCP_RST) return Drop.TCP_NO_FLOW;
    const via = mode == REFLECT_EXTERNAL ? wanAddr : routerLanFor(srvA);
    if (via == 0) return Drop.HAIRPIN;
    // Charged to the host like its other flows: hairpin cannot fill the table either.
    if (!srcCharge(lanA, LIM_FLOWS)) return Drop.SRC_FLOW_LIMIT;
    const alias = hairpinAlias(proto, lanA, lanP, srvA, srvP);
    if (alias == NO_PORT) { srcRelease(lanA, LIM_FLOWS); return Drop.POOL_EXHAUSTED; }
    const state = proto == PROTO_TCP ? ((flags & TCP_SYN) ? TCP_SYN_SENT : TCP_ESTABLISHED) : UDP_UNREPLIED;
    const fl = FL_HAIRPIN | FL_CHARGED | (lanP == NATT_PORT || srvP == NATT_PORT ? FL_NATT : 0) |
      (proto == PROTO_TCP ? tcpInitFlags(flags) : 0);
    e = flowInsert(proto, lanA, lanP, srvA, srvP, alias, state, fl, lifetimeOf(proto, state, fl));
    if (e == 0) { srcRelease(lanA, LIM_FLOWS); return Drop.TABLE_FULL; }
    f = rec(e - 1);
    store<u16>(f, <u16>fwdPort, F_HAIRPIN_PORT);
    store<u8>(f, <u8>mode, F_HAIRPIN_SRC);
  } else {
    f = rec(e - 1);
    // The same host endpoint already reaches this server through another forwarded port.
    if ((load<u16>(f, F_FLAGS) & <u16>FL_HAIRPIN) == 0 || <u32>load<u16>(f, F_HAIRPIN_PORT) != fwdPort) return Drop.HAIRPIN;
  }
  const via = hairpinSource(f);
  if (via == 0) return Drop.HAIRPIN;
  let state = <u32>load<u8>(f, F_STATE);
  if (proto == PROTO_TCP) {
    state = tcpTrack(p, l4, f, true);
    if (state == TRACK_DROP) return Drop.TCP_OUT_OF_WINDOW;
  }
  flowTouch(f, lifetimeOf(proto, state, load<u16>(f, F_FLAGS)));
  store<u32>(f, load<u32>(f, F_PKTS_OUT) + 1, F_PKTS_OUT);
  rewriteAddrPort(p, IP_SRC, via, l4, proto, L4_SRC_PORT, load<u16>(f, F_ALIAS_PORT));
  rewriteAddrPort(p, IP_DST, srvA, l4, proto, L4_DST_PORT, srvP);
  return Drop.NONE;
}

/** S:sp → V:alias: back to the host as W:fp → H:hp. */
function hairpinReply(p: usize, l4: usize, proto: u32, f: usize): u32 {
  let state = <u32>load<u8>(f, F_STATE);
  if (proto == PROTO_TCP) {
    state = tcpTrack(p, l4, f, false);
    if (state == TRACK_DROP) return Drop.TCP_OUT_OF_WINDOW;
  } else {
    state = UDP_REPLIED;
    store<u8>(f, <u8>state, F_STATE);
  }
  store<u16>(f, load<u16>(f, F_FLAGS) | <u16>FL_REPLIED, F_FLAGS);
  flowTouch(f, lifetimeOf(proto, state, load<u16>(f, F_FLAGS)));
  store<u32>(f, load<u32>(f, F_PKTS_IN) + 1, F_PKTS_IN);
  rewriteAddrPort(p, IP_SRC, wanAddr, l4, proto, L4_SRC_PORT, load<u16>(f, F_HAIRPIN_PORT));
  rewriteAddrPort(p, IP_DST, load<u32>(f, F_LAN_ADDR), l4, proto, L4_DST_PORT, load<u16>(f, F_LAN_PORT));
  return Drop.NONE;
}

/**
 * A pool port no flow to srvA:srvP uses and no forward reserves, starting
 * at a place the host endpoint picks; NO_PORT when all are taken. Only new
 * hairpin flows search, and each is charged to its host.
 */
function hairpinAlias(proto: u32, lanA: u32, lanP: u32, srvA: u32, srvP: u32): u32 {
  const pi = protoIndex(proto);
  const span = poolHi - poolLo + 1;
  let k = hash1(<u64>lanA | (<u64>lanP << 32) | (<u64>srvP << 48)) % span;
  for (let n: u32 = 0; n < span; n++) {
    const cand = poolLo + k;
    if ((load<u16>(owner(pi, cand), B_FLAGS) & <u16>BF_STATIC) == 0 && flowFindIn(proto, cand, srvA, srvP) == 0) return cand;
    k = k + 1 == span ? 0 : k + 1;
  }
  return NO_PORT;
}
