// Validation of the parsed UCI file into one typed, frozen Config.
//
// Sections and option names follow OpenWrt firewall4 (fw4) wherever fw4 has
// the concept (`config redirect`, `config rule`, proto, src, src_ip,
// src_dport, dest, dest_ip, dest_port, target, family, enabled, name), and
// values are read the way fw4 reads them (e.g. proto 'tcpudp', a port range
// 'a-b' or 'a:b', whitespace-separated values in an `option` of a list
// type). Everything is checked up front; the first problem found is thrown
// as a ConfigError `FILE:LINE: reason` pointing at the offending line.

import ipaddr from 'ipaddr.js';
import { ConfigError, type UciFile, type UciOption, type UciSection } from './uci.js';

export { ConfigError };

export type LogLevel = 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace';
export const LOG_LEVELS: readonly LogLevel[] = ['fatal', 'error', 'warn', 'info', 'debug', 'trace'];

// Protocols are IANA IP protocol numbers (0..255), the numbers in
// /etc/protocols and in the IPv4 header's protocol field. fw4's proto
// 'all' (also 'any', '*') is the pseudo number PROTO_ALL = -1; it only
// ever appears alone, as `proto: [PROTO_ALL]`. Protocol lists in Config are
// sorted ascending and free of duplicates.
export const PROTO_ALL = -1;
export const PROTO_ICMP = 1;
export const PROTO_TCP = 6;
export const PROTO_UDP = 17;
export const PROTO_GRE = 47;
export const PROTO_ESP = 50;
export const PROTO_AH = 51;
const PROTO_ICMPV6 = 58;

/** Protocol names accepted in `proto`, as in /etc/protocols (lower case; matching ignores case). */
export const PROTOCOL_NAMES: Readonly<Record<string, number>> = Object.freeze({
  icmp: 1, igmp: 2, ggp: 3, ipencap: 4, 'ip-encap': 4, st: 5, tcp: 6, egp: 8, igp: 9, pup: 12,
  udp: 17, hmp: 20, 'xns-idp': 22, rdp: 27, 'iso-tp4': 29, dccp: 33, xtp: 36, ddp: 37,
  'idpr-cmtp': 38, ipv6: 41, 'ipv6-route': 43, 'ipv6-frag': 44, idrp: 45, rsvp: 46, gre: 47,
  esp: 50, 'ipsec-esp': 50, ah: 51, 'ipsec-ah': 51, skip: 57, 'ipv6-icmp': 58, icmpv6: 58,
  'ipv6-nonxt': 59, 'ipv6-opts': 60, rspf: 73, vmtp: 81, eigrp: 88, ospf: 89, ospfigp: 89,
  'ax.25': 93, ipip: 94, etherip: 97, encap: 98, pim: 103, ipcomp: 108, vrrp: 112, l2tp: 115,
  isis: 124, sctp: 132, fc: 133, 'mobility-header': 135, udplite: 136, 'mpls-in-ip': 137,
  manet: 138, hip: 139, shim6: 140, wesp: 141, rohc: 142, ethernet: 143,
});

/** An inclusive port range; a single port is [p, p]. */
export type PortRange = [number, number];

/** An ICMP type match; code null matches every code of the type. */
export interface IcmpType {
  type: number;
  code: number | null;
}

/** `config redirect`: inbound port forwarding (DNAT) from wan to a LAN host. */
export interface Redirect {
  /** Line of the section's `config` keyword. */
  line: number;
  /** option name, else the uci section name, else null. */
  name: string | null;
  src: 'wan';
  dest: 'lan';
  /** Protocol numbers, sorted; never PROTO_ALL or ICMP. Either only tcp/udp, or only portless protocols. */
  proto: number[];
  /** Destination port(s) on the WAN address; null for portless protocols (esp, gre, ...). */
  srcDport: PortRange | null;
  /** The LAN host, dotted quad. */
  destIp: string;
  /** Port(s) on the LAN host, same length as srcDport; null exactly when srcDport is null. */
  destPort: PortRange | null;
  target: 'DNAT';
  family: 'ipv4';
}

/**
 * `config rule`: a filter rule. fw4 reads src_ip, dest_ip, dest_port and
 * icmp_type as lists (`option dest_port '500 4500'` is valid fw4), so they
 * are arrays here; an empty array matches everything.
 */
export interface Rule {
  line: number;
  name: string | null;
  src: 'wan' | 'lan';
  /** Source networks as normalised CIDR strings ('a.b.c.d/n', host bits cleared). */
  srcIp: string[];
  /** null: traffic to the router itself (fw4: rule without dest, chain input). */
  dest: 'lan' | null;
  destIp: string[];
  /** Only with proto tcp and/or udp. */
  destPort: PortRange[];
  /** Protocol numbers, or [PROTO_ALL]. Default tcp + udp, as in fw4. */
  proto: number[];
  /** Only with proto icmp alone. */
  icmpType: IcmpType[];
  target: 'ACCEPT' | 'REJECT' | 'DROP';
  family: 'ipv4';
}

