// The fail-closed guard: an nftables table that drops every packet the
// kernel would forward directly between the LAN and the WAN device, and what
// the router itself would answer on the WAN for translated traffic.
//
//   table ip vpnmasq_guard {
//     chain forward {
//       type filter hook forward priority filter - 10; policy accept;
//       iifname "<lan>" oifname "<wan>" counter drop
//       iifname "<wan>" oifname "<lan>" counter drop
//     }
//     chain input {
//       type filter hook input priority filter - 10; policy accept;
//       iifname "<wan>" meta l4proto { tcp, udp } socket transparent { 0, 1 } return
//       iifname "<wan>" meta l4proto { tcp, udp } counter drop
//     }
//   }
//
// While vpnmasq runs no packet ever takes the forward path: LAN traffic for
// the WAN goes lan -> tin, the engine, tin -> wan; WAN traffic wan -> tout,
// tout -> lan. When the process is gone (kill -9, crash, respawn back-off,
// before it is ready at boot) its TUN devices and their routes vanish, the
// policy rules fall through to the main table, and the kernel would forward
// LAN traffic untranslated and let a WAN host with a route reach the LAN;
// the forward chain drops exactly that. The router's own traffic and LAN ->
// router traffic are not forwarded, so they are untouched; so is traffic
// between the LAN and any other device (a tunnel ending on the router).
//
// The input chain: with the TUN gone, rule 10's table has no route, so WAN
// packets to the WAN address fall through to local delivery, and the kernel
// answers a translated connection's segments with a RST (and UDP with an
// ICMP port unreachable): the connection the restored state would carry on
// after a respawn is dead. So TCP/UDP from the WAN device that no socket of
// the router's own takes is dropped silently. The socket lookup (nft_socket,
// the same lookup the kernel's delivery makes: established, then listening
// or bound) covers the masquerade pool and the source ports vpnmasq kept for
// LAN hosts alike (those are usually in the kernel's ephemeral range, so no
// port range could tell them apart), while the router's own connections
// (ports outside the pool: sysctl ip_local_port_range is moved below it) and
// its services on the WAN address (IKE on 500/4500, SSH) find their socket
// and pass. While vpnmasq runs, WAN ingress is routed into tout by rule 10
// and what vpnmasq hands to the router arrives with iif tout: matching
// `iifname <wan>` only, the chain never sees it (limited broadcast and
// multicast are delivered with iif wan: without a socket they would get no
// answer anyway). A kernel without nft_socket gets the fallback: TCP/UDP to
// the masquerade pool dropped (`th dport <lo>-<hi>`); kept source ports are
// then not covered, and status says so.
//
// The guard belongs to the kernel, not to the process: `vpnmasq run`
// installs it at start when it is missing (or names other devices), the init
// scripts install it before the daemon starts, a stop keeps it, and only
// `vpnmasq guard remove` (the package's removal script runs it) takes it
// away. Interface names, not indexes, so it can be installed before the
// devices exist (a PPP WAN appears later). IPv4 only: vpnmasq leaves IPv6
// to the kernel.
import { isValidIfName } from './iface.js';
import { applyNftScript, deleteTable, listTable, nftString } from './nft.js';

export const GUARD_TABLE = 'vpnmasq_guard';
/** The masquerade pool when the config names none (masq_ports' default). */
export const DEFAULT_GUARD_POOL: readonly [number, number] = [61000, 65535];

/** How the input chain tells the router's own traffic from translated traffic. */
export type WanInputMode = 'socket' | 'ports';

export interface GuardSpec {
  lanDevice: string;
  wanDevice: string;
  /** The masquerade pool (masq_ports); only the fallback without nft_socket uses it. */
  masqPorts?: readonly [number, number];
}

export interface GuardStatus {
  lanDevice: string;
  wanDevice: string;
  /** packets dropped so far, per direction */
  droppedLanToWan: number;
  droppedWanToLan: number;
  /** The input chain: absent in a guard of an older version. */
  wanInput?: WanInputMode;
  /** The pool the 'ports' fallback closes. */
  wanInputPorts?: [number, number];
  /** TCP/UDP from the WAN device to the router dropped so far (no socket of its own, or the pool). */
  droppedWanToRouter?: number;
}

export interface GuardInstall {
  done: 'present' | 'installed' | 'replaced';
  wanInput: WanInputMode;
  /** Why the socket lookup could not be installed (the fallback is in place). */
  fallback?: string;
}

function check(spec: GuardSpec): [number, number] {
  for (const [what, name] of [['lan_device', spec.lanDevice], ['wan_device', spec.wanDevice]] as const) {
    if (typeof name !== 'string' || !isValidIfName(name) || name === 'lo') throw new Error(`guard: ${what} ${JSON.stringify(name)} is not a usable interface name`);
  }
  if (spec.lanDevice === spec.wanDevice) throw new Error(`guard: lan_device and wan_device are both ${spec.lanDevice}`);
  const [lo, hi] = spec.masqPorts ?? DEFAULT_GUARD_POOL;
  if (!Number.isInteger(lo) || !Number.isInteger(hi) || lo < 1 || hi > 65535 || lo > hi) throw new Error(`guard: masq_ports ${lo}-${hi} is not a port range`);
  return [lo, hi];
}

