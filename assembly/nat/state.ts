// Engine-wide settings and the clock, set by the supervisor through the
// exports in index.ts. Times are kept in deciseconds (u32 lasts 13 years).

import { counters, events, EVENT_CAP, EVENT_SIZE, lanNets } from "../layout";
import { Drop } from "./reasons";

export let nowDs: u32 = 0;
export let wanAddr: u32 = 0; // raw network-order u32; 0 = no address yet
export let hashSeed: u32 = 0x9e3779b9;
export let poolLo: u32 = 61000;
export let poolHi: u32 = 65535;

export let tcpEstablishedDs: u32 = 74400;
export let tcpTransitoryDs: u32 = 2400;
export let tcpClosedDs: u32 = 100;
export let udpDs: u32 = 3000;
export let icmpDs: u32 = 600;
export let fragDs: u32 = 300;

export let lanNetCount: u32 = 0;

// VPN settings (DESIGN.md "VPN semantics"; defaults from the VPN Masquerade HOWTO)
export let espDs: u32 = 18000;          // esp_timeout 30 min
export let espInitDs: u32 = 1200;       // esp_init_timeout 2 min
export let espInitRetries: u32 = 5;     // esp_init_retries
export let espSquelchDs: u32 = 300;     // 30 s pause after the retries
export let ikeDs: u32 = 36000;          // ike_timeout 1 h (≥ esp_timeout)
export let nattDs: u32 = 3000;          // natt_timeout 300 s
export let greDs: u32 = 74400;          // gre_timeout
export let greDisconnectDs: u32 = 300;  // a disconnected call ages out in 30 s
export let parallelSessions: bool = false;
// What a WAN packet opened and the LAN side never answered (a flow through
// a forward, an IKE exchange, an ESP SA of a forward) lives this long
// (unreplied_timeout, 30 s like conntrack's unreplied UDP) and is evicted first.
export let unrepliedDs: u32 = 300;
export function setUnreplied(ds: u32): void { unrepliedDs = ds; }
export let espGuess: bool = false;

export function setVpn(esp: u32, espInit: u32, retries: u32, ike: u32, natt: u32, gre: u32, parallel: bool, guess: bool): void {
  espDs = esp; espInitDs = espInit; espInitRetries = retries; ikeDs = ike; nattDs = natt; greDs = gre;
  parallelSessions = parallel; espGuess = guess;
}

export function setClock(nowMs: f64): void { nowDs = <u32>(nowMs / 100.0); }
export function setWan(addr: u32): void { wanAddr = addr; }
export function setSeed(seed: u32): void { hashSeed = seed | 1; }
export function setPool(lo: u32, hi: u32): void { poolLo = lo; poolHi = hi; }
export function setTimeoutsDs(tcpEst: u32, tcpTrans: u32, udp: u32, icmp: u32, frag: u32): void {
  tcpEstablishedDs = tcpEst; tcpTransitoryDs = tcpTrans; udpDs = udp; icmpDs = icmp; fragDs = frag;
}
export function setLanNetCount(n: u32): void { lanNetCount = n; }

/** Inside sources the router will masquerade: its LAN subnets and its own WAN address. */
export function isLanAddr(a: u32): bool {
  for (let i: u32 = 0; i < lanNetCount; i++) {
    const net = load<u32>(lanNets + (<usize>i << 3));
    const mask = load<u32>(lanNets + (<usize>i << 3), 4);
    if ((a & mask) == net) return true;
  }
  return false;
}

/** 0.0.0.0/8, 127/8, multicast, 255.255.255.255 (raw byte order: first octet is the low byte). */
@inline export function isMartian(a: u32): bool {
  const first = a & 0xff;
  return first == 0 || first == 127 || first >= 224;
}