export interface MainConfig {
  lanDevice: string;
  wanDevice: string;
  tunInside: string;
  tunOutside: string;
  /** Normalised CIDR strings; empty = derive from lan_device at run time. */
  lanSubnets: string[];
  maxFlows: number;
  logLevel: LogLevel;
  masqPorts: PortRange;
  tcpTimeout: number;
  tcpTransitoryTimeout: number;
  udpTimeout: number;
  icmpTimeout: number;
  fragTimeout: number;
  espTimeout: number;
  espInitTimeout: number;
  espInitRetries: number;
  ikeTimeout: number;
  nattTimeout: number;
  greTimeout: number;
  parallelSessions: boolean;
  espGuess: boolean;
  controlSocket: string;
  /** OpenWrt logical interface of the WAN (netifd name), for the hotplug script and procd triggers; the daemon itself only uses wan_device. */
  wanInterface: string;
  /** Directory of the state snapshot (tmpfs: no flash wear); the file is snapshot-<tun_inside>.bin. */
  snapshotDir: string;
  /** Seconds between snapshots while running; 0 = only at a clean stop. */
  snapshotInterval: number;
}

/** The whole configuration. Deeply frozen. */
export interface Config {
  file: string;
  main: MainConfig;
  /** Enabled redirects in file order (disabled ones are validated, then dropped). */
  redirects: Redirect[];
  /** Enabled rules in file order (disabled ones are validated, then dropped). */
  rules: Rule[];
}

/** Defaults of every main option that has one (lan_device and wan_device are required). */
export const MAIN_DEFAULTS: Readonly<Omit<MainConfig, 'lanDevice' | 'wanDevice'>> = Object.freeze({
  tunInside: 'tin',
  tunOutside: 'tout',
  lanSubnets: Object.freeze([]) as unknown as string[],
  maxFlows: 65536,
  logLevel: 'info',
  masqPorts: Object.freeze([61000, 65535]) as unknown as PortRange,
  tcpTimeout: 7440, // RFC 5382 REQ-5: established idle timeout >= 2 h 4 min
  tcpTransitoryTimeout: 240, // RFC 5382 REQ-5: transitory 4 min
  udpTimeout: 300, // RFC 4787 REQ-5: >= 2 min, 5 min recommended
  icmpTimeout: 60, // RFC 5508 REQ-1: query timeout >= 60 s
  fragTimeout: 30, // Linux ipfrag_time
  espTimeout: 1800,
  espInitTimeout: 120,
  espInitRetries: 5,
  ikeTimeout: 3600,
  nattTimeout: 300,
  greTimeout: 7440,
  parallelSessions: false,
  espGuess: false,
  controlSocket: '/var/run/vpnmasq.sock',
  wanInterface: 'wan',
  snapshotDir: '/run/vpnmasq',
  snapshotInterval: 1,
});

// ---------------------------------------------------------------------------
// Option tables

/** Main section option names, in the order used by formatConfig. */
export const MAIN_OPTIONS = [
  'lan_device', 'wan_device', 'tun_inside', 'tun_outside', 'lan_subnet', 'max_flows', 'log_level',
  'masq_ports', 'tcp_timeout', 'tcp_transitory_timeout', 'udp_timeout', 'icmp_timeout', 'frag_timeout',
  'esp_timeout', 'esp_init_timeout', 'esp_init_retries', 'ike_timeout', 'natt_timeout', 'gre_timeout',
  'parallel_sessions', 'esp_guess', 'control_socket', 'wan_interface', 'snapshot_dir', 'snapshot_interval',
] as const;

export const REDIRECT_OPTIONS = [
  'name', 'enabled', 'family', 'src', 'proto', 'src_dport', 'dest', 'dest_ip', 'dest_port', 'target',
] as const;

export const RULE_OPTIONS = [
  'name', 'enabled', 'family', 'src', 'src_ip', 'dest', 'dest_ip', 'dest_port', 'proto', 'icmp_type', 'target',
] as const;

// fw4 options vpnmasq knows of but does not implement: refused with a clear reason.
const FW4_TIME = ['utc_time', 'start_date', 'stop_date', 'start_time', 'stop_time', 'weekdays', 'monthdays'];
const FW4_REDIRECT_UNSUPPORTED = [
  '_name', 'src_ip', 'src_mac', 'src_port', 'src_dip', 'ipset', 'helper', 'reflection', 'reflection_src',
  'reflection_zone', 'limit', 'limit_burst', 'mark', 'log', 'counter', 'extra', ...FW4_TIME,
];
const FW4_RULE_UNSUPPORTED = [
  '_name', 'src_mac', 'src_port', 'device', 'direction', 'ipset', 'helper', 'set_helper', 'limit',
  'limit_burst', 'mark', 'set_mark', 'set_xmark', 'dscp', 'set_dscp', 'log', 'counter', 'extra', ...FW4_TIME,
];
const FW4_SECTIONS = ['defaults', 'zone', 'forwarding', 'nat', 'include', 'ipset', 'helper'];
const SECTION_TYPES = ['vpnmasq', 'redirect', 'rule'];

