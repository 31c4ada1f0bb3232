// The fail-closed guard: an nftables table that drops every packet the
// kernel would forward directly between the LAN and the WAN device.
//
//   table ip vpnmasq_guard {
//     chain forward {
//       type filter hook forward priority filter - 10; policy accept;
//       iifname "<lan>" oifname "<wan>" counter drop
//       iifname "<wan>" oifname "<lan>" counter drop
//     }
//   }
//
// While vpnmasq runs no packet ever takes that path: LAN traffic for the WAN
// goes lan -> tin, the engine, tin -> wan; WAN traffic wan -> tout, tout -> lan.
// When the process is gone (kill -9, crash, respawn back-off, before it is
// ready at boot) its TUN devices and their routes vanish, the policy rules
// fall through to the main table, and the kernel would forward LAN traffic
// untranslated and let a WAN host with a route reach the LAN; this table
// drops exactly that. The router's own traffic (output/input) and LAN ->
// router traffic are not forwarded, so they are untouched; so is traffic
// between the LAN and any other device (a tunnel ending on the router).
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

export interface GuardSpec {
  lanDevice: string;
  wanDevice: string;
}

export interface GuardStatus {
  lanDevice: string;
  wanDevice: string;
  /** packets dropped so far, per direction */
  droppedLanToWan: number;
  droppedWanToLan: number;
}

function check(spec: GuardSpec): void {
  for (const [what, name] of [['lan_device', spec.lanDevice], ['wan_device', spec.wanDevice]] as const) {
    if (typeof name !== 'string' || !isValidIfName(name) || name === 'lo') throw new Error(`guard: ${what} ${JSON.stringify(name)} is not a usable interface name`);
  }
  if (spec.lanDevice === spec.wanDevice) throw new Error(`guard: lan_device and wan_device are both ${spec.lanDevice}`);
}

/**
 * The nft script that installs (or atomically replaces) the guard. Pure.
 * Creating, deleting and recreating the table in one transaction replaces an
 * existing guard without a moment in which none is there.
 */
export function guardScript(spec: GuardSpec): string {
  check(spec);
  const lan = nftString(spec.lanDevice);
  const wan = nftString(spec.wanDevice);
  return `table ip ${GUARD_TABLE}
delete table ip ${GUARD_TABLE}
table ip ${GUARD_TABLE} {
	chain forward {
		type filter hook forward priority filter - 10; policy accept;
		iifname ${lan} oifname ${wan} counter drop comment "lan to wan outside vpnmasq"
		iifname ${wan} oifname ${lan} counter drop comment "wan to lan outside vpnmasq"
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
  return { lanDevice: a.iif, wanDevice: a.oif, droppedLanToWan: a.packets, droppedWanToLan: b.packets };
}

/** The guard in this network namespace, or null when there is none. */
export function guardStatus(): GuardStatus | null {
  const text = listTable(GUARD_TABLE);
  if (text === null) return null;
  return parseGuard(text) ?? { lanDevice: '?', wanDevice: '?', droppedLanToWan: 0, droppedWanToLan: 0 };
}

/**
 * Installs the guard unless the same one is already there (its counters are
 * kept then). Returns what it did.
 */
export function installGuard(spec: GuardSpec): 'present' | 'installed' | 'replaced' {
  check(spec);
  const now = guardStatus();
  if (now && now.lanDevice === spec.lanDevice && now.wanDevice === spec.wanDevice) return 'present';
  applyNftScript(guardScript(spec));
  return now ? 'replaced' : 'installed';
}

/** Removes the guard; false if there was none. */
export function removeGuard(): boolean {
  return deleteTable(GUARD_TABLE);
}
