// Reading one section's values: where each came from (Val), the section
// reader that refuses unknown and misused options (Sec), and the parsers of
// single values (numbers, booleans, port ranges, interface names, IPv4
// networks). Every problem is a ConfigError `FILE:LINE: reason` at the
// offending line. Shared by the main option table (options.ts) and the
// redirect and rule sections (schema.ts).

import ipaddr from 'ipaddr.js';
import { ConfigError, type UciOption, type UciSection } from './uci.js';

/** An inclusive port range; a single port is [p, p]. */
export type PortRange = [number, number];

const BOOL_TRUE = ['1', 'yes', 'on', 'true', 'enabled'];
const BOOL_FALSE = ['0', 'no', 'off', 'false', 'disabled'];

export interface Val {
  value: string;
  line: number;
  /** 'option NAME' or 'list NAME', for messages. */
  label: string;
}

export function show(s: string): string {
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
export function closeNames(name: string, known: readonly string[]): string[] {
  const limit = Math.max(1, Math.min(3, Math.floor(name.length / 3)));
  const near = known
    .map((k) => ({ k, d: editDistance(name, k) }))
    .filter(({ d }) => d <= limit)
    .sort((x, y) => x.d - y.d)
    .map(({ k }) => k);
  if (near.length > 0) return near;
  return known.filter((k) => k.length >= 4 && name.length >= 4 && (k.includes(name) || name.includes(k)));
}

export function quoteList(names: readonly string[]): string {
  return names.map((n) => `'${n}'`).join(', ');
}

export function portText(r: PortRange): string {
  return r[0] === r[1] ? `${r[0]}` : `${r[0]}-${r[1]}`;
}

/** Reads one section's options, remembering which lines they came from. */
export class Sec {
  readonly opts = new Map<string, UciOption>();

  /**
   * @param errors where problems that do not stop the section's reading
   *   (an unknown option, a bad value of an independent option) are
   *   collected; the file's reader reports them all at the end.
   */
  constructor(
    readonly file: string,
    readonly s: UciSection,
    readonly errors: ConfigError[] = [],
  ) {
    for (const o of s.options) this.opts.set(o.name, o);
  }

  fail(line: number, reason: string): never {
    throw new ConfigError(this.file, line, reason);
  }

  /** Records a problem and lets reading go on. */
  report(line: number, reason: string): void {
    this.errors.push(new ConfigError(this.file, line, reason));
  }

  /** Runs `f`; a ConfigError it throws is recorded (and undefined returned), anything else propagates. */
  attempt<T>(f: () => T): T | undefined {
    try {
      return f();
    } catch (e) {
      if (!(e instanceof ConfigError)) throw e;
      this.errors.push(e);
      return undefined;
    }
  }

  /**
   * Reports every option not in `known` (each at its line), explaining fw4
   * options vpnmasq does not implement; the known ones are read on.
   */
  checkKnown(known: readonly string[], unsupported: readonly string[] = []): void {
    for (const o of this.s.options) {
      if (known.includes(o.name)) continue;
      const kw = o.list ? 'list' : 'option';
      if (unsupported.includes(o.name)) {
        this.report(o.line, `${kw} ${o.name}: this fw4 option is not supported by vpnmasq in a '${this.s.type}' section`);
        continue;
      }
      const close = closeNames(o.name, known);
      const hint = close.length > 0 ? `did you mean ${quoteList(close.slice(0, 3))}?` : `known options: ${known.join(', ')}`;
      this.report(o.line, `${kw} ${o.name}: unknown option in a '${this.s.type}' section (${hint})`);
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

export function bad(sec: Sec, v: Val, what: string): never {
  sec.fail(v.line, `${v.label}: '${show(v.value)}' ${what}`);
}

export function parseBool(sec: Sec, v: Val | null, dflt: boolean): boolean {
  if (!v) return dflt;
  if (BOOL_TRUE.includes(v.value)) return true;
  if (BOOL_FALSE.includes(v.value)) return false;
  bad(sec, v, `is not a boolean (use one of ${[...BOOL_TRUE, ...BOOL_FALSE].join(', ')})`);
}

export function parseUint(sec: Sec, v: Val, min: number, max: number, unit = ''): number {
  if (!/^[0-9]+$/.test(v.value)) bad(sec, v, 'is not a whole number');
  const n = Number(v.value);
  if (n < min || n > max) bad(sec, v, `is out of range (${min}..${max}${unit})`);
  return n;
}

/** A port or range as fw4 writes it: 'p', 'a-b' or 'a:b'. */
export function parsePortRange(sec: Sec, v: Val, min = 1, max = 65535): PortRange {
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
export function parseIfname(sec: Sec, v: Val): string {
  const s = v.value;
  const bytes = Buffer.byteLength(s, 'utf8');
  if (bytes > 15) bad(sec, v, `is too long for a Linux interface name (${bytes} bytes, at most 15)`);
  if (s === '.' || s === '..') bad(sec, v, 'is not a valid Linux interface name');
  if (/[/:\s]/.test(s)) bad(sec, v, "is not a valid Linux interface name (no '/', ':' or whitespace)");
  if (s.includes('%')) bad(sec, v, "is not usable as an interface name ('%' makes the kernel treat it as a name template)");
  return s;
}

export function parseIPv4(sec: Sec, v: Val, s = v.value): ipaddr.IPv4 {
  if (!ipaddr.IPv4.isValidFourPartDecimal(s)) bad(sec, v, 'is not an IPv4 address');
  return ipaddr.IPv4.parse(s);
}

export function refuseFamily6(sec: Sec, v: Val, s: string): void {
  if (s.includes(':') && ipaddr.IPv6.isValid(s.split('/')[0]!)) {
    bad(sec, v, 'is an IPv6 address; vpnmasq is IPv4-only');
  }
}

/**
 * An IPv4 network: 'a.b.c.d/n', 'a.b.c.d/m.m.m.m' (contiguous mask) or, when
 * `plainIsHost`, a bare address meaning /32. Host bits are cleared, as fw4
 * does. Returns [network, prefix length].
 */
export function parseCidr(sec: Sec, v: Val, plainIsHost: boolean): [ipaddr.IPv4, number] {
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
export function unusableRange(ip: ipaddr.IPv4): string | null {
  const r = ip.range();
  if (r === 'unspecified' || r === 'loopback' || r === 'multicast' || r === 'broadcast') return r;
  if (ip.octets[0]! >= 240) return 'reserved, 240.0.0.0/4';
  return null;
}

export function cidrText(c: [ipaddr.IPv4, number]): string {
  return `${c[0].toString()}/${c[1]}`;
}