// fw4's ICMPv4 type names: [type, code or null for any code].
const ICMP_TYPES: Readonly<Record<string, [number, number | null]>> = {
  'echo-reply': [0, null], pong: [0, null],
  'destination-unreachable': [3, null], 'network-unreachable': [3, 0], 'host-unreachable': [3, 1],
  'protocol-unreachable': [3, 2], 'port-unreachable': [3, 3], 'fragmentation-needed': [3, 4],
  'source-route-failed': [3, 5], 'network-unknown': [3, 6], 'host-unknown': [3, 7],
  'network-prohibited': [3, 9], 'host-prohibited': [3, 10], 'TOS-network-unreachable': [3, 11],
  'TOS-host-unreachable': [3, 12], 'communication-prohibited': [3, 13],
  'host-precedence-violation': [3, 14], 'precedence-cutoff': [3, 15],
  'source-quench': [4, null],
  redirect: [5, null], 'network-redirect': [5, 0], 'host-redirect': [5, 1],
  'TOS-network-redirect': [5, 2], 'TOS-host-redirect': [5, 3],
  'echo-request': [8, null], ping: [8, null],
  'router-advertisement': [9, null], 'router-solicitation': [10, null],
  'time-exceeded': [11, null], 'ttl-exceeded': [11, null], 'ttl-zero-during-transit': [11, 0],
  'ttl-zero-during-reassembly': [11, 1],
  'parameter-problem': [12, null], 'ip-header-bad': [12, 0], 'required-option-missing': [12, 1],
  'timestamp-request': [13, null], 'timestamp-reply': [14, null],
  'address-mask-request': [17, null], 'address-mask-reply': [18, null],
};

const BOOL_TRUE = ['1', 'yes', 'on', 'true', 'enabled'];
const BOOL_FALSE = ['0', 'no', 'off', 'false', 'disabled'];

/** Longest timeout: milliseconds must fit a signed 32-bit timer (Node's setTimeout). */
const MAX_TIMEOUT = 2147483;

// ---------------------------------------------------------------------------
// Helpers

/** One value of an option, with where it came from. */
interface Val {
  value: string;
  line: number;
  /** 'option NAME' or 'list NAME', for messages. */
  label: string;
}

function show(s: string): string {
  return JSON.stringify(s.length > 60 ? `${s.slice(0, 60)}...` : s).slice(1, -1);
}

function editDistance(a: string, b: string): number {
  const d: number[] = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    let prev = d[0]!;
    d[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const tmp = d[j]!;
      d[j] = Math.min(d[j]! + 1, d[j - 1]! + 1, prev + (a[i - 1] === b[j - 1] ? 0 : 1));
      prev = tmp;
    }
  }
  return d[b.length]!;
}

/** Known names close to `name` (typos, swapped words), best first. */
function closeNames(name: string, known: readonly string[]): string[] {
  const limit = Math.max(1, Math.min(3, Math.floor(name.length / 3)));
  const near = known
    .map((k) => ({ k, d: editDistance(name, k) }))
    .filter(({ d }) => d <= limit)
    .sort((x, y) => x.d - y.d)
    .map(({ k }) => k);
  if (near.length > 0) return near;
  return known.filter((k) => k.length >= 4 && name.length >= 4 && (k.includes(name) || name.includes(k)));
}

function quoteList(names: readonly string[]): string {
  return names.map((n) => `'${n}'`).join(', ');
}

function portText(r: PortRange): string {
  return r[0] === r[1] ? `${r[0]}` : `${r[0]}-${r[1]}`;
}

function protoText(p: number): string {
  if (p === PROTO_ALL) return 'all';
  for (const [name, num] of Object.entries(PROTOCOL_NAMES)) if (num === p) return name;
  return `${p}`;
}

function overlaps(a: PortRange, b: PortRange): boolean {
  return a[0] <= b[1] && b[0] <= a[1];
}

function deepFreeze<T>(o: T): T {
  if (o !== null && typeof o === 'object' && !Object.isFrozen(o)) {
    Object.freeze(o);
    for (const v of Object.values(o as object)) deepFreeze(v);
  }
  return o;
}

/** Reads one section's options, remembering which lines they came from. */
class Sec {
  readonly opts = new Map<string, UciOption>();

  constructor(
    readonly file: string,
    readonly s: UciSection,
  ) {
    for (const o of s.options) this.opts.set(o.name, o);
  }

  fail(line: number, reason: string): never {
    throw new ConfigError(this.file, line, reason);
  }

  /** Refuses options not in `known`, explaining fw4 options vpnmasq does not implement. */
  checkKnown(known: readonly string[], unsupported: readonly string[] = []): void {
    for (const o of this.s.options) {
      if (known.includes(o.name)) continue;
      const kw = o.list ? 'list' : 'option';
      if (unsupported.includes(o.name)) {
        this.fail(o.line, `${kw} ${o.name}: this fw4 option is not supported by vpnmasq in a '${this.s.type}' section`);
      }
      const close = closeNames(o.name, known);
      const hint = close.length > 0 ? `did you mean ${quoteList(close.slice(0, 3))}?` : `known options: ${known.join(', ')}`;
      this.fail(o.line, `${kw} ${o.name}: unknown option in a '${this.s.type}' section (${hint})`);
    }
  }

  has(name: string): boolean {
    return this.opts.has(name);
  }

  /** A single-valued option; a `list` is refused. */
  get(name: string): Val | null {
    const o = this.opts.get(name);
    if (!o) return null;
    if (o.list) this.fail(o.line, `list ${name}: must be a single value; use 'option ${name}'`);
    return { value: o.values[0]!, line: o.line, label: `option ${name}` };
  }

  /** A list-valued option: `list` entries, or an `option` holding whitespace-separated values (as fw4 reads it). */
  list(name: string): Val[] {
    const o = this.opts.get(name);
    if (!o) return [];
    if (o.list) return o.values.map((value, i) => ({ value, line: o.lines[i]!, label: `list ${name}` }));
    const words = o.values[0]!.split(/[ \t\r\n]+/).filter((w) => w !== '');
    if (words.length === 0) this.fail(o.line, `option ${name}: empty value`);
    return words.map((value) => ({ value, line: o.line, label: `option ${name}` }));
  }

