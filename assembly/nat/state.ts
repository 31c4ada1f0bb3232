// Engine-wide settings and the clock, set by the supervisor through the
// exports in index.ts. Times are kept in deciseconds (u32 lasts 13 years).

import {
  C_DROP_BASE, C_EVENTS_LOST, EVENT_CAP, EVENT_HEADER, EVENT_SIZE, EVT_ALIAS_PORT, EVT_EXTRA, EVT_LAN_ADDR,
  EVT_LAN_PORT, EVT_PROTO, EVT_REASON, EVT_REM_ADDR, EVT_REM_PORT, EVT_SIDE, EVT_TIME, EVT_TYPE, EVT_WAN_ADDR,
  EV_DROP,
} from "../abi/counters";
import { counters, events, lanNets } from "../layout";
import { Drop } from "../abi/reasons";
import { captureDrop, captureOn } from "./capture";
import {
  SETTINGS_SIZE, SET_ESP_GUESS, SET_ESP_INIT_RETRIES, SET_ESP_INIT_TIMEOUT, SET_ESP_TIMEOUT, SET_FRAG_TIMEOUT,
  SET_GRE_TIMEOUT, SET_ICMP_TIMEOUT, SET_IKE_TIMEOUT, SET_MASQ_PORT_HI, SET_MASQ_PORT_LO, SET_NATT_TIMEOUT,
  SET_PARALLEL_SESSIONS, SET_SRC_MAX_CALLS, SET_SRC_MAX_ESP_PENDING, SET_SRC_MAX_FLOWS, SET_SRC_MAX_FRAGS, SET_SRC_MAX_IKE,
  SET_TCP_TIMEOUT, SET_TCP_TRANSITORY_TIMEOUT, SET_UDP_TIMEOUT, SET_UNREPLIED_TIMEOUT,
} from "../abi/settings";

import { hashKeySet } from "./hash";
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
export let espGuess: bool = false;

// No table one source can fill (issue 8 item 5). What a WAN packet opened
// and the LAN side never answered (a flow through a forward, an IKE
// exchange, an ESP SA of a forward) lives unreplied_timeout (30 s, like
// conntrack's unreplied UDP) and is evicted first; per-LAN-host caps
// (nat/limits.ts) on every table. srcMaxFlows 0: a quarter of the table.
export let unrepliedDs: u32 = 300;
export let srcMaxFlows: u32 = 0;
export let srcMaxIke: u32 = 256;
export let srcMaxCalls: u32 = 256;
export let srcMaxEspPending: u32 = 16;
export let srcMaxFrags: u32 = 256;

export function setClock(nowMs: f64): void { nowDs = <u32>(nowMs / 100.0); }
export function setWan(addr: u32): void { wanAddr = addr; }
export function setSeed(seed: u32): void { hashSeed = seed | 1; hashKeySet(seed); }

// ---- settings ---------------------------------------------------------------
// The supervisor writes the settings record (fields SET_* in abi/settings.ts)
// and calls applySettings (index.ts); static data, so it never moves.
export const settingsRec: usize = memory.data(SETTINGS_SIZE);

const MAX_SECONDS: u32 = 0xffffffff / 10; // deciseconds must fit a u32
const SECONDS_FIELDS: u32 = 11;
const secondsFields: usize = memory.data<u32>([
  SET_TCP_TIMEOUT, SET_TCP_TRANSITORY_TIMEOUT, SET_UDP_TIMEOUT, SET_ICMP_TIMEOUT, SET_FRAG_TIMEOUT,
  SET_ESP_TIMEOUT, SET_ESP_INIT_TIMEOUT, SET_IKE_TIMEOUT, SET_NATT_TIMEOUT, SET_GRE_TIMEOUT, SET_UNREPLIED_TIMEOUT,
]);
// Per-source caps: at least 1 (src_max_flows: 0 = the default share), at most a table's size.
const CAP_FIELDS: u32 = 4;
const capFields: usize = memory.data<u32>([SET_SRC_MAX_IKE, SET_SRC_MAX_CALLS, SET_SRC_MAX_ESP_PENDING, SET_SRC_MAX_FRAGS]);
const capMax: usize = memory.data<u32>([4096, 4096, 256, 4096]);

@inline function field(f: u32): u32 { return load<u32>(settingsRec + <usize>f); }

