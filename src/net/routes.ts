// Policy routing that diverts IPv4 traffic through the two TUN devices.
//
//   table <inside>  : default dev <tunInside>
//   table <outside> : default dev <tunOutside>
//   table <local>   : <LAN subnets> dev <lanDevice>
//                     default dev <tunInside> src <WAN address>   (only while there is one)
//   pref 10 iif <wan> lookup <outside>             all WAN ingress, also to the router's own address
//   pref 15 iif <lan> fwmark R/R lookup <inside>   NAT loopback: LAN traffic to a router address
//                                                  that belongs to a port forward (below)
//   pref 20 lookup local                           local delivery, moved here from pref 0
//   pref 30 iif <lan> fwmark M/M lookup <inside>   LAN traffic the kernel would send out of <wan>
//   pref 40 iif lo fwmark M/M lookup <local>       router-originated traffic leaving by <wan>
//
//   table ip vpnmasq (nftables) sets the mark bit M (default 0x01000000):
//     prerouting (mangle + 10): iifname <lan> fib daddr . mark oifname <wan>
//     output (type route, mangle + 10): oifname <wan>   (the kernel reroutes on the new mark)
//   and the bit R (default 0x02000000) for NAT loopback (fw4 reflection), in
//   a chain `reflect` the prerouting chain jumps to for LAN ingress:
//     ip daddr @wan_addr tcp|udp dport <forwarded ports>     a LAN host calling a forward
//     fib daddr type local th dport <pool>, ip saddr <server> tcp|udp sport <server ports>
//                                                            a reflected forward's server
//                                                            answering the router (its
//                                                            hairpin flow)
//   Rule 15 sends both into the inside TUN instead of local delivery; the
//   engine (assembly/nat/hairpin.ts) translates them and writes them back,
//   with a router address as source (accept_local on tin). The set wan_addr
//   holds the WAN address and follows it. Every TCP/UDP forward is diverted,
//   reflection on or off: a forwarded port of the WAN address is the
//   forward's (with reflection '0' the engine drops it, counted `hairpin`);
//   the router's other ports on the WAN address, and everything on its LAN
//   address but a server's answers to a pool port, stay the router's.
//
// Only traffic the kernel itself would send out of the WAN device is diverted:
// a route of another policy table (strongSwan's 220, wg-quick's, pbr, mwan3)
// to another device is left alone, whatever its rule's preference, because the
// mark is computed from the routing decision made without vpnmasq's rules
// (the fib lookup and the output route do not carry the mark bit; rules 30/40
// need it). For router-originated traffic the output hook sees the kernel's
// actual choice (exact). For LAN traffic the prerouting fib expression does a
// real lookup through all the rules with the packet's source, daddr, TOS and
// mark, but as if it came from lo (nft_fib4_eval sets iif = lo; `. iif` only
// restricts the result): a rule keyed on `iif <lan>` is not seen. Whatever
// that approximation gets wrong is never sent in clear: the fail-closed guard
// (guard.ts) drops every direct lan <-> wan forward.
//
// Packets the supervisor writes back into a TUN have iif tin/tout and no
// mark, match none of 10/30/40 and are routed like any other packet (main,
// table 220 ...). IPv6 is not touched.
//
// ARP: the kernel answers an ARP request only if an input route lookup for the
// target (iif = the receiving device) says RTN_LOCAL. Rule 10 sends that
// lookup for the router's own WAN address to the outside table (unicast via
// tout), so the router would stop answering ARP for its WAN address. A proxy
// neighbour entry for the WAN address on the WAN device
// (`ip neigh replace proxy <addr> dev <wan>`, with the device's proxy_delay set
// to 0) makes it answer again; it is kept in step with the WAN address.
//
// This is start/stop code: everything is synchronous and shells out to `ip`.
import { mkdirSync, readFileSync, renameSync, unlinkSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { IpError, deviceExists, ipv4Addresses, isValidIfName, normalizeCidr, parseIpJson, parseIpv4, runIp } from './iface.js';
import { SysctlSaver, normalizeSysctlValue, readSysctl, sysctlKey } from './sysctl.js';
import { applyNftScript, deleteTable, nftString } from './nft.js';

export interface RoutingTables {
  inside: number;
  outside: number;
  local: number;
}

export interface RoutingPlan {
  lanDevice: string;
  wanDevice: string;
  tunInside: string;
  tunOutside: string;
  /** Primary IPv4 address of the WAN device; null while it has none. */
  wanAddress: string | null;
  /** LAN networks as CIDRs (host bits are cleared). */
  lanSubnets: string[];
  /** Masquerade port pool, inclusive; the kernel's ephemeral range is moved below it. */
  masqPorts: [number, number];
  /** Routing table ids; default 100, 101, 102. They belong to vpnmasq: stale content is flushed. */
  tables?: RoutingTables;
  /** The packet mark bit that selects diverted traffic (one bit; default 0x01000000). */
  fwmark?: number;
  /**
   * Optional file (e.g. /run/vpnmasq/routing.json) where the original sysctl
   * values are recorded before they are changed, so that the cleanup after a
   * crash (teardownStale, or the next setupRouting) can restore them.
   * Must be unique per network namespace.
   */
  stateFile?: string;
  /** TCP/UDP port forwards (NAT loopback diverts LAN traffic to them and their servers' answers). */
  forwards?: ForwardPlan[];
  /** The mark bit of NAT loopback traffic (one bit, not fwmark's; default 0x02000000). */
  reflectMark?: number;
}

/** One TCP or UDP port forward, as the kernel side of NAT loopback needs it. */
export interface ForwardPlan {
  proto: 'tcp' | 'udp';
  /** Port range on the WAN address. */
  ports: [number, number];
  /** The LAN server and its port range. */
  server: string;
  serverPorts: [number, number];
  /** fw4 reflection (absent: on). Off: the forwarded port is still diverted (the engine drops it, counted), its server's answers are not. */
  reflect?: boolean;
}

export interface Routing {
  /**
   * Installs (address) or removes (null) the `default dev tin src <addr>` route
   * of the local table and the proxy-ARP entry for the address. Idempotent:
   * calling it again with the same address re-installs what the kernel may
   * have dropped (e.g. the proxy entry when the WAN device went admin-down).
   */
  updateWanAddress(addr: string | null): void;
  /** The WAN address currently installed (null: none). */
  wanAddress(): string | null;
  /** Replaces the port forwards NAT loopback diverts (a reload changed the redirects). */
  updateForwards(forwards: ForwardPlan[]): void;
  /**
   * Idempotent. Restores rule 'pref 0 lookup local' first, then removes the
   * rules and routes of the tables and restores the saved sysctls. Every step
   * is attempted; if some fail, one Error listing them is thrown (call again
   * to retry what is left).
   */
  teardown(): void;
}

/** What teardownStale needs to know; a RoutingPlan will do. */
export interface StaleSpec {
  tables?: RoutingTables;
  stateFile?: string;
  /** If given, proxy-ARP entries for this device's own addresses are removed too. */
  wanDevice?: string;
}

export const DEFAULT_TABLES: Readonly<RoutingTables> = Object.freeze({ inside: 100, outside: 101, local: 102 });
export const RULE_PREF = Object.freeze({ wanIngress: 10, lanReflect: 15, local: 20, lanEgress: 30, routerEgress: 40 });
/**
 * The mark bit of WAN-bound traffic. Bit 24: clear of mwan3 (0x3f00), pbr
 * (0x00ff0000), wg-quick (0xca6c), Kubernetes (0xc000) and Tailscale (0xff0000).
 */
export const DEFAULT_FWMARK = 0x01000000;
/** The mark bit of NAT loopback traffic (bit 25: clear of the same neighbours as bit 24). */
export const DEFAULT_REFLECT_MARK = 0x02000000;
/** The nftables table (family ip) that marks WAN-bound traffic. */
export const MARK_TABLE = 'vpnmasq';

const RESERVED_TABLES = new Set([0, 253, 254, 255]); // unspec, default, main, local
const PORT_RANGE_KEY = 'net/ipv4/ip_local_port_range';
/** The kernel rejects an ephemeral range starting below net.ipv4.ip_unprivileged_port_start (1024 by default). */
const MIN_EPHEMERAL_START = 1024;

function fail(msg: string): never {
  throw new Error(`routing plan: ${msg}`);
}

function tablesOf(p: StaleSpec): RoutingTables {
  return p.tables ?? { ...DEFAULT_TABLES };
}

/** Validates a plan and returns its normalized LAN subnets. */
function validate(p: RoutingPlan): { tables: RoutingTables; lanSubnets: string[]; fwmark: number; reflectMark: number } {
  for (const [what, name] of [
    ['lanDevice', p.lanDevice],
    ['wanDevice', p.wanDevice],
    ['tunInside', p.tunInside],
    ['tunOutside', p.tunOutside],
  ] as const) {
    if (typeof name !== 'string' || !isValidIfName(name)) fail(`${what} ${JSON.stringify(name)} is not a valid interface name`);
    if (name === 'lo') fail(`${what} cannot be lo`);
  }
  const names = [p.lanDevice, p.wanDevice, p.tunInside, p.tunOutside];
  if (new Set(names).size !== names.length) fail(`devices must be four different interfaces, got ${names.join(', ')}`);
  if (p.wanAddress !== null && parseIpv4(p.wanAddress) === null) fail(`wanAddress ${JSON.stringify(p.wanAddress)} is not an IPv4 address`);
  const lanSubnets: string[] = [];
  for (const s of p.lanSubnets) {
    const c = normalizeCidr(s);
    if (c === null) fail(`LAN subnet ${JSON.stringify(s)} is not an IPv4 CIDR`);
    if (c.endsWith('/0')) fail(`LAN subnet ${s} would cover everything`);
    if (!lanSubnets.includes(c)) lanSubnets.push(c);
  }
  const [lo, hi] = p.masqPorts;
  if (!Number.isInteger(lo) || !Number.isInteger(hi) || lo < 1 || hi > 65535 || lo > hi) fail(`masqPorts ${lo}-${hi} is not a port range`);
  const tables = tablesOf(p);
  const ids = [tables.inside, tables.outside, tables.local];
  for (const t of ids) {
    if (!Number.isInteger(t) || t < 1 || t > 0xffffffff || RESERVED_TABLES.has(t)) fail(`table ${t} is not usable (1..2^32-1, not 253/254/255)`);
  }
  if (new Set(ids).size !== 3) fail(`tables must be distinct, got ${ids.join(', ')}`);
  const fwmark = p.fwmark ?? DEFAULT_FWMARK;
  if (!Number.isInteger(fwmark) || fwmark <= 0 || fwmark > 0xffffffff || (fwmark & (fwmark - 1)) !== 0) {
    fail(`fwmark ${fwmark} must be a single bit`);
  }
  const reflectMark = p.reflectMark ?? DEFAULT_REFLECT_MARK;
  if (!Number.isInteger(reflectMark) || reflectMark <= 0 || reflectMark > 0xffffffff || (reflectMark & (reflectMark - 1)) !== 0) {
    fail(`reflectMark ${reflectMark} must be a single bit`);
  }
  if (reflectMark === fwmark) fail(`reflectMark and fwmark must be different bits, both are ${hex(fwmark)}`);
  for (const f of p.forwards ?? []) {
    const range = (r: [number, number]) => Number.isInteger(r[0]) && Number.isInteger(r[1]) && r[0] >= 1 && r[1] <= 65535 && r[0] <= r[1];
    if ((f.proto !== 'tcp' && f.proto !== 'udp') || !range(f.ports) || !range(f.serverPorts) || parseIpv4(f.server) === null) {
      fail(`forward ${JSON.stringify(f)} is not a TCP/UDP port forward`);
    }
  }
  return { tables, lanSubnets, fwmark, reflectMark };
}

function hex(n: number): string {
  return '0x' + (n >>> 0).toString(16);
}

/**
 * The `ip` argument lists (without the leading 'ip') that setupRouting runs,
 * in order, after removing stale state and setting the sysctls. Pure.
 */
export function planCommands(p: RoutingPlan): string[][] {
  const { tables, lanSubnets, fwmark, reflectMark } = validate(p);
  const mark = `${hex(fwmark)}/${hex(fwmark)}`;
  const rmark = `${hex(reflectMark)}/${hex(reflectMark)}`;
  const T = { inside: String(tables.inside), outside: String(tables.outside), local: String(tables.local) };
  const cmds: string[][] = [
    // Routes via a device that is not IFF_UP are refused ("Nexthop device is not up").
    ['link', 'set', 'dev', p.tunInside, 'up'],
    ['link', 'set', 'dev', p.tunOutside, 'up'],
    ['-4', 'route', 'add', 'default', 'dev', p.tunInside, 'table', T.inside],
    ['-4', 'route', 'add', 'default', 'dev', p.tunOutside, 'table', T.outside],
  ];
  for (const s of lanSubnets) cmds.push(['-4', 'route', 'add', s, 'dev', p.lanDevice, 'table', T.local]);
  if (p.wanAddress !== null) {
    cmds.push(wanRouteArgs(p.tunInside, p.wanAddress, tables.local, 'add'));
    cmds.push(proxyArgs(p.wanDevice, p.wanAddress, 'replace'));
  }
  cmds.push(
    // Local delivery moves from pref 0 to pref 20 so that rule 10 sees WAN
    // ingress for the router's own address too. Add the new one first, so there
    // is never a moment without a local rule.
    ['-4', 'rule', 'add', 'pref', String(RULE_PREF.local), 'lookup', 'local'],
    ['-4', 'rule', 'del', 'pref', '0', 'lookup', 'local'],
    ['-4', 'rule', 'add', 'pref', String(RULE_PREF.wanIngress), 'iif', p.wanDevice, 'lookup', T.outside],
    ['-4', 'rule', 'add', 'pref', String(RULE_PREF.lanReflect), 'iif', p.lanDevice, 'fwmark', rmark, 'lookup', T.inside],
    ['-4', 'rule', 'add', 'pref', String(RULE_PREF.lanEgress), 'iif', p.lanDevice, 'fwmark', mark, 'lookup', T.inside],
    ['-4', 'rule', 'add', 'pref', String(RULE_PREF.routerEgress), 'iif', 'lo', 'fwmark', mark, 'lookup', T.local],
  );
  return cmds;
}

/**
 * The nft script (applied after planCommands) that marks WAN-bound traffic:
 * it (re)creates table ip vpnmasq in one transaction. Pure.
 *
 * Prerouting runs at mangle + 10, after the mangle chains of mwan3/pbr/fw4
 * have set their marks, and `. mark` hands those to the lookup. Only packets
 * that arrive on the LAN device are looked at: what the engine writes back
 * into tin/tout is never marked again.
 */
export function planNft(p: RoutingPlan): string {
  const { fwmark, reflectMark } = validate(p);
  const lan = nftString(p.lanDevice);
  const wan = nftString(p.wanDevice);
  const m = hex(fwmark);
  return `table ip ${MARK_TABLE}
delete table ip ${MARK_TABLE}
table ip ${MARK_TABLE} {
	set ${WAN_ADDR_SET} {
		type ipv4_addr;${p.wanAddress !== null ? ` elements = { ${p.wanAddress} };` : ''}
	}
	chain prerouting {
		type filter hook prerouting priority mangle + 10; policy accept;
		iifname ${lan} fib daddr . mark oifname ${wan} meta mark set meta mark | ${m}
		iifname ${lan} jump reflect
	}
	chain reflect {
${reflectRules(p.forwards ?? [], p.masqPorts, hex(reflectMark))}	}
	chain output {
		type route hook output priority mangle + 10; policy accept;
		oifname ${wan} meta mark set meta mark | ${m}
	}
}
`;
}

/** The nft set of table ip vpnmasq that holds the WAN address (NAT loopback's destination). */
export const WAN_ADDR_SET = 'wan_addr';

const portText = (r: [number, number]) => (r[0] === r[1] ? String(r[0]) : `${r[0]}-${r[1]}`);

/** Sorted, overlapping or adjacent ranges joined (nft refuses overlapping intervals in one set). */
function mergeRanges(ranges: [number, number][]): [number, number][] {
  const out: [number, number][] = [];
  for (const [lo, hi] of [...ranges].sort((a, b) => a[0] - b[0])) {
    const last = out[out.length - 1];
    if (last && lo <= last[1] + 1) last[1] = Math.max(last[1], hi);
    else out.push([lo, hi]);
  }
  return out;
}

/** The rules of chain reflect (NAT loopback; see the head of this file), each line tab-indented twice. */
function reflectRules(forwards: ForwardPlan[], pool: [number, number], mark: string): string {
  const set = `meta mark set meta mark | ${mark}`;
  const lines: string[] = [];
  for (const proto of ['tcp', 'udp'] as const) {
    const ports = mergeRanges(forwards.filter((f) => f.proto === proto).map((f) => f.ports)).map(portText);
    if (ports.length) lines.push(`ip daddr @${WAN_ADDR_SET} ${proto} dport { ${ports.join(', ')} } ${set}`);
  }
  // A server's answer to the router at a pool port: what follows only runs for those.
  const servers = [...new Set(forwards.filter((f) => f.reflect !== false).map((f) => `${f.server} ${f.proto} sport ${portText(f.serverPorts)}`))];
  if (servers.length) {
    lines.push(`th dport != ${portText(pool)} return`, 'fib daddr type != local return');
    for (const s of servers) lines.push(`ip saddr ${s} ${set}`);
  }
  return lines.map((l) => `		${l}
`).join('');
}

/** The nft transaction that makes the set hold `addr` (or nothing). */
export function planWanAddrSet(addr: string | null): string {
  return `flush set ip ${MARK_TABLE} ${WAN_ADDR_SET}
` + (addr !== null ? `add element ip ${MARK_TABLE} ${WAN_ADDR_SET} { ${addr} }
` : '');
}

function proxyArgs(dev: string, addr: string, verb: 'replace' | 'del'): string[] {
  return ['-4', 'neigh', verb, 'proxy', addr, 'dev', dev];
}

function proxyDelayKey(dev: string): string {
  return sysctlKey('net', 'ipv4', 'neigh', dev, 'proxy_delay');
}

function wanRouteArgs(tun: string, addr: string, table: number, verb: 'add' | 'replace'): string[] {
  return ['-4', 'route', verb, 'default', 'dev', tun, 'src', addr, 'table', String(table)];
}

/**
 * The kernel ephemeral port range to use so that it does not overlap the
 * masquerade pool, or null if the current one already does not. The range is
 * put below the pool (keeping the current start where possible); only if there
 * is no room below is it put above. Start and end get different parity (the
 * kernel prefers that).
 */
export function ephemeralRangeFor(current: [number, number], pool: [number, number], minStart = MIN_EPHEMERAL_START): [number, number] | null {
  const [a, b] = current;
  const [lo, hi] = pool;
  if (b < lo || a > hi) return null;
  const fixParity = (s: number, e: number): [number, number] => ((s & 1) === (e & 1) && s + 1 < e ? [s + 1, e] : [s, e]);
  if (lo - 1 > minStart) {
    const end = lo - 1;
    const start = a < lo && a >= minStart ? a : Math.max(minStart, end - (b - a));
    return fixParity(start, end);
  }
  if (hi < 65535 - 1) return fixParity(hi + 1, b > hi ? b : 65535);
  throw new Error(`masquerade ports ${lo}-${hi} leave no room for the kernel's ephemeral port range`);
}

function parsePortRange(v: string): [number, number] {
  const [a, b] = normalizeSysctlValue(v).split(' ').map(Number);
  if (!Number.isInteger(a) || !Number.isInteger(b)) throw new Error(`cannot parse ip_local_port_range ${JSON.stringify(v)}`);
  return [a!, b!];
}

/**
 * The sysctls setupRouting sets, as [path-form key, value]. Pure; pass the
 * current values of ip_local_port_range and of the WAN device's rp_filter to
 * include the entries that depend on them.
 */
export function planSysctls(
  p: RoutingPlan,
  current: { portRange?: string; wanRpFilter?: string; wanProxyDelay?: string; tcpEarlyDemux?: string; udpEarlyDemux?: string } = {},
): [string, string][] {
  validate(p);
  const out: [string, string][] = [
    ['net/ipv4/ip_forward', '1'],
    ['net/ipv4/conf/all/rp_filter', '0'],
    [sysctlKey('net', 'ipv4', 'conf', p.tunInside, 'rp_filter'), '0'],
    [sysctlKey('net', 'ipv4', 'conf', p.tunOutside, 'rp_filter'), '0'],
    [sysctlKey('net', 'ipv4', 'conf', p.tunInside, 'accept_local'), '1'],
    [sysctlKey('net', 'ipv4', 'conf', p.tunOutside, 'accept_local'), '1'],
  ];
  // Strict reverse-path filtering on the WAN device dropped all WAN ingress
  // while rule 40 answered every lookup from lo (the reverse lookup) with
  // 'default dev tin'. Rule 40 now needs the mark, which a reverse lookup
  // does not carry; loose mode (2) is kept as the safe setting anyway.
  if (current.wanRpFilter !== undefined && normalizeSysctlValue(current.wanRpFilter) === '1') {
    out.push([sysctlKey('net', 'ipv4', 'conf', p.wanDevice, 'rp_filter'), '2']);
  }
  // Proxy-ARP replies to broadcast requests are otherwise delayed (0.8 s).
  if (current.wanProxyDelay !== undefined && normalizeSysctlValue(current.wanProxyDelay) !== '0') {
    out.push([proxyDelayKey(p.wanDevice), '0']);
  }
  // Early demux attaches the router's own socket to an arriving segment of
  // its connection before routing; rule 10 then routes it into tout, and
  // ip_forward() drops every packet that has a socket attached: the router's
  // own TCP connections (and connected UDP sockets) through vpnmasq never
  // got their replies. Off: the lookup happens at local delivery, after the
  // engine has handed the packet back.
  for (const [proto, cur] of [['tcp', current.tcpEarlyDemux], ['udp', current.udpEarlyDemux]] as const) {
    if (cur !== undefined && normalizeSysctlValue(cur) !== '0') out.push([`net/ipv4/${proto}_early_demux`, '0']);
  }
  if (current.portRange !== undefined) {
    const next = ephemeralRangeFor(parsePortRange(current.portRange), p.masqPorts);
    if (next) out.push([PORT_RANGE_KEY, `${next[0]} ${next[1]}`]);
  }
  return out;
}

// ---------------------------------------------------------------------------
// State file (optional): what to restore after a crash.

interface StateFileContent {
  version: 1;
  tables: RoutingTables;
  hadLocalPref0: boolean;
  sysctls: Record<string, string>;
  /** The proxy-ARP entry installed for the WAN address. */
  proxy?: { dev: string; addr: string } | null;
}

function readState(file: string | undefined): StateFileContent | null {
  if (!file) return null;
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw new Error(`routing state file ${file}: ${(e as Error).message}`, { cause: e });
  }
  try {
    const s = JSON.parse(text) as StateFileContent;
    if (s.version !== 1 || typeof s.sysctls !== 'object') throw new Error('unknown format');
    return s;
  } catch (e) {
    throw new Error(`routing state file ${file} is unreadable (${(e as Error).message}); remove it by hand`, { cause: e });
  }
}