  /** The option's line, or the section's line when it is absent. */
  lineOf(name: string): number {
    return this.opts.get(name)?.line ?? this.s.line;
  }

  required(name: string): Val {
    const v = this.get(name);
    if (!v) this.fail(this.s.line, `${this.s.type}: option ${name} is required`);
    return v;
  }
}

function bad(sec: Sec, v: Val, what: string): never {
  sec.fail(v.line, `${v.label}: '${show(v.value)}' ${what}`);
}

function parseBool(sec: Sec, v: Val | null, dflt: boolean): boolean {
  if (!v) return dflt;
  if (BOOL_TRUE.includes(v.value)) return true;
  if (BOOL_FALSE.includes(v.value)) return false;
  bad(sec, v, `is not a boolean (use one of ${[...BOOL_TRUE, ...BOOL_FALSE].join(', ')})`);
}

function parseUint(sec: Sec, v: Val, min: number, max: number, unit = ''): number {
  if (!/^[0-9]+$/.test(v.value)) bad(sec, v, 'is not a whole number');
  const n = Number(v.value);
  if (n < min || n > max) bad(sec, v, `is out of range (${min}..${max}${unit})`);
  return n;
}

function intOpt(sec: Sec, name: string, dflt: number, min: number, max: number, unit = ''): number {
  const v = sec.get(name);
  return v ? parseUint(sec, v, min, max, unit) : dflt;
}

/** A port or range as fw4 writes it: 'p', 'a-b' or 'a:b'. */
function parsePortRange(sec: Sec, v: Val, min = 1, max = 65535): PortRange {
  if (v.value.startsWith('!')) bad(sec, v, "uses negation ('!'), which vpnmasq does not support");
  const m = /^([0-9]{1,5})(?:[-:]([0-9]{1,5}))?$/.exec(v.value);
  if (!m) bad(sec, v, "is not a port or port range ('80' or '8000-8080')");
  const lo = Number(m[1]);
  const hi = m[2] === undefined ? lo : Number(m[2]);
  if (lo < min || hi < min || lo > max || hi > max) {
    bad(sec, v, `is out of range (ports ${min}..${max})`);
  }
  if (lo > hi) bad(sec, v, 'is an empty range (first port is above the last)');
  return [lo, hi];
}

/** Linux network interface name rules (net/core/dev.c dev_valid_name). */
function parseIfname(sec: Sec, v: Val): string {
  const s = v.value;
  const bytes = Buffer.byteLength(s, 'utf8');
  if (bytes > 15) bad(sec, v, `is too long for a Linux interface name (${bytes} bytes, at most 15)`);
  if (s === '.' || s === '..') bad(sec, v, 'is not a valid Linux interface name');
  if (/[/:\s]/.test(s)) bad(sec, v, "is not a valid Linux interface name (no '/', ':' or whitespace)");
  if (s.includes('%')) bad(sec, v, "is not usable as an interface name ('%' makes the kernel treat it as a name template)");
  return s;
}

function parseIPv4(sec: Sec, v: Val, s = v.value): ipaddr.IPv4 {
  if (!ipaddr.IPv4.isValidFourPartDecimal(s)) bad(sec, v, 'is not an IPv4 address');
  return ipaddr.IPv4.parse(s);
}

function refuseFamily6(sec: Sec, v: Val, s: string): void {
  if (s.includes(':') && ipaddr.IPv6.isValid(s.split('/')[0]!)) {
    bad(sec, v, 'is an IPv6 address; vpnmasq is IPv4-only');
  }
}

/**
 * An IPv4 network: 'a.b.c.d/n', 'a.b.c.d/m.m.m.m' (contiguous mask) or, when
 * `plainIsHost`, a bare address meaning /32. Host bits are cleared, as fw4
 * does. Returns [network, prefix length].
 */
function parseCidr(sec: Sec, v: Val, plainIsHost: boolean): [ipaddr.IPv4, number] {
  if (v.value.startsWith('!')) bad(sec, v, "uses negation ('!'), which vpnmasq does not support");
  refuseFamily6(sec, v, v.value);
  const slash = v.value.indexOf('/');
  if (slash < 0) {
    if (!plainIsHost) bad(sec, v, "needs a prefix length (e.g. '192.168.1.0/24')");
    return [parseIPv4(sec, v), 32];
  }
  const addrText = v.value.slice(0, slash);
  const maskText = v.value.slice(slash + 1);
  if (!ipaddr.IPv4.isValidFourPartDecimal(addrText)) bad(sec, v, 'is not an IPv4 address or network');
  let prefix: number;
  if (/^(0|[1-9][0-9]?)$/.test(maskText)) {
    prefix = Number(maskText);
    if (prefix > 32) bad(sec, v, 'has a prefix length above 32');
  } else if (ipaddr.IPv4.isValidFourPartDecimal(maskText)) {
    const p = ipaddr.IPv4.parse(maskText).prefixLengthFromSubnetMask();
    if (p === null) bad(sec, v, 'has a non-contiguous netmask');
    prefix = p;
  } else {
    bad(sec, v, 'has an invalid prefix length or netmask');
  }
  const net = ipaddr.IPv4.networkAddressFromCIDR(`${addrText}/${prefix}`);
  return [net, prefix];
}