/** The first field of the record the engine cannot take (its offset + 1), or 0 when it took them all. */
export function settingsApply(): i32 {
  for (let i: u32 = 0; i < SECONDS_FIELDS; i++) {
    const f = load<u32>(secondsFields + (<usize>i << 2));
    if (field(f) > MAX_SECONDS) return <i32>f + 1;
  }
  for (let i: u32 = 0; i < CAP_FIELDS; i++) {
    const f = load<u32>(capFields + (<usize>i << 2));
    if (field(f) == 0 || field(f) > load<u32>(capMax + (<usize>i << 2))) return <i32>f + 1;
  }
  if (field(SET_ESP_INIT_RETRIES) > 255) return <i32>SET_ESP_INIT_RETRIES + 1;
  if (field(SET_PARALLEL_SESSIONS) > 1) return <i32>SET_PARALLEL_SESSIONS + 1;
  if (field(SET_ESP_GUESS) > 1) return <i32>SET_ESP_GUESS + 1;
  const lo = field(SET_MASQ_PORT_LO);
  const hi = field(SET_MASQ_PORT_HI);
  if (lo == 0 || lo > hi) return <i32>SET_MASQ_PORT_LO + 1;
  if (hi > 65535) return <i32>SET_MASQ_PORT_HI + 1;
  tcpEstablishedDs = field(SET_TCP_TIMEOUT) * 10;
  tcpTransitoryDs = field(SET_TCP_TRANSITORY_TIMEOUT) * 10;
  udpDs = field(SET_UDP_TIMEOUT) * 10;
  icmpDs = field(SET_ICMP_TIMEOUT) * 10;
  fragDs = field(SET_FRAG_TIMEOUT) * 10;
  espDs = field(SET_ESP_TIMEOUT) * 10;
  espInitDs = field(SET_ESP_INIT_TIMEOUT) * 10;
  espInitRetries = field(SET_ESP_INIT_RETRIES);
  ikeDs = field(SET_IKE_TIMEOUT) * 10;
  nattDs = field(SET_NATT_TIMEOUT) * 10;
  greDs = field(SET_GRE_TIMEOUT) * 10;
  parallelSessions = field(SET_PARALLEL_SESSIONS) != 0;
  espGuess = field(SET_ESP_GUESS) != 0;
  poolLo = lo;
  poolHi = hi;
  unrepliedDs = field(SET_UNREPLIED_TIMEOUT) * 10;
  srcMaxFlows = field(SET_SRC_MAX_FLOWS);
  srcMaxIke = field(SET_SRC_MAX_IKE);
  srcMaxCalls = field(SET_SRC_MAX_CALLS);
  srcMaxEspPending = field(SET_SRC_MAX_ESP_PENDING);
  srcMaxFrags = field(SET_SRC_MAX_FRAGS);
  return 0;
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

// The router's own addresses on the LAN device (with their masks): the
// source a LAN server sees on a hairpin flow with reflection_src internal
// (nat/hairpin.ts). Static data: a handful, set with the LAN subnets.
export const MAX_ROUTER_LAN: u32 = 8;
const routerLan: usize = memory.data(MAX_ROUTER_LAN * 8);
export let routerLanCount: u32 = 0;

export function setRouterLanAddr(i: u32, addr: u32, mask: u32): i32 {
  if (i >= MAX_ROUTER_LAN) return -1;
  store<u32>(routerLan + (<usize>i << 3), addr);
  store<u32>(routerLan + (<usize>i << 3), mask, 4);
  return 0;
}
export function setRouterLanCount(n: u32): void { routerLanCount = n < MAX_ROUTER_LAN ? n : MAX_ROUTER_LAN; }

/** Is `a` one of the router's LAN addresses? */
export function isRouterLan(a: u32): bool {
  for (let i: u32 = 0; i < routerLanCount; i++) if (load<u32>(routerLan + (<usize>i << 3)) == a) return true;
  return false;
}

/**
 * The router's LAN address a LAN host `host` reaches it by: the first one
 * whose network holds it (as the kernel's masquerade picks the address of
 * the way out), else the first one; 0 when the router has none.
 */
export function routerLanFor(host: u32): u32 {
  for (let i: u32 = 0; i < routerLanCount; i++) {
    const a = load<u32>(routerLan + (<usize>i << 3));
    const mask = load<u32>(routerLan + (<usize>i << 3), 4);
    if ((a & mask) == (host & mask)) return a;
  }
  return routerLanCount > 0 ? load<u32>(routerLan) : 0;
}

/** 0.0.0.0/8, 127/8, multicast, 255.255.255.255 (raw byte order: first octet is the low byte). */
@inline export function isMartian(a: u32): bool {
  const first = a & 0xff;
  return first == 0 || first == 127 || first >= 224;
}

// ---- counters (slots: abi/counters.ts) --------------------------------------
@inline export function count(i: u32): void {
  const p = counters + (<usize>i << 3);
  store<u64>(p, load<u64>(p) + 1);
}
@inline export function countAdd(i: u32, n: i64): void {
  const p = counters + (<usize>i << 3);
  store<u64>(p, <u64>(<i64>load<u64>(p) + n));
}

// ---- events -----------------------------------------------------------------
// Ring of EVENT_CAP records of EVENT_SIZE bytes after an EVENT_HEADER-byte
// header: u32 head (engine writes), u32 tail (supervisor). Fields: abi/counters.ts.

export function eventPush(type: u32, reason: u32, proto: u32, side: u32,
  lanA: u32, remA: u32, lanP: u32, remP: u32, aliasP: u32, extra: u32): void {
  const head = load<u32>(events);
  const tail = load<u32>(events, 4);
  if (head - tail >= EVENT_CAP) { count(C_EVENTS_LOST); return; }
  const e = events + EVENT_HEADER + (<usize>(head & (EVENT_CAP - 1)) * EVENT_SIZE);
  store<u8>(e, <u8>type, EVT_TYPE); store<u8>(e, <u8>reason, EVT_REASON);
  store<u8>(e, <u8>proto, EVT_PROTO); store<u8>(e, <u8>side, EVT_SIDE);
  store<u32>(e, lanA, EVT_LAN_ADDR); store<u32>(e, remA, EVT_REM_ADDR); store<u32>(e, wanAddr, EVT_WAN_ADDR);
  store<u16>(e, <u16>lanP, EVT_LAN_PORT); store<u16>(e, <u16>remP, EVT_REM_PORT); store<u16>(e, <u16>aliasP, EVT_ALIAS_PORT);
  store<u32>(e, nowDs, EVT_TIME); store<u32>(e, extra, EVT_EXTRA);
  store<u32>(events, head + 1);
}

// Drops are counted always; an event (for the log) at most once a second per reason.
// Static data, not heap: the engine's heap is the fixed layout (layout.ts).
const lastDropEvent: usize = memory.data(4 * 64);

export function dropped(reason: u32, side: u32, p: usize): u32 {
  count(C_DROP_BASE + reason);
  if (captureOn) captureDrop(reason, side, p, nowDs);
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