function writeState(file: string | undefined, s: StateFileContent): void {
  if (!file) return;
  mkdirSync(dirname(file), { recursive: true });
  const tmp = `${file}.${process.pid}.tmp`;
  writeFileSync(tmp, JSON.stringify(s) + '\n', { mode: 0o600 });
  renameSync(tmp, file);
}

function removeState(file: string | undefined): void {
  if (!file) return;
  try {
    unlinkSync(file);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
  }
}

// ---------------------------------------------------------------------------
// Removing rules/routes (shared by teardown and teardownStale).

interface RuleJson {
  priority: number;
  table?: string;
  src?: string;
  [k: string]: unknown;
}

function listRules(table: string): RuleJson[] {
  return parseIpJson<RuleJson>(runIp(['-4', '-j', 'rule', 'show', 'table', table]));
}

/** A rule with no selector at all ('from all lookup X'). */
function isPlain(r: RuleJson): boolean {
  return Object.keys(r).every((k) => k === 'priority' || k === 'table' || (k === 'src' && r.src === 'all'));
}

function tolerate(e: unknown, re: RegExp): void {
  if (!(e instanceof IpError && re.test(e.stderr))) throw e;
}

/**
 * Brings back local delivery at pref 0 (if it was there before, or if there
 * would otherwise be no local rule at all), then removes vpnmasq's rules and
 * the routes of its tables. Returns the errors; never throws.
 */
