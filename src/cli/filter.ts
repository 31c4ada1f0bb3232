// conntrack-tools' filters for `vpnmasq conntrack` (-L, -D, -C): -p PROTO,
// -s/--src and -d/--dst (the original direction's addresses, an address or
// a network), --sport/--dport (the original direction's ports), plus
// vpnmasq's own --spi (either SPI of an ESP association) and --call-id (any
// Call ID of a PPTP call: the LAN host's, its alias or the peer's).
// Shared by the CLI (listing, counting) and the daemon (deleting), so both
// pick the same entries.
import ipaddr from 'ipaddr.js';
import type { FlowEntry } from '../engine/engine.js';
import { PROTOCOL_NAMES } from '../config/schema.js';

/** A parsed filter; every field given must match. JSON-safe (it crosses the control socket). */
export interface ConntrackFilter {
  proto?: number;
  src?: string;
  dst?: string;
  sport?: number;
  dport?: number;
  spi?: number;
  callId?: number;
}

/** The raw option values, as conntrack's options name them. */
export interface FilterArgs {
  proto?: string;
  src?: string;
  dst?: string;
  sport?: string;
  dport?: string;
  spi?: string;
  'call-id'?: string;
}

/** A value that is not what its option wants: the CLI's usage error (exit 2). */
export class FilterError extends Error {}

function num(opt: string, v: string, max: number): number {
  const hex = /^0x[0-9a-f]{1,8}$/i.test(v);
  if (!hex && !/^[0-9]{1,10}$/.test(v)) throw new FilterError(`${opt}: '${v}' is not a number`);
  const n = Number(v);
  if (n > max) throw new FilterError(`${opt}: '${v}' is out of range (0..${max})`);
  return n;
}

function net(opt: string, v: string): string {
  const [a, len] = v.split('/');
  if (!ipaddr.IPv4.isValidFourPartDecimal(a!)) throw new FilterError(`${opt}: '${v}' is not an IPv4 address or network`);
  if (len === undefined) return `${a}/32`;
  if (!/^[0-9]{1,2}$/.test(len) || Number(len) > 32) throw new FilterError(`${opt}: '${v}' has a bad prefix length`);
  return `${ipaddr.IPv4.networkAddressFromCIDR(v).toString()}/${len}`;
}

/** Parses the filter options; throws FilterError naming the option. */
export function parseFilter(a: FilterArgs): ConntrackFilter {
  const f: ConntrackFilter = {};
  if (a.proto !== undefined) {
    const p = a.proto.toLowerCase();
    if (Object.prototype.hasOwnProperty.call(PROTOCOL_NAMES, p)) f.proto = PROTOCOL_NAMES[p];
    else if (/^[0-9]{1,3}$/.test(p) && Number(p) <= 255) f.proto = Number(p);
    else throw new FilterError(`-p: '${a.proto}' is not a protocol name or number`);
  }
  if (a.src !== undefined) f.src = net('--src', a.src);
  if (a.dst !== undefined) f.dst = net('--dst', a.dst);
  if (a.sport !== undefined) f.sport = num('--sport', a.sport, 65535);
  if (a.dport !== undefined) f.dport = num('--dport', a.dport, 65535);
  if (a.spi !== undefined) f.spi = num('--spi', a.spi, 0xffffffff);
  if (a['call-id'] !== undefined) f.callId = num('--call-id', a['call-id'], 65535);
  return f;
}

export function filterEmpty(f: ConntrackFilter): boolean {
  return Object.keys(f).length === 0;
}

/** The original direction (who opened it), as `vpnmasq conntrack` prints it first. */
export function original(e: FlowEntry): { src: string; dst: string; sport: number | null; dport: number | null } {
  if (e.proto === 'esp' || e.proto === 'gre') return { src: e.lan, dst: e.remote, sport: null, dport: null };
  const ported = e.protoNum === 6 || e.protoNum === 17;
  if (e.redirect) return { src: e.remote, dst: e.wan, sport: ported ? e.remotePort : null, dport: ported ? e.aliasPort : null };
  // NAT loopback: the LAN host called the forward on the WAN address.
  if (e.hairpin) return { src: e.lan, dst: e.wan, sport: e.lanPort, dport: e.hairpin.wanPort };
  return { src: e.lan, dst: e.remote, sport: ported ? e.lanPort : null, dport: ported ? e.remotePort : null };
}

function inNet(addr: string, cidr: string): boolean {
  if (!ipaddr.IPv4.isValidFourPartDecimal(addr)) return false;
  return ipaddr.IPv4.parse(addr).match(ipaddr.IPv4.parseCIDR(cidr));
}

export function matches(e: FlowEntry, f: ConntrackFilter): boolean {
  const o = original(e);
  if (f.proto !== undefined && e.protoNum !== f.proto) return false;
  if (f.src !== undefined && !inNet(o.src, f.src)) return false;
  if (f.dst !== undefined && !inNet(o.dst, f.dst)) return false;
  if (f.sport !== undefined && o.sport !== f.sport) return false;
  if (f.dport !== undefined && o.dport !== f.dport) return false;
  if (f.spi !== undefined) {
    const spis = [e.spiOut, e.spiIn].filter((s): s is string => typeof s === 'string').map((s) => Number(s));
    if (!spis.includes(f.spi)) return false;
  }
  if (f.callId !== undefined && ![e.callIdLan, e.callIdAlias, e.callIdRemote].includes(f.callId)) return false;
  return true;
}
