// `vpnmasq guard install | remove | status`: the fail-closed guard
// (src/net/guard.ts) by hand, from init scripts and from the package's
// removal script.
//
// install works from the configuration's lan_device and wan_device. A file
// that does not validate (a typo elsewhere) must not leave the router open,
// so the two options are then read leniently from the text; only when even
// that finds nothing does install fail.
import { readFileSync } from 'node:fs';
import { ConfigError, loadConfig } from '../config/index.js';
import { DEFAULT_GUARD_POOL, guardStatus, installGuard, removeGuard, type GuardSpec, type GuardStatus } from '../net/guard.js';

/** lan_device / wan_device / masq_ports of the config; `lenient` says the file did not validate. */
export function guardDevices(configPath: string): GuardSpec & { lenient?: string } {
  try {
    const m = loadConfig(configPath).main;
    return { lanDevice: m.lanDevice, wanDevice: m.wanDevice, masqPorts: [m.masqPorts[0], m.masqPorts[1]] };
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    let text: string;
    try {
      text = readFileSync(configPath, 'utf8');
    } catch {
      throw err;
    }
    const opt = (name: string): string | undefined => {
      const re = new RegExp(`^\\s*option\\s+${name}\\s+(?:'([^']*)'|"([^"]*)"|(\\S+))\\s*(?:#.*)?$`, 'gm');
      let last: string | undefined;
      for (const m of text.matchAll(re)) last = m[1] ?? m[2] ?? m[3];
      return last;
    };
    const lanDevice = opt('lan_device');
    const wanDevice = opt('wan_device');
    if (!lanDevice || !wanDevice) throw err;
    // The pool only matters for the fallback without nft_socket; one that does not parse: the default.
    const pm = /^(\d+)\s*[-:]\s*(\d+)$/.exec(opt('masq_ports') ?? '');
    const lo = Number(pm?.[1]);
    const hi = Number(pm?.[2]);
    const masqPorts: [number, number] = pm && lo >= 1 && hi <= 65535 && lo <= hi ? [lo, hi] : [...DEFAULT_GUARD_POOL];
    return { lanDevice, wanDevice, masqPorts, lenient: err.message };
  }
}

/** What the guard's input chain does, in one phrase. */
function wanInputText(mode: NonNullable<GuardStatus['wanInput']>, wan: string, pool?: readonly [number, number]): string {
  return mode === 'socket'
    ? `TCP/UDP from ${wan} that no socket of the router's own takes is dropped unanswered while vpnmasq is down`
    : `TCP/UDP from ${wan} to ports ${(pool ?? DEFAULT_GUARD_POOL).join('-')} is dropped unanswered while vpnmasq is down`;
}

export const GUARD_USAGE = 'usage: vpnmasq guard install|remove|status [--config FILE] [--json]';

/** Runs a guard subcommand; returns the exit code (status: 0 installed, 3 not installed). */
export function guardCommand(sub: string | undefined, configPath: string, json = false): number {
  const out = (s: string) => process.stdout.write(s + '\n');
  const err = (s: string) => process.stderr.write(s + '\n');
  switch (sub ?? 'status') {
    case 'install': {
      let spec: ReturnType<typeof guardDevices>;
      try {
        spec = guardDevices(configPath);
      } catch (e) {
        err(`vpnmasq: guard install: ${(e as Error).message}`);
        return 1;
      }
      if (spec.lenient) err(`vpnmasq: ${spec.lenient} (guard installed from lan_device/wan_device as written)`);
      try {
        const g = installGuard(spec);
        out(`vpnmasq: guard ${g.done === 'present' ? 'already installed' : g.done}: no forwarding between ${spec.lanDevice} and ${spec.wanDevice} outside vpnmasq; ${wanInputText(g.wanInput, spec.wanDevice, spec.masqPorts)}`);
        if (g.fallback) err(`vpnmasq: guard: no socket lookup in this kernel (nft_socket), so source ports vpnmasq kept are answered while it is down: ${g.fallback}`);
        return 0;
      } catch (e) {
        err(`vpnmasq: guard install: ${(e as Error).message}`);
        return 1;
      }
    }
    case 'remove': {
      try {
        out(removeGuard() ? 'vpnmasq: guard removed: the kernel forwards between the LAN and WAN devices again while vpnmasq is not running'
          : 'vpnmasq: no guard installed');
        return 0;
      } catch (e) {
        err(`vpnmasq: guard remove: ${(e as Error).message}`);
        return 1;
      }
    }
    case 'status': {
      let s;
      try {
        s = guardStatus();
      } catch (e) {
        err(`vpnmasq: guard status: ${(e as Error).message}`);
        return 1;
      }
      if (json) out(JSON.stringify({ installed: s !== null, ...(s ?? {}) }));
      else if (s) {
        out(`guard installed: ${s.lanDevice} <-> ${s.wanDevice} closed outside vpnmasq (dropped ${s.droppedLanToWan} lan->wan, ${s.droppedWanToLan} wan->lan); ` +
          (s.wanInput ? `${wanInputText(s.wanInput, s.wanDevice, s.wanInputPorts)} (dropped ${s.droppedWanToRouter ?? 0})` : `no input chain (an older guard: run vpnmasq guard install)`));
      }
      else out('guard not installed: the kernel forwards between the LAN and WAN devices while vpnmasq is not running');
      return s ? 0 : 3;
    }
    default:
      err(`vpnmasq: guard: unknown subcommand "${sub}"\n${GUARD_USAGE}`);
      return 2;
  }
}