function removeRoutingState(tableSets: RoutingTables[], hadLocalPref0: boolean, proxies: { dev: string; addr: string }[]): Error[] {
  const errors: Error[] = [];
  const attempt = (f: () => void) => {
    try {
      f();
    } catch (e) {
      errors.push(e as Error);
    }
  };

  // The marks first: without them rules 30/40 match nothing.
  attempt(() => {
    deleteTable(MARK_TABLE);
  });

  let localRules: RuleJson[] = [];
  let localSafe = false; // local delivery exists without our pref 20 rule
  attempt(() => {
    localRules = listRules('local');
    const hasPref0 = localRules.some((r) => r.priority === 0 && isPlain(r));
    const others = localRules.filter((r) => r.priority !== RULE_PREF.local);
    if (!hasPref0 && (hadLocalPref0 || others.length === 0)) {
      runIp(['-4', 'rule', 'add', 'pref', '0', 'lookup', 'local']);
    }
    localSafe = true;
  });

  const ids = [...new Set(tableSets.flatMap((t) => [t.outside, t.inside, t.local]))];
  for (const id of ids) {
    attempt(() => {
      for (const r of listRules(String(id))) {
        attempt(() => {
          try {
            runIp(['-4', 'rule', 'del', 'pref', String(r.priority), 'table', String(id)]);
          } catch (e) {
            tolerate(e, /No such file or directory/);
          }
        });
      }
    });
  }

  // Only once local delivery is known to exist elsewhere: drop our pref 20 one.
  if (localSafe) {
    for (const r of localRules) {
      if (r.priority !== RULE_PREF.local || !isPlain(r)) continue;
      attempt(() => {
        try {
          runIp(['-4', 'rule', 'del', 'pref', String(RULE_PREF.local), 'lookup', 'local']);
        } catch (e) {
          tolerate(e, /No such file or directory/);
        }
      });
    }
  }

  for (const { dev, addr } of proxies) {
    attempt(() => {
      try {
        runIp(proxyArgs(dev, addr, 'del'));
      } catch (e) {
        tolerate(e, /No such file or directory|does not exist|Cannot find device/);
      }
    });
  }

  for (const id of ids) {
    attempt(() => {
      try {
        runIp(['-4', 'route', 'flush', 'table', String(id)]);
      } catch (e) {
        tolerate(e, /FIB table does not exist/);
      }
    });
  }
  return errors;
}