/**
 * Addresses no LAN host can have: 0.0.0.0/8, loopback, multicast, 240.0.0.0/4
 * and the limited broadcast. (Documentation and benchmarking ranges stay
 * usable: labs use them.)
 */
function unusableRange(ip: ipaddr.IPv4): string | null {
  const r = ip.range();
  if (r === 'unspecified' || r === 'loopback' || r === 'multicast' || r === 'broadcast') return r;
  if (ip.octets[0]! >= 240) return 'reserved, 240.0.0.0/4';
  return null;
}

function cidrText(c: [ipaddr.IPv4, number]): string {
  return `${c[0].toString()}/${c[1]}`;
}

function familyOpt(sec: Sec): 'ipv4' {
  const v = sec.get('family');
  if (!v) return 'ipv4';
  const f = v.value.toLowerCase();
  if (['ipv4', '4', 'inet', 'any', 'all', '*'].includes(f)) return 'ipv4';
  if (f.includes('6')) bad(sec, v, 'is refused: vpnmasq is IPv4-only');
  bad(sec, v, "is not a family (use 'ipv4')");
}

/** One proto word as fw4's parse_protocol reads it. */
function protoWord(sec: Sec, v: Val): number[] {
  if (v.value.startsWith('!')) bad(sec, v, "uses negation ('!'), which vpnmasq does not support");
  const w = v.value.toLowerCase();
  if (w === 'all' || w === 'any' || w === '*') return [PROTO_ALL];
  if (w === 'tcpudp') return [PROTO_TCP, PROTO_UDP];
  let p: number;
  if (/^[0-9]+$/.test(w)) {
    p = Number(w);
    if (p > 255) bad(sec, v, 'is not a protocol number (0..255)');
  } else if (Object.prototype.hasOwnProperty.call(PROTOCOL_NAMES, w)) {
    p = PROTOCOL_NAMES[w]!;
  } else if (w === 'ip') {
    bad(sec, v, "is ambiguous (protocol 0 in /etc/protocols); use 'all' for every protocol or '0'");
  } else {
    bad(sec, v, 'is not a known protocol name or number (0..255)');
  }
  if (p === PROTO_ICMPV6) bad(sec, v, 'is an IPv6 protocol; vpnmasq is IPv4-only');
  return [p];
}

/** `proto` of a redirect or rule; default 'tcp udp' (fw4's 'tcpudp'). */
function protoOpt(sec: Sec): { proto: number[]; vals: Val[] } {
  const vals = sec.list('proto');
  if (vals.length === 0) return { proto: [PROTO_TCP, PROTO_UDP], vals };
  const set = new Set<number>();
  for (const v of vals) for (const p of protoWord(sec, v)) set.add(p);
  if (set.has(PROTO_ALL) && set.size > 1) {
    sec.fail(sec.lineOf('proto'), "option proto: 'all' already covers every protocol; do not combine it with others");
  }
  return { proto: [...set].sort((a, b) => a - b), vals };
}

function isPortProto(p: number): boolean {
  return p === PROTO_TCP || p === PROTO_UDP;
}

function zoneOpt<T extends string>(sec: Sec, name: string, allowed: readonly T[], why: string): T | null {
  const v = sec.get(name);
  if (!v) return null;
  if ((allowed as readonly string[]).includes(v.value)) return v.value as T;
  if (v.value === '*') bad(sec, v, `(any zone) is not supported; ${why}`);
  bad(sec, v, `is not a valid zone here; ${why}`);
}

function nameOpt(sec: Sec): string | null {
  const v = sec.get('name');
  return v ? v.value : sec.s.name;
}

// ---------------------------------------------------------------------------
// Sections

