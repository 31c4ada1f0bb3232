// Validation of the parsed UCI file into one typed, frozen Config.
//
// Sections and option names follow OpenWrt firewall4 (fw4) wherever fw4 has
// the concept (`config redirect`, `config rule`, proto, src, src_ip,
// src_dport, dest, dest_ip, dest_port, target, family, enabled, name), and
// values are read the way fw4 reads them (e.g. proto 'tcpudp', a port range
// 'a-b' or 'a:b', whitespace-separated values in an `option` of a list
// type). Everything is checked up front, the whole file: the ConfigError
// thrown is the first problem (`FILE:LINE: reason` at the offending line)
// and carries every problem found in `all` (each section is read to its
// end, or to a problem that makes the rest of it meaningless).
//
// The main section (`config vpnmasq`) is read by the option table in
// options.ts; the value parsers shared by all sections are in values.ts.

import ipaddr from 'ipaddr.js';
import { ConfigError, type UciFile } from './uci.js';
import { PROTO_AH, PROTO_ESP, PROTO_GRE, PROTO_ICMP, PROTO_TCP, PROTO_UDP } from '../engine/abi.gen.js';
import { parseMain, type MainConfig } from './options.js';
import {
  Sec, bad, closeNames, parseBool, parseCidr, parseIPv4, parsePortRange, portText, quoteList, refuseFamily6, show,
  unusableRange, cidrText, type PortRange, type Val,
} from './values.js';

export { ConfigError };
export type { PortRange };
export { LOG_LEVELS, MAIN_DEFAULTS, MAIN_OPTIONS, MAIN_TABLE } from './options.js';
export type { EngineSettings, LogLevel, MainConfig } from './options.js';

// Protocols are IANA IP protocol numbers (0..255), the numbers in
// /etc/protocols and in the IPv4 header's protocol field. fw4's proto
// 'all' (also 'any', '*') is the pseudo number PROTO_ALL = -1; it only
// ever appears alone, as `proto: [PROTO_ALL]`. Protocol lists in Config are
// sorted ascending and free of duplicates.
// The numbers the engine handles come from its ABI (assembly/abi/codes.ts).
export const PROTO_ALL = -1;
export { PROTO_AH, PROTO_ESP, PROTO_GRE, PROTO_ICMP, PROTO_TCP, PROTO_UDP };
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
  // The options below are present only when the file gives them (absent:
  // fw4's default), so a plain forward reads the same as it always did.
  /** fw4 src_ip: only WAN sources in this network (normalised CIDR) are forwarded. Absent: any. */
  srcIp?: string;
  /** fw4 src_port: only from these source ports. Absent: any. tcp/udp only. */
  srcPort?: PortRange;
  /** fw4 src_dip: only packets to this address (the WAN address it must have). Absent: any. */
  srcDip?: string;
  /**
   * fw4 reflection (NAT loopback; absent: on) and reflection_src (absent:
   * 'internal'): a LAN host that reaches the forward through the WAN address
   * gets the server, which sees the router's LAN address (internal) or the
   * WAN address (external); assembly/nat/hairpin.ts, README.
   */
  reflection?: boolean;
  reflectionSrc?: 'internal' | 'external';
  target: 'DNAT';
  family: 'ipv4';
}

/**
 * `config rule`: a filter rule. fw4 reads src_ip, src_port, dest_ip,
 * dest_port and icmp_type as lists (`option dest_port '500 4500'` is valid
 * fw4), so they are arrays here; an empty array matches everything.
 *
 * The shapes vpnmasq enforces, with fw4's meaning (rules decide only what
 * opens a new connection; established traffic passes, as fw4's
 * `ct state established,related accept` comes first):
 *   src wan, no dest   input: WAN → the router itself
 *   src wan, dest lan  forward: WAN → a LAN host, routed or through a redirect
 *                      (matched after DNAT: dest_ip/dest_port are the LAN host's)
 *   src lan, dest wan  forward: a LAN host → the WAN, before masquerading
 * Refused at load: src lan without dest (input from the LAN: LAN → router
 * traffic never reaches vpnmasq) and src = dest (never crosses it).
 */
