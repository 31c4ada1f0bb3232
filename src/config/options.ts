// The options of `config vpnmasq` in one table, MAIN_TABLE: one row per UCI
// option with its value type (which carries the parser and the range), its
// default, a one-line description, and, for the options the engine uses,
// the names it has in the engine's settings record. Everything else about
// the main section comes from the rows:
//
//   MainConfig      the typed section (field = the option name in camelCase)
//   MAIN_DEFAULTS   the default of every option that has one
//   MAIN_OPTIONS    the known option names, in file order
//   parseMain       reading and checking the section, row by row
//   formatMain      the section as canonical UCI text (formatConfig)
//   EngineSettings  the engine-bound options as one record of numbers
//                   (built by src/engine/apply.ts, handed to the engine whole)
//   optionsMarkdown the option list in README.md
//
// Adding an option is one row here, plus its line in the default
// /etc/config/vpnmasq (firmware/files/etc/config/vpnmasq and its copy in
// default.ts) and the README's option list; test/unit/config/options.test.ts
// fails until those two say what the row says.

import ipaddr from 'ipaddr.js';
import { ConfigError } from './uci.js';
import {
  bad, cidrText, parseBool, parseCidr, parseIfname, parsePortRange, parseUint, portText, show, unusableRange,
  type PortRange, type Sec, type Val,
} from './values.js';

export type LogLevel = 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace';
export const LOG_LEVELS: readonly LogLevel[] = ['fatal', 'error', 'warn', 'info', 'debug', 'trace'];

/** Longest timeout: milliseconds must fit a signed 32-bit timer (Node's setTimeout). */
const MAX_TIMEOUT = 2147483;

// ---------------------------------------------------------------------------
// Value types

/** How one option's value is read, written back and, if the engine uses it, turned into numbers. */
export interface ValueType<T> {
  /** A `list` option (many values); else one value and `list NAME` is refused. */
  list: boolean;
  /** Reads the value(s) given (at least one); throws ConfigError at the offending line. */
  read(sec: Sec, vals: Val[]): T;
  /** The value as UCI writes it: one string per value. */
  text(v: T): string[];
  /** The accepted values, for the README. */
  range: string;
  /** The value as engine numbers (one per engine name of the row). */
  numbers?(v: T): number[];
}

function uint(min: number, max: number, unit = ''): ValueType<number> {
  return {
    list: false,
    read: (sec, [v]) => parseUint(sec, v!, min, max, unit),
    text: (n) => [`${n}`],
    range: `${min}..${max}${unit}`,
    numbers: (n) => [n],
  };
}

/** An idle timeout in seconds. */
function seconds(max = MAX_TIMEOUT): ValueType<number> {
  return uint(1, max, ' seconds');
}

const bool: ValueType<boolean> = {
  list: false,
  read: (sec, [v]) => parseBool(sec, v!, false),
  text: (b) => [b ? '1' : '0'],
  range: '0 or 1 (also no/yes, off/on, false/true, disabled/enabled)',
  numbers: (b) => [b ? 1 : 0],
};

function ports(min: number, max: number): ValueType<PortRange> {
  return {
    list: false,
    read: (sec, [v]) => parsePortRange(sec, v!, min, max),
    text: (r) => [portText(r)],
    range: `ports ${min}..${max}, 'a-b' or 'a:b'`,
    numbers: (r) => [r[0], r[1]],
  };
}

const ifname: ValueType<string> = {
  list: false,
  read: (sec, [v]) => parseIfname(sec, v!),
  text: (s) => [s],
  range: 'Linux interface name',
};

const logLevel: ValueType<LogLevel> = {
  list: false,
  read: (sec, [v]) => {
    if (!(LOG_LEVELS as readonly string[]).includes(v!.value)) bad(sec, v!, `is not a log level (${LOG_LEVELS.join(', ')})`);
    return v!.value as LogLevel;
  },
  text: (s) => [s],
  range: LOG_LEVELS.join(', '),
};

/** `option priority`: the data path's scheduling (src/datapath/priority.ts). */
export const PRIORITIES = ['normal', 'high', 'realtime'] as const;
export type Priority = (typeof PRIORITIES)[number];

