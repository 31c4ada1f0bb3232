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
import { guardStatus, installGuard, removeGuard, type GuardSpec } from '../net/guard.js';

/** lan_device / wan_device of the config; `lenient` says the file did not validate. */
export function guardDevices(configPath: string): GuardSpec & { lenient?: string } {
  try {
    const m = loadConfig(configPath).main;
    return { lanDevice: m.lanDevice, wanDevice: m.wanDevice };
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
    return { lanDevice, wanDevice, lenient: err.message };
  }
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
        const what = installGuard(spec);
        out(`vpnmasq: guard ${what === 'present' ? 'already installed' : what}: no forwarding between ${spec.lanDevice} and ${spec.wanDevice} outside vpnmasq`);
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
      else if (s) out(`guard installed: ${s.lanDevice} <-> ${s.wanDevice} closed outside vpnmasq (dropped ${s.droppedLanToWan} lan->wan, ${s.droppedWanToLan} wan->lan)`);
      else out('guard not installed: the kernel forwards between the LAN and WAN devices while vpnmasq is not running');
      return s ? 0 : 3;
    }
    default:
      err(`vpnmasq: guard: unknown subcommand "${sub}"\n${GUARD_USAGE}`);
      return 2;
  }
}