export interface Rule {
  line: number;
  name: string | null;
  src: 'wan' | 'lan';
  /** Source networks as normalised CIDR strings ('a.b.c.d/n', host bits cleared). */
  srcIp: string[];
  /** Only with proto tcp and/or udp. */
  srcPort: PortRange[];
  /** null: traffic to the router itself (fw4: rule without dest, chain input); else the zone it is forwarded to. */
  dest: 'lan' | 'wan' | null;
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

/** The whole configuration. Deeply frozen. */
export interface Config {
  file: string;
  main: MainConfig;
  /** Enabled redirects in file order (disabled ones are validated, then dropped). */
  redirects: Redirect[];
  /** Enabled rules in file order (disabled ones are validated, then dropped). */
  rules: Rule[];
}

// ---------------------------------------------------------------------------
// Option tables of the redirect and rule sections (the main section's is
// MAIN_TABLE in options.ts)

export const REDIRECT_OPTIONS = [
  'name', 'enabled', 'family', 'src', 'src_ip', 'src_port', 'src_dip', 'proto', 'src_dport', 'dest', 'dest_ip',
  'dest_port', 'reflection', 'reflection_src', 'target',
] as const;

export const RULE_OPTIONS = [
  'name', 'enabled', 'family', 'src', 'src_ip', 'src_port', 'dest', 'dest_ip', 'dest_port', 'proto', 'icmp_type', 'target',
] as const;

// fw4 options vpnmasq knows of but does not implement: refused with a clear reason.
const FW4_TIME = ['utc_time', 'start_date', 'stop_date', 'start_time', 'stop_time', 'weekdays', 'monthdays'];
const FW4_REDIRECT_UNSUPPORTED = [
  '_name', 'src_mac', 'ipset', 'helper', 'reflection_zone', 'limit', 'limit_burst', 'mark', 'log', 'counter', 'extra', ...FW4_TIME,
];
const FW4_RULE_UNSUPPORTED = [
  '_name', 'src_mac', 'device', 'direction', 'ipset', 'helper', 'set_helper', 'limit',
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

// ---------------------------------------------------------------------------
// Redirect and rule helpers

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

  // Who may use the forward (fw4's src_ip, src_port, src_dip). The engine
  // matches them for port forwards (tcp/udp) on a forward's first packet.
  const siVals = sec.list('src_ip');
  const spV = sec.get('src_port');
  const sdipV = sec.get('src_dip');
  if (ported.length === 0) {
    const what = proto.map(protoText).join(' ');
    for (const v of [siVals[0], spV, sdipV]) {
      if (v) bad(sec, v, `is not supported by vpnmasq for a protocol forward (proto ${what}); only tcp/udp port forwards can be limited`);
    }
  }
  if (siVals.length > 1) {
    bad(sec, siVals[1]!, 'is a second source network; vpnmasq supports one src_ip per redirect (use one redirect for each)');
  }
  const extra: Partial<Redirect> = {};
  if (siVals[0]) extra.srcIp = cidrText(parseCidr(sec, siVals[0], true));
  if (spV) extra.srcPort = parsePortRange(sec, spV);
  if (sdipV) {
    refuseFamily6(sec, sdipV, sdipV.value);
    const d = parseIPv4(sec, sdipV);
    const k = unusableRange(d);
    if (k) bad(sec, sdipV, `is not an address the WAN device can have (${k})`);
    extra.srcDip = d.toString();
  }
  const rV = sec.get('reflection');
  if (rV) extra.reflection = parseBool(sec, rV, true);
  const rsV = sec.get('reflection_src');
  if (rsV) {
    if (rsV.value !== 'internal' && rsV.value !== 'external') bad(sec, rsV, "is not 'internal' or 'external'");
    extra.reflectionSrc = rsV.value;
  }

  return {
    value: {
      line: sec.s.line, name, src, dest, proto, srcDport, destIp: ip.toString(), destPort, ...extra, target: 'DNAT', family,
    },
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
  const dest = zoneOpt(sec, 'dest', ['lan', 'wan'] as const, "use 'lan' or 'wan', or leave dest out for traffic to the router itself");
  if (src === dest) {
    sec.fail(sec.lineOf('dest'), `option dest: '${src}' to '${dest}' traffic never passes through the router; ` +
      (src === 'wan' ? "use dest 'lan', or leave dest out for traffic to the router itself" : "use dest 'wan' for traffic to the internet"));
  }
  if (src === 'lan' && dest === null) {
    // fw4's input chain for the LAN zone: LAN → router traffic is delivered
    // by the kernel and never reaches the engine, so such a rule would be
    // accepted and silently not enforced.
    sec.fail(sec.lineOf('src'), "option src: 'lan' without dest is an input rule (LAN → the router itself); that traffic " +
      "never passes through vpnmasq, so the rule cannot be enforced: add dest 'wan' for LAN → internet traffic, or " +
      'filter traffic to the router with the system firewall');
  }

  const srcIp = sec.list('src_ip').map((v) => cidrText(parseCidr(sec, v, true)));
  const destIp = sec.list('dest_ip').map((v) => cidrText(parseCidr(sec, v, true)));

  const { proto } = protoOpt(sec);
  const what = proto.map(protoText).join(' ');

  const ports = (name: 'src_port' | 'dest_port'): PortRange[] => {
    const vals = sec.list(name);
    if (vals.length > 0 && !proto.every(isPortProto)) {
      sec.fail(sec.lineOf(name), `option ${name}: only valid with proto tcp and/or udp (proto is '${what}')`);
    }
    return vals.map((v) => parsePortRange(sec, v));
  };
  const srcPort = ports('src_port');
  const destPort = ports('dest_port');

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
    value: { line: sec.s.line, name, src, srcIp, srcPort, dest, destIp, destPort, proto, icmpType, target: t, family },
    enabled,
    sec,
  };
}

// ---------------------------------------------------------------------------
// Whole file

function checkRedirects(main: MainConfig, mainSec: Sec, redirects: Parsed<Redirect>[]): void {
  for (let i = 0; i < redirects.length; i++) redirects[i]!.sec.attempt(() => checkRedirect(main, mainSec, redirects, i));
}

function checkRedirect(main: MainConfig, mainSec: Sec, redirects: Parsed<Redirect>[], i: number): void {
  const lan = main.lanSubnets.map((s) => ipaddr.IPv4.parseCIDR(s));
  {
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

/** The main section's name: the init, hotplug and rpcd scripts read `vpnmasq.main.*`. */
export const MAIN_SECTION = 'main';

/**
 * Validates a parsed UCI file into a deeply frozen Config. Throws a
 * ConfigError whose `all` lists every problem of the file (each section is
 * read to its end or to the first problem that stops it).
 */
export function validateConfig(uci: UciFile): Config {
  const file = uci.file;
  const errors: ConfigError[] = [];
  let main: MainConfig | null = null;
  let mainSec: Sec | null = null;
  let mainFailed = false;
  const redirects: Parsed<Redirect>[] = [];
  const rules: Parsed<Rule>[] = [];

  for (const s of uci.sections) {
    const sec = new Sec(file, s, errors);
    switch (s.type) {
      case 'vpnmasq': {
        if (mainSec) {
          sec.report(s.line, `config vpnmasq: a second main section (the first is at line ${mainSec.s.line}); exactly one is allowed`);
          break;
        }
        mainSec = sec;
        if (s.name !== MAIN_SECTION) {
          // uci addresses an anonymous section as @vpnmasq[0]; every script
          // of the package says vpnmasq.main, so one name is allowed.
          sec.report(
            s.line,
            s.name === null
              ? `config vpnmasq: the main section must be named: write "config vpnmasq '${MAIN_SECTION}'" (the init, hotplug and rpcd scripts read vpnmasq.${MAIN_SECTION})`
              : `config vpnmasq '${show(s.name)}': the main section must be named '${MAIN_SECTION}' (the init, hotplug and rpcd scripts read vpnmasq.${MAIN_SECTION})`,
          );
        }
        const m = sec.attempt(() => parseMain(sec));
        if (m) main = m;
        else mainFailed = true;
        break;
      }
      case 'redirect': {
        const r = sec.attempt(() => parseRedirect(sec));
        if (r) redirects.push(r);
        break;
      }
      case 'rule': {
        const r = sec.attempt(() => parseRule(sec));
        if (r) rules.push(r);
        break;
      }
      default: {
        if (FW4_SECTIONS.includes(s.type)) {
          sec.report(s.line, `config ${s.type}: this fw4 section type is not supported by vpnmasq (known: ${SECTION_TYPES.join(', ')})`);
          break;
        }
        const close = closeNames(s.type, SECTION_TYPES);
        const hint = close.length > 0 ? `did you mean ${quoteList(close)}?` : `known: ${SECTION_TYPES.join(', ')}`;
        sec.report(s.line, `config ${show(s.type)}: unknown section type (${hint})`);
      }
    }
  }

  // A file without a main section is usually not a vpnmasq file at all (or
  // an empty one): said on its own, once the sections it has are right.
  if (!mainSec && errors.length === 0) {
    errors.push(new ConfigError(file, 0, `missing the main section: add "config vpnmasq '${MAIN_SECTION}'" with at least lan_device and wan_device`));
  }

  const enabledRedirects = redirects.filter((r) => r.enabled);
  // Redirects are checked against the main section only when it was read.
  if (main && mainSec && !mainFailed) checkRedirects(main, mainSec, enabledRedirects);

  if (errors.length > 0) throw ConfigError.of(errors);
  return deepFreeze({
    file,
    main: main!,
    redirects: enabledRedirects.map((r) => r.value),
    rules: rules.filter((r) => r.enabled).map((r) => r.value),
  });
}