function summarize(what: string, errors: Error[]): Error {
  return new Error(`${what}: ${errors.map((e) => e.message).join(' | ')}`, { cause: errors[0] });
}

/**
 * Removes what a crashed earlier run left behind: its rules (any rule that
 * looks up one of the tables, and pref 20 'lookup local'), the routes of the
 * tables, and, if a state file is given and present, restores the sysctls
 * recorded in it. Restores 'pref 0 lookup local' when no other local rule
 * exists. Safe to call when there is nothing to clean.
 */
export function teardownStale(p: StaleSpec = {}): void {
  const state = readState(p.stateFile);
  const tableSets = [tablesOf(p)];
  if (state?.tables) tableSets.push(state.tables);
  const proxies = state?.proxy ? [state.proxy] : [];
  if (p.wanDevice !== undefined && isValidIfName(p.wanDevice)) {
    try {
      if (deviceExists(p.wanDevice)) {
        const own = new Set(ipv4Addresses(p.wanDevice).map((a) => a.address));
        for (const n of parseIpJson<{ dst?: string }>(runIp(['-4', '-j', 'neigh', 'show', 'proxy', 'dev', p.wanDevice]))) {
          if (n.dst && own.has(n.dst) && !proxies.some((x) => x.dev === p.wanDevice && x.addr === n.dst)) {
            proxies.push({ dev: p.wanDevice, addr: n.dst });
          }
        }
      }
    } catch {
      /* best effort: listing failed, the state file entry (if any) is still removed */
    }
  }
  const errors = removeRoutingState(tableSets, state?.hadLocalPref0 ?? false, proxies);
  if (state) {
    const saver = new SysctlSaver(state.sysctls);
    errors.push(...saver.restore());
    if (saver.size === 0 && errors.length === 0) removeState(p.stateFile);
    else writeState(p.stateFile, { ...state, sysctls: saver.entries(), proxy: null });
  }
  if (errors.length > 0) throw summarize('cleaning up stale routing state', errors);
}