const priority: ValueType<Priority> = {
  list: false,
  read: (sec, [v]) => {
    if (!(PRIORITIES as readonly string[]).includes(v!.value)) bad(sec, v!, `is not a priority (${PRIORITIES.join(', ')})`);
    return v!.value as Priority;
  },
  text: (s) => [s],
  range: PRIORITIES.join(', '),
};

/** 'auto', or a count that must be a power of two from 1 to max (host queues). */
function autoOrPowerOfTwo(max: number): ValueType<number | 'auto'> {
  const allowed = Array.from({ length: Math.log2(max) + 1 }, (_v, i) => 2 ** i);
  return {
    list: false,
    read: (sec, [v]) => {
      if (v!.value === 'auto') return 'auto';
      const n = parseUint(sec, v!, 1, max);
      if (!allowed.includes(n)) bad(sec, v!, `is not auto or one of ${allowed.join(', ')}`);
      return n;
    },
    text: (n) => [`${n}`],
    range: `auto, ${allowed.join(', ')}`,
  };
}

/** LAN networks: each a real LAN range, none overlapping another. Normalised CIDR strings. */
const lanSubnets: ValueType<string[]> = {
  list: true,
  read: (sec, vals) => {
    const subnets: { c: [ipaddr.IPv4, number]; v: Val }[] = [];
    for (const v of vals) {
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
    return subnets.map((s) => cidrText(s.c));
  },
  text: (l) => [...l],
  range: 'IPv4 networks (a.b.c.d/n)',
};

const socketPath: ValueType<string> = {
  list: false,
  read: (sec, [v]) => {
    const s = v!.value;
    if (!s.startsWith('/')) bad(sec, v!, 'is not an absolute path');
    if (s.endsWith('/')) bad(sec, v!, 'names a directory, not a socket file');
    if (/[\r\n]/.test(s)) bad(sec, v!, 'contains a line break');
    const bytes = Buffer.byteLength(s, 'utf8');
    if (bytes > 107) bad(sec, v!, `is too long for a Unix socket path (${bytes} bytes, at most 107)`);
    return s;
  },
  text: (s) => [s],
  range: 'absolute path, at most 107 bytes',
};

/** A directory: absolute, no line break; a trailing slash is dropped. */
const dirPath: ValueType<string> = {
  list: false,
  read: (sec, [v]) => {
    const s = v!.value;
    if (!s.startsWith('/')) bad(sec, v!, 'is not an absolute path');
    if (/[\r\n]/.test(s)) bad(sec, v!, 'contains a line break');
    return s.length > 1 ? s.replace(/\/+$/, '') : s;
  },
  text: (s) => [s],
  range: 'absolute path',
};

const netifdName: ValueType<string> = {
  list: false,
  read: (sec, [v]) => {
    if (!/^[A-Za-z0-9_]{1,15}$/.test(v!.value)) bad(sec, v!, 'is not a netifd interface name (letters, digits, _; at most 15)');
    return v!.value;
  },
  text: (s) => [s],
  range: 'netifd interface name',
};

/** An address and port to listen on (observability servers); null: off. */
export interface Listen { host: string; port: number }

/**
 * 'A.B.C.D:PORT' for a listening socket. Only a single address of this
 * router can be named: the unspecified address (every interface, hence the
 * WAN too), multicast, broadcast and reserved ranges are refused here; that
 * the address belongs to lan_device (or loopback) and is not the WAN
 * address is checked at start and by check-config, when the devices are
 * known (src/observe/listen.ts).
 */
function listen(what: string): ValueType<Listen | null> {
  return {
    list: false,
    read: (sec, [v]) => {
      const m = /^(\d{1,3}(?:\.\d{1,3}){3}):(\d{1,5})$/.exec(v!.value);
      if (!m) bad(sec, v!, `is not ADDRESS:PORT (an IPv4 address of the router's ${what} and a port, e.g. 192.168.1.1:9100)`);
      if (!ipaddr.IPv4.isValidFourPartDecimal(m[1]!)) bad(sec, v!, `'${m[1]}' is not an IPv4 address`);
      const ip = ipaddr.IPv4.parse(m[1]!);
      const r = ip.range();
      if (r === 'unspecified') bad(sec, v!, `listens on every interface, the WAN too; name the router's ${what} address`);
      if (r === 'multicast' || r === 'broadcast' || ip.octets[0]! >= 240) bad(sec, v!, `'${m[1]}' (${r === 'unicast' ? 'reserved' : r}) is not an address of the router`);
      const port = Number(m[2]);
      if (port < 1 || port > 65535) bad(sec, v!, `port ${m[2]} is not 1..65535`);
      return { host: ip.toString(), port };
    },
    text: (l) => (l ? [`${l.host}:${l.port}`] : []),
    range: `IPv4 address:port of the ${what}; none: off`,
  };
}

/** An absolute file path; null: off. */
const filePath: ValueType<string | null> = {
  list: false,
  read: (sec, [v]) => {
    const s = v!.value;
    if (!s.startsWith('/')) bad(sec, v!, 'is not an absolute path');
    if (s.endsWith('/')) bad(sec, v!, 'names a directory, not a file');
    if (/[\r\n\0]/.test(s)) bad(sec, v!, 'contains a control character');
    return s;
  },
  text: (s) => (s ? [s] : []),
  range: 'absolute path; none: off',
};

// ---------------------------------------------------------------------------
// Rows

/** `tcp_transitory_timeout` -> `tcpTransitoryTimeout`. */
type Camel<S extends string> = S extends `${infer H}_${infer T}` ? `${H}${Capitalize<Camel<T>>}` : S;

export interface Row<N extends string = string, T = unknown, K extends string = string, E extends readonly string[] = readonly string[]> {
  /** The UCI option name. */
  name: N;
  /** The MainConfig field. */
  key: K;
  type: ValueType<T>;
  /** Required options have no default. */
  required: boolean;
  default: T | undefined;
  /** One line for the README. */
  doc: string;
  /** Its names in the engine's settings record; empty: the engine does not use it. */
  engine: E;
}

function camel<N extends string>(name: N): Camel<N> {
  return name.replace(/_([a-z])/g, (_, c: string) => c.toUpperCase()) as Camel<N>;
}

/**
 * An option with a default. `engine: true` hands it to the engine under its
 * own name; a list of names hands the value's numbers (a port range: two)
 * under those. `key` overrides the camelCase field name.
 */
function opt<const N extends string, T, const E extends true | readonly string[] = [], const K extends string = Camel<N>>(
  name: N, type: ValueType<T>, dflt: T, doc: string, o: { engine?: E; key?: K } = {},
): Row<N, T, K, E extends true ? [N] : Exclude<E, true>> & { required: false } {
  const engine = (o.engine === true ? [name] : o.engine ?? []) as E extends true ? [N] : Exclude<E, true>;
  return { name, key: (o.key ?? camel(name)) as K, type, required: false, default: dflt, doc, engine };
}

function required<const N extends string, T>(name: N, type: ValueType<T>, doc: string): Row<N, T, Camel<N>, []> & { required: true } {
  return { name, key: camel(name), type, required: true, default: undefined, doc, engine: [] };
}

/** Every `config vpnmasq` option, in the order of the default file (and of parsing and formatConfig). */
export const MAIN_TABLE = [
  required('lan_device', ifname, 'LAN-side device'),
  required('wan_device', ifname, 'WAN-side device; its IPv4 address is the masquerade address'),
  // Off unless switched on (OpenWrt's convention for a package that changes
  // routing): installing the package never takes over the router.
  opt('enabled', bool, false, "vpnmasq runs only when '1' (the init script, hotplug and `vpnmasq run` check it)"),
  opt('tun_inside', ifname, 'tin', 'TUN device on the LAN side'),
  opt('tun_outside', ifname, 'tout', 'TUN device on the WAN side'),
  opt('offload', bool, true, 'TUN offloads: GSO super-packets and partial checksums pass through whole (falls back when the kernel refuses)'),
  opt('gro', bool, true, 'with offloads and USO: same-flow UDP datagrams of a batch leave as one UDP GSO write (the kernel cuts it back into the same datagrams)'),
  opt('flow_offload', bool, true,
    "a LAN host's masqueraded flows, and a port forward's or an ESP forward's once its server has answered, move through a kernel fast path once the engine has judged them (TCP after its handshake, UDP after 8 packets, ICMP echo once answered, ESP once its SA is bound, PPTP's GRE once its call is answered; eBPF on lan_device's and wan_device's ingress, as OpenWrt's software flow offloading): SYN, FIN and RST still come to the engine, which can withdraw a flow at any time; not NAT loopback, a GRE forward, PPTP control or IKE; needs Linux 6.6 (tcx) and Ethernet devices, else off with the reason in status; '0': every packet through the TUNs and the engine"),
  opt('host_queues', autoOrPowerOfTwo(16), 'auto' as number | 'auto',
    "host queues of the LAN TUN, each LAN host (IPv4 source address) on one, read in turn with a CoDel a ring: one host's flood or bulk TCP fills only its own queue; each queue has a bulk ring and a ring for its sparse flows (a ping, a DNS query: no wait behind the host's own upload); as many on the WAN TUN, one ring each, by internet host and protocol (a ping's reply does not wait behind a download); 1: one ring for all; auto: 8 with 384 MiB of RAM or more, else 1 (a restart applies it)"),
  opt('priority', priority, 'realtime' as Priority,
    'scheduling of the data path: realtime (SCHED_FIFO 10, as the kernel forwards ahead of processes), high (nice -10) or normal'),
  opt('busy_poll', uint(0, 100000, ' microseconds'), 0,
    'microseconds the data path keeps reading its TUNs after the last packet before it sleeps (like net.core.busy_poll): less latency for CPU time; 0: sleep at once'),
  opt('lan_subnet', lanSubnets, [] as string[], 'LAN networks; none: the subnets of lan_device at run time', { key: 'lanSubnets' }),
  opt('max_flows', uint(1024, 4194304), 65536, 'size of the flow table (fixed memory)'),
  // Linux's nf_conntrack_acct (off by default there too): 16 bytes per flow
  // more, past the table's 64-byte budget, so only when asked for.
  opt('acct', bool, false, "byte counters per flow and direction (conntrack's bytes=); 16 bytes more per flow, fixed at start like max_flows"),
  opt('log_level', logLevel, 'info' as LogLevel, 'log level'),
  opt('masq_ports', ports(1024, 65535), [61000, 65535] as PortRange, 'source ports for masquerading; redirects must stay outside',
    { engine: ['masq_port_lo', 'masq_port_hi'] }),
  opt('tcp_timeout', seconds(), 7440, 'established TCP (RFC 5382: at least 2 h 4 min)', { engine: true }),
  opt('tcp_transitory_timeout', seconds(), 240, 'TCP being opened or closed', { engine: true }),
  opt('udp_timeout', seconds(), 300, 'UDP (RFC 4787: at least 2 min, 5 min recommended)', { engine: true }),
  opt('icmp_timeout', seconds(), 60, 'ICMP queries (RFC 5508: at least 60 s)', { engine: true }),
  // Linux's ipfrag_time; a datagram's fragments cannot outlive its 8-bit TTL (RFC 791), hence at most 255.
  opt('frag_timeout', seconds(255), 30, 'reassembly of a fragmented datagram', { engine: true }),
  opt('esp_timeout', seconds(), 1800, 'an established ESP association (at least the rekey interval)', { engine: true }),
  opt('esp_init_timeout', seconds(), 120, 'an outstanding ESP association waiting for the inbound SPI', { engine: true }),
  opt('esp_init_retries', uint(0, 100), 5, 'outstanding-association attempts before a 30 s squelch', { engine: true }),
  opt('ike_timeout', seconds(), 3600, 'an IKE (UDP 500) mapping; at least esp_timeout', { engine: true }),
  opt('natt_timeout', seconds(), 300, 'a NAT-T (UDP 4500) mapping', { engine: true }),
  opt('gre_timeout', seconds(), 7440, 'a PPTP call and its GRE mapping', { engine: true }),
  opt('parallel_sessions', bool, false, 'new ESP of other LAN hosts to a server need not wait for an outstanding one', { engine: true }),
  opt('esp_guess', bool, false, 'an unknown inbound SPI goes to the host with the latest IKE exchange', { engine: true }),
  // Issue 8 item 5: no table one source can fill.
  opt('unreplied_timeout', seconds(), 30, 'what a WAN packet opened (a forward\'s flow, an IKE exchange, an ESP SA) until the LAN side answers; dropped first when a table is full', { engine: true }),
  opt('src_max_flows', uint(0, 4194304), 0, 'flows one LAN host may hold; 0: a quarter of max_flows, at least 1024', { engine: true }),
  opt('src_max_ike', uint(1, 4096), 256, 'IKE exchanges one LAN host may hold (the table holds 4096)', { engine: true }),
  opt('src_max_calls', uint(1, 4096), 256, 'PPTP calls one LAN host may hold (the table holds 4096)', { engine: true }),
  opt('src_max_esp_pending', uint(1, 256), 16, 'outstanding ESP associations one LAN host may hold (256 in all)', { engine: true }),
  opt('src_max_frags', uint(1, 4096), 256, 'fragmented datagrams one LAN host may have in flight (the table holds 4096)', { engine: true }),
  opt('control_socket', socketPath, '/var/run/vpnmasq.sock', 'Unix socket for control commands'),
  opt('wan_interface', netifdName, 'wan', 'netifd interface of the WAN (hotplug and procd triggers; the daemon uses wan_device)'),
  opt('metrics_listen', listen('LAN or loopback'), null as Listen | null, 'Prometheus metrics over HTTP (GET /metrics); never the WAN address'),
  opt('metrics_file', filePath, null as string | null, 'Prometheus text file, rewritten atomically every 5 s (node exporter textfile collector)'),
  opt('web_listen', listen('LAN'), null as Listen | null, 'read-only dashboard over HTTP; a LAN address only'),
  opt('snapshot_dir', dirPath, '/run/vpnmasq', 'state kept across restarts, snapshot-<tun_inside>.bin (tmpfs); delete it or run --fresh to discard'),
  opt('snapshot_interval', uint(0, 3600, ' seconds'), 1, 'seconds between state snapshots; 0 = only at a clean stop'),
] as const;

type MainRow = (typeof MAIN_TABLE)[number];
type ValueOf<R> = R extends Row<string, infer T, string, readonly string[]> ? T : never;

/** The `config vpnmasq` section, typed: one field per row of MAIN_TABLE. */
export type MainConfig = { [R in MainRow as R['key']]: ValueOf<R> };
export type MainOptionName = MainRow['name'];

/** Options without a default: the file must give them. */
type RequiredKey = Extract<MainRow, { required: true }>['key'];

/** Defaults of every main option that has one (deeply frozen). */
export const MAIN_DEFAULTS: Readonly<Omit<MainConfig, RequiredKey>> = Object.freeze(
  Object.fromEntries(
    MAIN_TABLE.filter((r) => !r.required).map((r) => [r.key, typeof r.default === 'object' ? Object.freeze(r.default) : r.default]),
  ),
) as Readonly<Omit<MainConfig, RequiredKey>>;

/** Main section option names, in the order used by formatConfig. */
export const MAIN_OPTIONS: readonly MainOptionName[] = Object.freeze(MAIN_TABLE.map((r) => r.name));

/** The names of the engine's settings record: every engine-bound option's numbers. */
export type EngineSettingName = MainRow['engine'][number];
/** The engine-bound options as one record, keyed by UCI option name, numbers only (booleans 0/1). */
export type EngineSettings = Readonly<Record<EngineSettingName, number>>;

// ---------------------------------------------------------------------------
// Cross-checks, each run right after the option named `after` is read (where
// they always ran), so the first problem reported in a file stays the same.

const CHECKS: { after: MainOptionName; check(m: MainConfig, sec: Sec): void }[] = [
  { after: 'tun_outside', check: distinctDevices },
  { after: 'gre_timeout', check: ikeOutlivesEsp },
  { after: 'web_listen', check: listenersApart },
];

/** The metrics and the dashboard servers cannot share a socket; the dashboard is for the LAN only. */
function listenersApart(m: MainConfig, sec: Sec): void {
  const w = m.webListen, x = m.metricsListen;
  if (w && x && w.host === x.host && w.port === x.port) {
    sec.fail(sec.lineOf('web_listen'), `option web_listen: '${w.host}:${w.port}' is also the metrics_listen (line ${sec.lineOf('metrics_listen')})`);
  }
  if (w && ipaddr.IPv4.parse(w.host).range() === 'loopback') {
    sec.fail(sec.lineOf('web_listen'), `option web_listen: '${w.host}' is a loopback address; the dashboard is served on a LAN address`);
  }
  if (w && m.lanSubnets.length > 0 && !m.lanSubnets.some((c) => ipaddr.IPv4.parse(w.host).match(ipaddr.IPv4.parseCIDR(c)))) {
    sec.fail(sec.lineOf('web_listen'), `option web_listen: ${w.host} is not inside any lan_subnet (${m.lanSubnets.join(', ')})`);
  }
}

function distinctDevices(m: MainConfig, sec: Sec): void {
  const devs: [string, string][] = [
    ['lan_device', m.lanDevice],
    ['wan_device', m.wanDevice],
    ['tun_inside', m.tunInside],
    ['tun_outside', m.tunOutside],
  ];
  for (let i = 1; i < devs.length; i++) {
    for (let j = 0; j < i; j++) {
      if (devs[i]![1] === devs[j]![1]) {
        const [n, d] = devs[i]!;
        sec.fail(sec.lineOf(n), `option ${n}: '${show(d)}' is also the ${devs[j]![0]}; each device must be different`);
      }
    }
  }
}

function ikeOutlivesEsp(m: MainConfig, sec: Sec): void {
  if (m.ikeTimeout >= m.espTimeout) return;
  const name = sec.has('ike_timeout') ? 'ike_timeout' : 'esp_timeout';
  sec.fail(
    sec.lineOf(name),
    `option ${name}: ike_timeout (${m.ikeTimeout}) must be at least esp_timeout (${m.espTimeout}): ` +
      'the IKE mapping must outlive the ESP mappings it negotiated, or rekeying breaks',
  );
}

// ---------------------------------------------------------------------------
// Consumers

/** Reads the main section: unknown options refused, then every row in table order. */
export function parseMain(sec: Sec): MainConfig {
  const before = sec.errors.length;
  sec.checkKnown(MAIN_OPTIONS);
  const m: Record<string, unknown> = {};
  // Each row is read on its own, so every bad value of the section is
  // reported; a cross-check runs only while every row so far was good.
  let failed = false;
  for (const r of MAIN_TABLE as readonly Row[]) {
    const ok = sec.attempt(() => {
      let vals: Val[];
      if (r.type.list) {
        vals = sec.list(r.name);
      } else {
        const v = sec.get(r.name);
        vals = v ? [v] : [];
      }
      if (vals.length > 0) m[r.key] = r.type.read(sec, vals);
      else if (r.required) sec.fail(sec.s.line, `${sec.s.type}: option ${r.name} is required`);
      else m[r.key] = Array.isArray(r.default) ? [...r.default] : r.default;
      return true;
    });
    if (!ok) failed = true;
    for (const c of CHECKS) if (c.after === r.name && !failed) sec.attempt(() => c.check(m as MainConfig, sec));
  }
  if (sec.errors.length > before) throw ConfigError.of(sec.errors.slice(before));
  return m as MainConfig;
}

/** The main section's options as UCI lines, every effective value spelled out. */
export function formatMain(m: MainConfig, line: (kind: 'option' | 'list', name: string, value: string) => string): string {
  let s = '';
  for (const r of MAIN_TABLE as readonly Row[]) {
    const vals = r.type.text(m[r.key as keyof MainConfig]);
    for (const v of vals) s += line(r.type.list ? 'list' : 'option', r.name, v);
  }
  return s;
}

/** The default as the README shows it. */
function defaultText(r: Row): string {
  if (r.required) return 'required';
  const t = r.type.text(r.default);
  return t.length === 0 ? 'none' : t.map((v) => `\`${v}\``).join(' ');
}

/** README.md's option list (between its `options:begin` and `options:end` markers). */
export function optionsMarkdown(): string {
  const rows = (MAIN_TABLE as readonly Row[]).map(
    (r) => `| \`${r.name}\` | ${defaultText(r)} | ${r.type.range} | ${r.doc} |`,
  );
  return ['| option | default | values | what |', '|---|---|---|---|', ...rows].join('\n');
}