// ---- counters -------------------------------------------------------------
export const C_RX_INSIDE: u32 = 0;
export const C_RX_OUTSIDE: u32 = 1;
export const C_PASS_INSIDE: u32 = 2;
export const C_PASS_OUTSIDE: u32 = 3;
export const C_FLOWS_NEW: u32 = 4;
export const C_FLOWS_EXPIRED: u32 = 5;
export const C_FLOWS_ACTIVE: u32 = 6;
export const C_BINDINGS_ACTIVE: u32 = 7;
export const C_FRAGS_ACTIVE: u32 = 8;
export const C_EVENTS_LOST: u32 = 9;
export const C_LOCAL_ACCEPT: u32 = 10;
export const C_FLOWS_FLUSHED: u32 = 11;
export const C_ESP_ACTIVE: u32 = 12;
export const C_IKE_ACTIVE: u32 = 13;
export const C_CALLS_ACTIVE: u32 = 14;
export const C_ESP_BOUND: u32 = 15;
export const C_EARLY_DROPS: u32 = 16;  // unanswered entries dropped to make room in a full table
export const C_DROP_BASE: u32 = 32; // + reason

@inline export function count(i: u32): void {
  const p = counters + (<usize>i << 3);
  store<u64>(p, load<u64>(p) + 1);
}
@inline export function countAdd(i: u32, n: i64): void {
  const p = counters + (<usize>i << 3);
  store<u64>(p, <u64>(<i64>load<u64>(p) + n));
}

// ---- events -----------------------------------------------------------------
// Ring of EVENT_CAP records; header: u32 head (engine writes), u32 tail (supervisor).
//  0 u8 type  1 u8 reason  2 u8 proto  3 u8 side
//  4 u32 lanAddr  8 u32 remoteAddr  12 u32 wanAddr
// 16 u16 lanPort 18 u16 remotePort 20 u16 aliasPort 22 u16 spare
// 24 u32 timeDs  28 u32 extra
export const EV_FLOW_NEW: u32 = 1;
export const EV_FLOW_EXPIRED: u32 = 2;
export const EV_DROP: u32 = 3;
export const EV_FLUSH: u32 = 4;
export const EV_ESP_BOUND: u32 = 5;      // inbound SPI (extra) associated with a LAN host
export const EV_AH_REFUSED: u32 = 6;     // once per LAN host / server pair
export const EV_IKE_COLLISION: u32 = 7;

export function eventPush(type: u32, reason: u32, proto: u32, side: u32,
  lanA: u32, remA: u32, lanP: u32, remP: u32, aliasP: u32, extra: u32): void {
  const head = load<u32>(events);
  const tail = load<u32>(events, 4);
  if (head - tail >= EVENT_CAP) { count(C_EVENTS_LOST); return; }
  const e = events + 64 + (<usize>(head & (EVENT_CAP - 1)) * EVENT_SIZE);
  store<u8>(e, <u8>type); store<u8>(e, <u8>reason, 1); store<u8>(e, <u8>proto, 2); store<u8>(e, <u8>side, 3);
  store<u32>(e, lanA, 4); store<u32>(e, remA, 8); store<u32>(e, wanAddr, 12);
  store<u16>(e, <u16>lanP, 16); store<u16>(e, <u16>remP, 18); store<u16>(e, <u16>aliasP, 20);
  store<u32>(e, nowDs, 24); store<u32>(e, extra, 28);
  store<u32>(events, head + 1);
}

// Drops are counted always; an event (for the log) at most once a second per reason.
// Static data, not heap: the engine's heap is the fixed layout (layout.ts).
const lastDropEvent: usize = memory.data(4 * 64);

export function dropped(reason: u32, side: u32, p: usize): u32 {
  count(C_DROP_BASE + reason);
  if (reason < <u32>Drop.COUNT) {
    const slot = lastDropEvent + (<usize>reason << 2);
    const last = load<u32>(slot);
    if (last == 0 || nowDs - last >= 10) {
      store<u32>(slot, nowDs | 1);
      // Addresses of the packet give the log line context; `p` may be a short packet.
      eventPush(EV_DROP, reason, 0, side, 0, 0, 0, 0, 0, 0);
    }
  }
  return reason;
}
