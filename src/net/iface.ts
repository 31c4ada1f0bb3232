// Small synchronous helpers around `ip` (iproute2) for start/stop code.
// Nothing here is on the packet hot path; everything shells out to `ip -j`
// so it always sees the network namespace of the current process.
import { execFileSync } from 'node:child_process';

/** An `ip` invocation failed. `message` is one line naming the command and ip's stderr. */
export class IpError extends Error {
  readonly args: readonly string[];
  readonly stderr: string;
  constructor(args: readonly string[], stderr: string, cause?: unknown) {
    super(`ip ${args.join(' ')} failed: ${oneLine(stderr) || 'no error output'}`, { cause });
    this.name = 'IpError';
    this.args = args;
    this.stderr = stderr;
  }
}

export function oneLine(s: string): string {
  return s.replace(/\s*\n\s*/g, '; ').replace(/;\s*$/, '').trim();
}

/** Runs `ip ...args` and returns stdout; throws IpError with ip's stderr on failure. */
export function runIp(args: readonly string[]): string {
  try {
    return execFileSync('ip', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (e) {
    const err = e as NodeJS.ErrnoException & { stderr?: string | Buffer };
    const stderr = err.stderr ? String(err.stderr) : '';
    if (!stderr && err.code === 'ENOENT') throw new IpError(args, 'ip not found (install iproute2)', e);
    throw new IpError(args, stderr || err.message, e);
  }
}

/** Parses the output of `ip -j ...` (ip prints nothing at all for an empty list). */
export function parseIpJson<T = unknown>(out: string): T[] {
  const s = out.trim();
  if (s === '') return [];
  return JSON.parse(s) as T[];
}

const IFNAME_RE = /^[^\s/:]{1,15}$/;

/** Linux interface name rules (IFNAMSIZ 16 incl. NUL, no whitespace, '/' or ':'). */
export function isValidIfName(name: string): boolean {
  return IFNAME_RE.test(name) && name !== '.' && name !== '..';
}

function checkIfName(name: string): void {
  if (!isValidIfName(name)) throw new Error(`invalid interface name ${JSON.stringify(name)}`);
}

function isNoDevice(e: unknown): boolean {
  return e instanceof IpError && /does not exist|Cannot find device/i.test(e.stderr);
}

export function deviceExists(name: string): boolean {
  checkIfName(name);
  try {
    runIp(['-j', 'link', 'show', 'dev', name]);
    return true;
  } catch (e) {
    if (isNoDevice(e)) return false;
    throw e;
  }
}

export interface Ipv4Address {
  address: string;
  prefixLen: number;
}

interface AddrInfoJson {
  family?: string;
  local?: string;
  prefixlen?: number;
  secondary?: boolean;
  scope?: string;
}

/**
 * Extracts the IPv4 addresses from `ip -4 -j addr show dev X` output, in the
 * kernel's order (primaries of each subnet come before their secondaries).
 */
export function parseIpv4Addrs(out: string): (Ipv4Address & { secondary: boolean; scope: string })[] {
  const res: (Ipv4Address & { secondary: boolean; scope: string })[] = [];
  for (const link of parseIpJson<{ addr_info?: AddrInfoJson[] }>(out)) {
    for (const a of link.addr_info ?? []) {
      if (a.family !== 'inet' || typeof a.local !== 'string' || typeof a.prefixlen !== 'number') continue;
      res.push({ address: a.local, prefixLen: a.prefixlen, secondary: a.secondary === true, scope: a.scope ?? 'global' });
    }
  }
  return res;
}

/**
 * The address a WAN device is "known by": the first primary (non-secondary)
 * global-scope IPv4 address, else the first primary of any scope, else null.
 */
export function primaryIpv4(out: string): string | null {
  const addrs = parseIpv4Addrs(out).filter((a) => !a.secondary);
  return (addrs.find((a) => a.scope === 'global') ?? addrs[0])?.address ?? null;
}

/** IPv4 addresses of `dev` (throws if the device does not exist). */
export function ipv4Addresses(dev: string): Ipv4Address[] {
  checkIfName(dev);
  return parseIpv4Addrs(runIp(['-4', '-j', 'addr', 'show', 'dev', dev])).map(({ address, prefixLen }) => ({
    address,
    prefixLen,
  }));
}

/** Parses a dotted-quad IPv4 address to an unsigned 32-bit number, or null. */
export function parseIpv4(s: string): number | null {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(s);
  if (!m) return null;
  let n = 0;
  for (let i = 1; i <= 4; i++) {
    const o = Number(m[i]);
    if (o > 255 || (m[i]!.length > 1 && m[i]![0] === '0')) return null;
    n = n * 256 + o;
  }
  return n;
}

export function formatIpv4(n: number): string {
  return [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.');
}

/** 'a.b.c.d/len' -> normalized network CIDR ('192.168.1.7/24' -> '192.168.1.0/24'), or null if invalid. */
export function normalizeCidr(cidr: string): string | null {
  const m = /^([^/]+)\/(\d{1,2})$/.exec(cidr.trim());
  if (!m) return null;
  const addr = parseIpv4(m[1]!);
  const len = Number(m[2]);
  if (addr === null || len > 32) return null;
  const mask = len === 0 ? 0 : (0xffffffff << (32 - len)) >>> 0;
  return `${formatIpv4((addr & mask) >>> 0)}/${len}`;
}

/** Network CIDRs of the IPv4 addresses on `dev`, deduplicated, in kernel order. */
export function subnetsOf(dev: string): string[] {
  const out: string[] = [];
  for (const a of ipv4Addresses(dev)) {
    const c = normalizeCidr(`${a.address}/${a.prefixLen}`);
    if (c !== null && !out.includes(c)) out.push(c);
  }
  return out;
}

/** `ip link set dev X [mtu N] up`. */
export function setLinkUp(dev: string, mtu?: number): void {
  checkIfName(dev);
  const args = ['link', 'set', 'dev', dev];
  if (mtu !== undefined) {
    if (!Number.isInteger(mtu) || mtu < 68 || mtu > 65535) throw new Error(`invalid MTU ${mtu} for ${dev}`);
    args.push('mtu', String(mtu));
  }
  args.push('up');
  runIp(args);
}

/** The device's `txqueuelen` (`ip -j link show`), or null when it does not exist. */
export function txQueueLen(dev: string): number | null {
  checkIfName(dev);
  try {
    const j = JSON.parse(runIp(['-j', 'link', 'show', 'dev', dev])) as { txqlen?: number }[];
    return typeof j[0]?.txqlen === 'number' ? j[0].txqlen : null;
  } catch (e) {
    if (isNoDevice(e)) return null;
    throw e;
  }
}

/** `ip link set dev X txqueuelen N`: the device's transmit queue (for a TUN: packets waiting for its reader). */
export function setTxQueueLen(dev: string, len: number): void {
  checkIfName(dev);
  if (!Number.isInteger(len) || len < 0 || len > 0xffffffff) throw new Error(`invalid txqueuelen ${len} for ${dev}`);
  runIp(['link', 'set', 'dev', dev, 'txqueuelen', String(len)]);
}