class RoutingImpl implements Routing {
  private wan: string | null = null;
  private proxied: string | null = null;
  private done = false;
  private forwards: ForwardPlan[];

  constructor(
    private readonly plan: RoutingPlan,
    private readonly tables: RoutingTables,
    private readonly saver: SysctlSaver,
    private readonly state: StateFileContent,
  ) {
    saver.onSave = () => this.persist();
    this.forwards = plan.forwards ?? [];
  }

  /** The port forwards NAT loopback diverts now. */
  currentForwards(): ForwardPlan[] {
    return this.forwards;
  }

  persist(): void {
    writeState(this.plan.stateFile, {
      ...this.state,
      sysctls: this.saver.entries(),
      proxy: this.proxied === null ? null : { dev: this.plan.wanDevice, addr: this.proxied },
    });
  }

  /** Records what planCommands installs for the WAN address (route and proxy entry). */
  markWan(addr: string | null): void {
    this.wan = addr;
    this.proxied = addr;
  }

  wanAddress(): string | null {
    return this.wan;
  }

  updateWanAddress(addr: string | null): void {
    if (this.done) return;
    if (addr !== null && parseIpv4(addr) === null) throw new Error(`updateWanAddress: ${JSON.stringify(addr)} is not an IPv4 address`);
    const wanDev = this.plan.wanDevice;
    if (addr !== null) {
      // replace, not add: whether the kernel drops a route whose src address
      // went away depends on the kernel (6.18 keeps it in non-main tables).
      runIp(wanRouteArgs(this.plan.tunInside, addr, this.tables.local, 'replace'));
      this.wan = addr;
      applyNftScript(planWanAddrSet(addr));
      try {
        // The WAN device may have appeared only now (PPP, DHCP on a new VLAN).
        this.saver.set(proxyDelayKey(wanDev), '0');
      } catch {
        /* no neigh parameters for this device: nothing to tune */
      }
      if (this.proxied !== null && this.proxied !== addr) this.dropProxy();
      this.proxied = addr; // persisted before it exists: a crash then still cleans it up
      this.persist();
      runIp(proxyArgs(wanDev, addr, 'replace'));
    } else {
      try {
        runIp(['-4', 'route', 'del', 'default', 'dev', this.plan.tunInside, 'table', String(this.tables.local)]);
      } catch (e) {
        tolerate(e, /No such process|FIB table does not exist/);
      }
      this.wan = null;
      applyNftScript(planWanAddrSet(null));
      this.dropProxy();
    }
  }