function parseMain(sec: Sec): MainConfig {
  sec.checkKnown(MAIN_OPTIONS);
  const D = MAIN_DEFAULTS;

  const lanDevice = parseIfname(sec, sec.required('lan_device'));
  const wanDevice = parseIfname(sec, sec.required('wan_device'));
  const tinV = sec.get('tun_inside');
  const toutV = sec.get('tun_outside');
  const tunInside = tinV ? parseIfname(sec, tinV) : D.tunInside;
  const tunOutside = toutV ? parseIfname(sec, toutV) : D.tunOutside;

  const devs: [string, string][] = [
    ['lan_device', lanDevice],
    ['wan_device', wanDevice],
    ['tun_inside', tunInside],
    ['tun_outside', tunOutside],
  ];
  for (let i = 1; i < devs.length; i++) {
    for (let j = 0; j < i; j++) {
      if (devs[i]![1] === devs[j]![1]) {
        const [n, d] = devs[i]!;
        sec.fail(sec.lineOf(n), `option ${n}: '${show(d)}' is also the ${devs[j]![0]}; each device must be different`);
      }
    }
  }

  const subnets: { c: [ipaddr.IPv4, number]; v: Val }[] = [];
  for (const v of sec.list('lan_subnet')) {
    const c = parseCidr(sec, v, false);
    if (c[1] === 0) bad(sec, v, 'covers every address; a LAN subnet must be narrower');
    const kind = unusableRange(c[0]);
    if (kind) bad(sec, v, `is not a LAN subnet (${kind})`);
    for (const o of subnets) {
      if (c[0].match(o.c) || o.c[0].match(c)) {
        bad(sec, v, `overlaps lan_subnet '${cidrText(o.c)}' (line ${o.v.line})`);
      }
    }
    subnets.push({ c, v });
  }

  const maxFlows = intOpt(sec, 'max_flows', D.maxFlows, 1024, 4194304);

  let logLevel: LogLevel = D.logLevel;
  const llV = sec.get('log_level');
  if (llV) {
    if (!(LOG_LEVELS as readonly string[]).includes(llV.value)) bad(sec, llV, `is not a log level (${LOG_LEVELS.join(', ')})`);
    logLevel = llV.value as LogLevel;
  }

  const mpV = sec.get('masq_ports');
  const masqPorts: PortRange = mpV ? parsePortRange(sec, mpV, 1024, 65535) : [D.masqPorts[0], D.masqPorts[1]];

  const t = (name: string, dflt: number, max = MAX_TIMEOUT) => intOpt(sec, name, dflt, 1, max, ' seconds');
  const tcpTimeout = t('tcp_timeout', D.tcpTimeout);
  const tcpTransitoryTimeout = t('tcp_transitory_timeout', D.tcpTransitoryTimeout);
  const udpTimeout = t('udp_timeout', D.udpTimeout);
  const icmpTimeout = t('icmp_timeout', D.icmpTimeout);
  // An IPv4 datagram's fragments cannot outlive its 8-bit TTL (RFC 791).
  const fragTimeout = t('frag_timeout', D.fragTimeout, 255);
  const espTimeout = t('esp_timeout', D.espTimeout);
  const espInitTimeout = t('esp_init_timeout', D.espInitTimeout);
  const espInitRetries = intOpt(sec, 'esp_init_retries', D.espInitRetries, 0, 100);
  const ikeTimeout = t('ike_timeout', D.ikeTimeout);
  const nattTimeout = t('natt_timeout', D.nattTimeout);
  const greTimeout = t('gre_timeout', D.greTimeout);

  if (ikeTimeout < espTimeout) {
    const name = sec.has('ike_timeout') ? 'ike_timeout' : 'esp_timeout';
    sec.fail(
      sec.lineOf(name),
      `option ${name}: ike_timeout (${ikeTimeout}) must be at least esp_timeout (${espTimeout}): ` +
        'the IKE mapping must outlive the ESP mappings it negotiated, or rekeying breaks',
    );
  }

  const parallelSessions = parseBool(sec, sec.get('parallel_sessions'), D.parallelSessions);
  const espGuess = parseBool(sec, sec.get('esp_guess'), D.espGuess);

  let controlSocket = D.controlSocket;
  const csV = sec.get('control_socket');
  if (csV) {
    const s = csV.value;
    if (!s.startsWith('/')) bad(sec, csV, 'is not an absolute path');
    if (s.endsWith('/')) bad(sec, csV, 'names a directory, not a socket file');
    if (/[\r\n]/.test(s)) bad(sec, csV, 'contains a line break');
    const bytes = Buffer.byteLength(s, 'utf8');
    if (bytes > 107) bad(sec, csV, `is too long for a Unix socket path (${bytes} bytes, at most 107)`);
    controlSocket = s;
  }

  let wanInterface = D.wanInterface;
  const wiV = sec.get('wan_interface');
  if (wiV) {
    if (!/^[A-Za-z0-9_]{1,15}$/.test(wiV.value)) bad(sec, wiV, 'is not a netifd interface name (letters, digits, _; at most 15)');
    wanInterface = wiV.value;
  }

  let snapshotDir = D.snapshotDir;
  const sdV = sec.get('snapshot_dir');
  if (sdV) {
    const s = sdV.value;
    if (!s.startsWith('/')) bad(sec, sdV, 'is not an absolute path');
    if (/[\r\n]/.test(s)) bad(sec, sdV, 'contains a line break');
    snapshotDir = s.length > 1 ? s.replace(/\/+$/, '') : s;
  }
  const snapshotInterval = intOpt(sec, 'snapshot_interval', D.snapshotInterval, 0, 3600, ' seconds');

  return {
    lanDevice,
    wanDevice,
    tunInside,
    tunOutside,
    lanSubnets: subnets.map((s) => cidrText(s.c)),
    maxFlows,
    logLevel,
    masqPorts,
    tcpTimeout,
    tcpTransitoryTimeout,
    udpTimeout,
    icmpTimeout,
    fragTimeout,
    espTimeout,
    espInitTimeout,
    espInitRetries,
    ikeTimeout,
    nattTimeout,
    greTimeout,
    parallelSessions,
    espGuess,
    controlSocket,
    wanInterface,
    snapshotDir,
    snapshotInterval,
  };
}

interface Parsed<T> {
  value: T;
  enabled: boolean;
  sec: Sec;
}