/**
 * The nft script that installs (or atomically replaces) the guard. Pure.
 * Creating, deleting and recreating the table in one transaction replaces an
 * existing guard without a moment in which none is there.
 */
export function guardScript(spec: GuardSpec, wanInput: WanInputMode = 'socket'): string {
  const [lo, hi] = check(spec);
  const lan = nftString(spec.lanDevice);
  const wan = nftString(spec.wanDevice);
  const input = wanInput === 'socket'
    ? `		iifname ${wan} meta l4proto { tcp, udp } socket transparent { 0, 1 } return comment "a socket of the router's own"
		iifname ${wan} meta l4proto { tcp, udp } counter drop comment "translated traffic while vpnmasq is down: no answer"`
    : `		iifname ${wan} meta l4proto { tcp, udp } th dport ${lo === hi ? lo : `${lo}-${hi}`} counter drop comment "the masquerade pool while vpnmasq is down: no answer"`;
  return `table ip ${GUARD_TABLE}
delete table ip ${GUARD_TABLE}
table ip ${GUARD_TABLE} {
	chain forward {
		type filter hook forward priority filter - 10; policy accept;
		iifname ${lan} oifname ${wan} counter drop comment "lan to wan outside vpnmasq"
		iifname ${wan} oifname ${lan} counter drop comment "wan to lan outside vpnmasq"
	}
	chain input {
		type filter hook input priority filter - 10; policy accept;
${input}
	}
}
`;
}

/** Parses `nft list table ip vpnmasq_guard`; null if it is not a guard this code wrote. */
export function parseGuard(listing: string): GuardStatus | null {
  const re = /iifname "([^"]+)" oifname "([^"]+)" counter packets (\d+) bytes \d+ drop/g;
  const rules = [...listing.matchAll(re)].map((m) => ({ iif: m[1]!, oif: m[2]!, packets: Number(m[3]) }));
  if (rules.length !== 2) return null;
  const [a, b] = rules as [typeof rules[0], typeof rules[0]];
  if (a.iif !== b.oif || a.oif !== b.iif) return null;
  const st: GuardStatus = { lanDevice: a.iif, wanDevice: a.oif, droppedLanToWan: a.packets, droppedWanToLan: b.packets };
  const wan = a.oif.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  const drop = new RegExp(`iifname "${wan}" meta l4proto \\{ tcp, udp \\} (?:th dport (\\d+)(?:-(\\d+))? )?counter packets (\\d+) bytes \\d+ drop`).exec(listing);
  if (drop) {
    const socket = new RegExp(`iifname "${wan}" meta l4proto \\{ tcp, udp \\} socket transparent \\{ 0, 1 \\} return`).test(listing);
    if (drop[1] !== undefined) {
      st.wanInput = 'ports';
      st.wanInputPorts = [Number(drop[1]), Number(drop[2] ?? drop[1])];
    } else if (socket) {
      st.wanInput = 'socket';
    }
    if (st.wanInput) st.droppedWanToRouter = Number(drop[3]);
  }
  return st;
}

/** The guard in this network namespace, or null when there is none. */
export function guardStatus(): GuardStatus | null {
  const text = listTable(GUARD_TABLE);
  if (text === null) return null;
  return parseGuard(text) ?? { lanDevice: '?', wanDevice: '?', droppedLanToWan: 0, droppedWanToLan: 0 };
}

/**
 * Installs the guard unless the same one is already there (its counters are
 * kept then). The input chain's socket lookup needs nft_socket; a kernel
 * without it gets the pool fallback (`fallback` says why) rather than no
 * guard at all. Returns what it did.
 */
export function installGuard(spec: GuardSpec): GuardInstall {
  const pool = check(spec);
  const now = guardStatus();
  if (now && now.lanDevice === spec.lanDevice && now.wanDevice === spec.wanDevice) {
    if (now.wanInput === 'socket') return { done: 'present', wanInput: 'socket' };
  }
  const done = now ? 'replaced' : 'installed';
  try {
    applyNftScript(guardScript(spec, 'socket'));
    return { done, wanInput: 'socket' };
  } catch (e) {
    const why = (e as Error).message;
    if (now && now.lanDevice === spec.lanDevice && now.wanDevice === spec.wanDevice &&
      now.wanInput === 'ports' && now.wanInputPorts?.[0] === pool[0] && now.wanInputPorts[1] === pool[1]) {
      return { done: 'present', wanInput: 'ports', fallback: why };
    }
    try {
      applyNftScript(guardScript(spec, 'ports'));
    } catch {
      throw e; // nothing works (no nft, no nf_tables): the first error says why
    }
    return { done, wanInput: 'ports', fallback: why };
  }
}

/** Removes the guard; false if there was none. */
export function removeGuard(): boolean {
  return deleteTable(GUARD_TABLE);
}