  updateForwards(forwards: ForwardPlan[]): void {
    if (this.done) return;
    const next = { ...this.plan, forwards, wanAddress: this.wan };
    applyNftScript(planNft(next)); // validates first; one transaction
    this.forwards = forwards;
  }

  private dropProxy(): void {
    if (this.proxied === null) return;
    try {
      runIp(proxyArgs(this.plan.wanDevice, this.proxied, 'del'));
    } catch (e) {
      tolerate(e, /No such file or directory|does not exist|Cannot find device/);
    }
    this.proxied = null;
    this.persist();
  }

  teardown(): void {
    if (this.done) return;
    const proxies = this.proxied === null ? [] : [{ dev: this.plan.wanDevice, addr: this.proxied }];
    const errors = removeRoutingState([this.tables], this.state.hadLocalPref0, proxies);
    errors.push(...this.saver.restore());
    if (errors.length === 0) {
      this.done = true;
      this.wan = null;
      this.proxied = null;
      try {
        removeState(this.plan.stateFile);
      } catch (e) {
        throw summarize('routing teardown', [e as Error]);
      }
      return;
    }
    try {
      this.persist();
    } catch (e) {
      errors.push(e as Error);
    }
    throw summarize('routing teardown', errors);
  }
}

/**
 * Applies the plan: removes stale state of an earlier run (unless the caller
 * already did, `staleCleaned`: the supervisor cleans once, before it creates
 * the TUNs), sets the sysctls
 * (remembering the originals), then runs planCommands(p). On any failure
 * everything done so far is undone (local delivery at pref 0 first) and the
 * error is rethrown. The TUN devices and the LAN device must exist; the WAN
 * device need not (yet), unless wanAddress is given.
 */