function parseRedirect(sec: Sec): Parsed<Redirect> {
  sec.checkKnown(REDIRECT_OPTIONS, FW4_REDIRECT_UNSUPPORTED);
  const name = nameOpt(sec);
  const enabled = parseBool(sec, sec.get('enabled'), true);
  const family = familyOpt(sec);
  const src = zoneOpt(sec, 'src', ['wan'] as const, "redirects forward traffic arriving on 'wan'") ?? 'wan';
  const dest = zoneOpt(sec, 'dest', ['lan'] as const, "redirects forward to a host on 'lan'") ?? 'lan';

  const tV = sec.get('target');
  if (tV) {
    const t = tV.value.toLowerCase();
    if (t === 'snat') bad(sec, tV, 'is not supported: vpnmasq masquerades outbound traffic itself (redirect target is DNAT)');
    if (t !== 'dnat') bad(sec, tV, "is not a redirect target (only 'DNAT')");
  }

  const { proto, vals } = protoOpt(sec);
  const protoLine = sec.lineOf('proto');
  if (proto.includes(PROTO_ALL)) {
    sec.fail(protoLine, "option proto: 'all' is not supported for redirects; name the protocols to forward");
  }
  if (proto.includes(PROTO_ICMP)) {
    sec.fail(vals.find((v) => protoWord(sec, v).includes(PROTO_ICMP))?.line ?? protoLine, 'option proto: icmp cannot be redirected');
  }
  const ported = proto.filter(isPortProto);
  if (ported.length > 0 && ported.length < proto.length) {
    sec.fail(
      protoLine,
      `option proto: '${proto.map(protoText).join(' ')}' mixes tcp/udp (which need src_dport) with portless protocols; ` +
        'use one redirect section for each',
    );
  }

  let srcDport: PortRange | null = null;
  let destPort: PortRange | null = null;
  const sdV = sec.get('src_dport');
  const dpV = sec.get('dest_port');
  if (ported.length > 0) {
    if (!sdV) sec.fail(sec.s.line, `redirect: option src_dport is required for proto ${proto.map(protoText).join(' ')}`);
    srcDport = parsePortRange(sec, sdV);
    destPort = srcDport;
    if (dpV) {
      destPort = parsePortRange(sec, dpV);
      const a = srcDport[1] - srcDport[0];
      const b = destPort[1] - destPort[0];
      if (a !== b) {
        bad(sec, dpV, `does not have the same length as src_dport '${portText(srcDport)}' (${a + 1} vs ${b + 1} ports)`);
      }
    }
  } else {
    const what = proto.map(protoText).join(' ');
    if (sdV) bad(sec, sdV, `is not allowed: proto ${what} has no ports (only tcp and udp do)`);
    if (dpV) bad(sec, dpV, `is not allowed: proto ${what} has no ports (only tcp and udp do)`);
  }

  const diV = sec.required('dest_ip');
  refuseFamily6(sec, diV, diV.value);
  const ip = parseIPv4(sec, diV);
  const kind = unusableRange(ip);
  if (kind) bad(sec, diV, `is not a LAN host address (${kind})`);

  return {
    value: { line: sec.s.line, name, src, dest, proto, srcDport, destIp: ip.toString(), destPort, target: 'DNAT', family },
    enabled,
    sec,
  };
}

function parseIcmpType(sec: Sec, v: Val): IcmpType | null {
  if (v.value === 'any') return null;
  const named = Object.prototype.hasOwnProperty.call(ICMP_TYPES, v.value) ? ICMP_TYPES[v.value] : undefined;
  if (named) return { type: named[0], code: named[1] };
  const m = /^([0-9]{1,3})(?:\/([0-9]{1,3}))?$/.exec(v.value);
  if (!m) bad(sec, v, "is not an ICMP type (a name such as 'echo-request', a number, or 'type/code')");
  const type = Number(m[1]);
  const code = m[2] === undefined ? null : Number(m[2]);
  if (type > 255 || (code !== null && code > 255)) bad(sec, v, 'is out of range (type and code are 0..255)');
  return { type, code };
}

function parseRule(sec: Sec): Parsed<Rule> {
  sec.checkKnown(RULE_OPTIONS, FW4_RULE_UNSUPPORTED);
  const name = nameOpt(sec);
  const enabled = parseBool(sec, sec.get('enabled'), true);
  const family = familyOpt(sec);

  const srcV = sec.get('src');
  if (!srcV) sec.fail(sec.s.line, "rule: option src is required ('wan' or 'lan')");
  const src = zoneOpt(sec, 'src', ['wan', 'lan'] as const, "use 'wan' or 'lan'")!;
  const dest = zoneOpt(sec, 'dest', ['lan'] as const, "use 'lan', or leave dest out for traffic to the router itself");
  if (src === 'lan' && dest === 'lan') {
    sec.fail(sec.lineOf('dest'), "option dest: 'lan' to 'lan' traffic never passes through the router");
  }

  const srcIp = sec.list('src_ip').map((v) => cidrText(parseCidr(sec, v, true)));
  const destIp = sec.list('dest_ip').map((v) => cidrText(parseCidr(sec, v, true)));

  const { proto } = protoOpt(sec);
  const what = proto.map(protoText).join(' ');

  const dpVals = sec.list('dest_port');
  if (dpVals.length > 0 && !proto.every(isPortProto)) {
    sec.fail(sec.lineOf('dest_port'), `option dest_port: only valid with proto tcp and/or udp (proto is '${what}')`);
  }
  const destPort = dpVals.map((v) => parsePortRange(sec, v));

  const itVals = sec.list('icmp_type');
  if (itVals.length > 0 && !(proto.length === 1 && proto[0] === PROTO_ICMP)) {
    sec.fail(sec.lineOf('icmp_type'), `option icmp_type: only valid with proto icmp alone (proto is '${what}')`);
  }
  const icmpParsed = itVals.map((v) => parseIcmpType(sec, v));
  if (icmpParsed.includes(null) && icmpParsed.length > 1) {
    sec.fail(sec.lineOf('icmp_type'), "option icmp_type: 'any' already covers every type; do not combine it with others");
  }
  const icmpType = icmpParsed.filter((x): x is IcmpType => x !== null);

  const tV = sec.get('target');
  if (!tV) sec.fail(sec.s.line, "rule: option target is required ('ACCEPT', 'REJECT' or 'DROP')");
  const t = tV.value.toUpperCase();
  if (t !== 'ACCEPT' && t !== 'REJECT' && t !== 'DROP') {
    bad(sec, tV, "is not a supported rule target ('ACCEPT', 'REJECT' or 'DROP')");
  }

  return {
    value: { line: sec.s.line, name, src, srcIp, dest, destIp, destPort, proto, icmpType, target: t, family },
    enabled,
    sec,
  };
}

