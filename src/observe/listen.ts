// Where the observability servers may listen, checked against the devices
// (the config parser has already refused 0.0.0.0, multicast, broadcast and
// a loopback dashboard, see listen() in src/config/options.ts):
//
//   metrics_listen  loopback, or an address of lan_device
//   web_listen      an address of lan_device
//   both            never the WAN address, never an address of wan_device
//
// Run by `vpnmasq run` before it binds anything and by `check-config` when
// the devices exist, so a bad address is `FILE:LINE: reason` either way.

import { readFileSync } from 'node:fs';
import { ConfigError, parseUci, type Config } from '../config/index.js';
import type { Listen } from '../config/options.js';
import { deviceExists, ipv4Addresses } from '../net/iface.js';

/** The line of `option NAME` in the main section (0 when it cannot be found). */
export function optionLine(file: string, name: string): number {
  try {
    const uci = parseUci(readFileSync(file, 'utf8'), file);
    for (const s of uci.sections) {
      if (s.type !== 'vpnmasq') continue;
      const o = s.options.find((x) => x.name === name);
      if (o) return o.line;
    }
  } catch { /* the file was read before; a race is no reason to hide the real error */ }
  return 0;
}

export interface DeviceAddresses { lan: string[]; wan: string[] }

export function deviceAddresses(cfg: Config): DeviceAddresses | null {
  const m = cfg.main;
  if (!deviceExists(m.lanDevice) || !deviceExists(m.wanDevice)) return null;
  return {
    lan: ipv4Addresses(m.lanDevice).map((a) => a.address),
    wan: ipv4Addresses(m.wanDevice).map((a) => a.address),
  };
}

/** Throws ConfigError at the option's line when a listener names a forbidden address. */
export function checkListeners(cfg: Config, addrs: DeviceAddresses, wanAddress: string | null): void {
  const m = cfg.main;
  const check = (name: string, l: Listen | null, loopbackOk: boolean) => {
    if (!l) return;
    const fail = (why: string) => { throw new ConfigError(cfg.file, optionLine(cfg.file, name), `option ${name}: ${why}`); };
    if (l.host === wanAddress || addrs.wan.includes(l.host)) {
      fail(`${l.host} is an address of the WAN device ${m.wanDevice}; it must never be reachable from the WAN`);
    }
    if (loopbackOk && l.host.startsWith('127.')) return;
    if (!addrs.lan.includes(l.host)) {
      fail(`${l.host} is not an address of the LAN device ${m.lanDevice} (${addrs.lan.join(', ') || 'none'})` +
        (loopbackOk ? ' nor a loopback address' : ''));
    }
  };
  check('metrics_listen', m.metricsListen, true);
  check('web_listen', m.webListen, false);
}