export function setupRouting(p: RoutingPlan, opts: { staleCleaned?: boolean } = {}): Routing {
  const { tables } = validate(p);
  const cmds = planCommands(p);
  for (const [what, dev] of [
    ['TUN device', p.tunInside],
    ['TUN device', p.tunOutside],
    ['LAN device', p.lanDevice],
  ] as const) {
    if (!deviceExists(dev)) throw new Error(`setupRouting: ${what} ${dev} does not exist`);
  }

  if (!opts.staleCleaned) teardownStale(p);

  const hadLocalPref0 = listRules('local').some((r) => r.priority === 0 && isPlain(r));
  const state: StateFileContent = { version: 1, tables, hadLocalPref0, sysctls: {}, proxy: null };
  const saver = new SysctlSaver();
  const routing = new RoutingImpl(p, tables, saver, state);
  // Recorded up front, so that a rollback or a crash also removes the proxy entry.
  routing.markWan(p.wanAddress);

  try {
    routing.persist();
    const wanExists = deviceExists(p.wanDevice);
    const current = {
      portRange: readSysctl(PORT_RANGE_KEY),
      wanRpFilter: wanExists ? readSysctl(sysctlKey('net', 'ipv4', 'conf', p.wanDevice, 'rp_filter')) : undefined,
      wanProxyDelay: wanExists ? readSysctl(proxyDelayKey(p.wanDevice)) : undefined,
      tcpEarlyDemux: readSysctl('net/ipv4/tcp_early_demux'),
      udpEarlyDemux: readSysctl('net/ipv4/udp_early_demux'),
    };
    for (const [key, value] of planSysctls(p, current)) saver.set(key, value);
    for (const args of cmds) runIp(args);
    applyNftScript(planNft(p));
  } catch (e) {
    try {
      routing.teardown();
    } catch (e2) {
      throw new Error(`${(e as Error).message} (and undoing the partial setup failed: ${(e2 as Error).message})`, { cause: e });
    }
    throw e;
  }
  return routing;
}