// ---------------------------------------------------------------------------
// Whole file

function checkRedirects(main: MainConfig, mainSec: Sec, redirects: Parsed<Redirect>[]): void {
  const lan = main.lanSubnets.map((s) => ipaddr.IPv4.parseCIDR(s));
  for (let i = 0; i < redirects.length; i++) {
    const { value: r, sec } = redirects[i]!;

    if (lan.length > 0) {
      const ip = ipaddr.IPv4.parse(r.destIp);
      const found = lan.find((c) => ip.match(c));
      const line = sec.lineOf('dest_ip');
      const inside: [ipaddr.IPv4, number] =
        found ?? sec.fail(line, `option dest_ip: ${r.destIp} is not inside any lan_subnet (${main.lanSubnets.join(', ')})`);
      if (inside[1] <= 30) {
        const cidr = `${inside[0].toString()}/${inside[1]}`;
        if (ip.toString() === ipaddr.IPv4.networkAddressFromCIDR(cidr).toString()) {
          sec.fail(line, `option dest_ip: ${r.destIp} is the network address of lan_subnet ${cidr}, not a host`);
        }
        if (ip.toString() === ipaddr.IPv4.broadcastAddressFromCIDR(cidr).toString()) {
          sec.fail(line, `option dest_ip: ${r.destIp} is the broadcast address of lan_subnet ${cidr}, not a host`);
        }
      }
    }

    if (r.srcDport) {
      const [lo, hi] = main.masqPorts;
      if (overlaps(r.srcDport, main.masqPorts)) {
        const where = mainSec.has('masq_ports') ? `masq_ports ${lo}-${hi} (line ${mainSec.lineOf('masq_ports')})` : `masq_ports ${lo}-${hi} (the default)`;
        sec.fail(
          sec.lineOf('src_dport'),
          `option src_dport: ${portText(r.srcDport)} overlaps ${where}: inbound packets to these ports could ` +
            'belong to masqueraded connections, so the redirect would be stolen by the masquerade pool; ' +
            'use ports outside masq_ports or narrow masq_ports',
        );
      }
    }

    for (let j = 0; j < i; j++) {
      const o = redirects[j]!.value;
      const common = r.proto.filter((p) => o.proto.includes(p));
      if (common.length === 0) continue;
      const protos = common.map(protoText).join('/');
      if (r.srcDport && o.srcDport) {
        if (overlaps(r.srcDport, o.srcDport)) {
          sec.fail(
            sec.lineOf('src_dport'),
            `option src_dport: ${protos} ${portText(r.srcDport)} conflicts with the redirect at line ${o.line} ` +
              `(${protos} ${portText(o.srcDport)}): a port can be redirected to one place only`,
          );
        }
      } else {
        sec.fail(
          sec.lineOf('proto'),
          `option proto: ${protos} is already redirected by the redirect at line ${o.line}; a protocol can be redirected to one host only`,
        );
      }
    }
  }
}

/** Validates a parsed UCI file into a deeply frozen Config. Throws ConfigError. */
export function validateConfig(uci: UciFile): Config {
  const file = uci.file;
  let main: MainConfig | null = null;
  let mainSec: Sec | null = null;
  const redirects: Parsed<Redirect>[] = [];
  const rules: Parsed<Rule>[] = [];

  for (const s of uci.sections) {
    const sec = new Sec(file, s);
    switch (s.type) {
      case 'vpnmasq':
        if (mainSec) {
          sec.fail(s.line, `config vpnmasq: a second main section (the first is at line ${mainSec.s.line}); exactly one is allowed`);
        }
        mainSec = sec;
        main = parseMain(sec);
        break;
      case 'redirect':
        redirects.push(parseRedirect(sec));
        break;
      case 'rule':
        rules.push(parseRule(sec));
        break;
      default: {
        if (FW4_SECTIONS.includes(s.type)) {
          sec.fail(s.line, `config ${s.type}: this fw4 section type is not supported by vpnmasq (known: ${SECTION_TYPES.join(', ')})`);
        }
        const close = closeNames(s.type, SECTION_TYPES);
        const hint = close.length > 0 ? `did you mean ${quoteList(close)}?` : `known: ${SECTION_TYPES.join(', ')}`;
        sec.fail(s.line, `config ${show(s.type)}: unknown section type (${hint})`);
      }
    }
  }

  if (!main || !mainSec) {
    throw new ConfigError(file, 0, "missing the main section: add \"config vpnmasq 'main'\" with at least lan_device and wan_device");
  }

  const enabledRedirects = redirects.filter((r) => r.enabled);
  checkRedirects(main, mainSec, enabledRedirects);

  return deepFreeze({
    file,
    main,
    redirects: enabledRedirects.map((r) => r.value),
    rules: rules.filter((r) => r.enabled).map((r) => r.value),
  });
}
