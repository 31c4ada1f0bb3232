#!/usr/bin/env node
// vpnmasq command line: run | check-config | status | conntrack | reload | wan-update | guard | rpcd | demo
//
// Conventions of the tools it sits beside: `conntrack` takes conntrack-tools'
// options (-L/-D/-F/-C, -p, -s/--src, -d/--dst, --sport, --dport); the
// control socket is `--socket` (`-s` is conntrack's source filter; the other
// commands still take `-s` as the socket's old spelling); every command
// takes --help and --version; --json is accepted by every command that
// prints something and refused (usage error) by those that do not; a usage
// error exits 2, a failure 1.
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { ConfigError, DEFAULT_CONFIG_PATH, loadConfig } from '../config/index.js';
import { MAIN_DEFAULTS } from '../config/schema.js';
import { request } from '../control/client.js';
import type { Command } from '../control/protocol.js';
import { formatConntrack } from './conntrack.js';
import { FilterError, filterEmpty, matches, parseFilter, type FilterArgs } from './filter.js';
import type { FlowEntry } from '../engine/engine.js';

const USAGE = `usage: vpnmasq <command> [options]

commands:
  run            run the router (foreground; procd/init keeps it alive)
  check-config   validate the configuration and exit (0 = valid)
  status         counters, flow table use, drops
  conntrack      the flow table, with conntrack-tools' options (-L, -D, -F, -C, filters)
  reload         re-read the configuration (a bad file is refused, the running one stays)
  wan-update     re-read the WAN device's address now (the hotplug script's call)
  guard install|remove|status
                 the fail-closed guard: no forwarding between lan_device and
                 wan_device outside vpnmasq, also while it is not running
                 (run installs it; stop keeps it; remove takes it away)
  capture        write dropped packets to a pcap file (vpnmasq capture --help)
  rpcd           rpcd's exec plugin (ubus call vpnmasq status|conntrack|reload)
  demo           the embedded namespace lab (what \`sudo npm start\` runs)

options (every command):
  -c, --config FILE   configuration (default ${DEFAULT_CONFIG_PATH})
      --socket PATH   control socket (default: the config's control_socket)
      --json          machine-readable output (commands that print)
  -h, --help          this text; \`vpnmasq COMMAND --help\`: that command's
  -V, --version       the version

Usage errors exit 2, failures 1.`;

type Opts = NonNullable<ParseArgsConfig['options']>;

const COMMON: Opts = {
  config: { type: 'string', short: 'c' },
  socket: { type: 'string' },
  json: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
  version: { type: 'boolean', short: 'V' },
};
/** `-s PATH`: the control socket's old spelling, kept where it cannot mean conntrack's --src. */
const SOCKET_S: Opts = { 'socket-s': { type: 'string', short: 's' } };

const CONNTRACK: Opts = {
  dump: { type: 'boolean', short: 'L' },
  delete: { type: 'boolean', short: 'D' },
  flush: { type: 'boolean', short: 'F' },
  count: { type: 'boolean', short: 'C' },
  proto: { type: 'string', short: 'p' },
  src: { type: 'string', short: 's' },
  dst: { type: 'string', short: 'd' },
  sport: { type: 'string' },
  dport: { type: 'string' },
  spi: { type: 'string' },
  'call-id': { type: 'string' },
};

interface CommandSpec {
  summary: string;
  /** Extra lines of `vpnmasq COMMAND --help`. */
  help: string;
  options: Opts;
  /** Prints something: --json accepted. */
  json: boolean;
}

const COMMANDS: Record<string, CommandSpec> = {
  run: {
    summary: 'run [-c FILE] [--log-format text|json|pretty] [--fresh]',
    help: `Runs the router in the foreground until SIGTERM/SIGINT; SIGHUP reloads.
Exits 0 at once, with one line, when the configuration says option enabled '0'.
  --fresh               discard the saved state (snapshot_dir) instead of restoring it
  --log-format text     one line per message: the message, then key=value
                        (warnings and errors on stderr, the rest on stdout)
  --log-format json     pino's JSON lines on stdout
  --log-format pretty   pino-pretty, for a terminal (needs the dev dependency)
The default is pretty on a terminal when pino-pretty is installed, else text.`,
    options: { ...SOCKET_S, 'log-format': { type: 'string' }, fresh: { type: 'boolean' } },
    json: false,
  },
  'check-config': {
    summary: 'check-config [-c FILE] [--json]',
    help: 'Validates the configuration: exit 0 when valid, else every problem as FILE:LINE: reason, exit 1.',
    options: SOCKET_S,
    json: true,
  },
  status: {
    summary: 'status [--json]',
    help: 'Counters, drops by reason, table use, redirects and rules (by name) of the running vpnmasq.',
    options: SOCKET_S,
    json: true,
  },
  conntrack: {
    summary: 'conntrack [-L|-D|-F|-C] [FILTERS] [--json]',
    help: `The state tables, the way conntrack-tools prints them.
  -L, --dump      list the entries (the default)
  -D, --delete    delete the entries the filters match (at least one filter)
  -F, --flush     delete every entry
  -C, --count     print the number of entries (that the filters match)
filters (original direction):
  -p, --proto PROTO   tcp, udp, icmp, esp, gre or a number
  -s, --src ADDR      source address or network
  -d, --dst ADDR      destination address or network
      --sport PORT    source port
      --dport PORT    destination port
      --spi SPI       either SPI of an ESP association (0x hex or decimal)
      --call-id ID    any Call ID of a PPTP call (the LAN host's, its alias, the peer's)
The control socket is --socket here: -s is the source filter.`,
    options: CONNTRACK,
    json: true,
  },
  reload: {
    summary: 'reload [--json]',
    help: 'Makes the running vpnmasq re-read its configuration; a bad file is refused (every problem printed) and the running one stays.',
    options: SOCKET_S,
    json: true,
  },
  'wan-update': {
    summary: 'wan-update [--json]',
    help: "Makes the running vpnmasq re-read the WAN device's address now (hotplug and udhcpc call it).",
    options: SOCKET_S,
    json: true,
  },
  guard: {
    summary: 'guard install|remove|status [--json]',
    help: `The fail-closed guard: no forwarding between lan_device and wan_device
outside vpnmasq, also while it is not running (run installs it; stop keeps
it; remove takes it away). status exits 0 when installed, 3 when not.`,
    options: {},
    json: true,
  },
  rpcd: {
    summary: 'rpcd list | rpcd call METHOD',
    help: `The body of rpcd's exec plugin /usr/libexec/rpcd/vpnmasq (ubus object "vpnmasq"):
  list          the methods and their arguments, as JSON
  call METHOD   status, conntrack (filters: proto, src, dst, sport, dport, spi,
                call_id), conntrack_delete (the same filters, at least one) or
                reload; the arguments as a JSON object on stdin, the answer as JSON.
It always prints JSON (--json is accepted).`,
    options: {},
    json: true,
  },
  demo: {
    summary: 'demo',
    help: 'Builds a namespace lab with vpnmasq in the middle, shows traffic through it, tears it down (root).',
    options: {},
    json: false,
  },
};

class UsageError extends Error {}

function fail(msg: string, code = 1): never {
  process.stderr.write(msg.endsWith('\n') ? msg : msg + '\n');
  process.exit(code);
}

function version(): string {
  try {
    const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version?: string };
    return pkg.version ?? 'unknown';
  } catch {
    return 'unknown';
  }
}

function commandHelp(cmd: string): string {
  const c = COMMANDS[cmd]!;
  return `usage: vpnmasq ${c.summary} [-c FILE] [--socket PATH]\n\n${c.help}\n\n` +
    'Every command also takes -c/--config, --socket, -h/--help, -V/--version.\n';
}

function socketPath(configPath: string, explicit?: string): string {
  if (explicit) return explicit;
  try {
    return loadConfig(configPath).main.controlSocket;
  } catch {
    return MAIN_DEFAULTS.controlSocket;
  }
}

/** The command: the first positional, found without knowing which options take values. */
function findCommand(argv: string[]): string | undefined {
  const { tokens } = parseArgs({
    args: argv, strict: false, allowPositionals: true, tokens: true,
    options: { ...COMMON, ...CONNTRACK, 'log-format': { type: 'string' }, fresh: { type: 'boolean' } },
  });
  return tokens.find((t) => t.kind === 'positional')?.value as string | undefined;
}

type Values = Record<string, string | boolean | undefined>;

async function ask(sock: string, cmd: Command, args?: Record<string, unknown>): Promise<unknown> {
  let res;
  try {
    res = await request(sock, cmd, 5000, args);
  } catch (err) {
    fail(`vpnmasq: ${(err as Error).message}`);
  }
  // (a refused reload names every problem of the file, one per line)
  if (!res.ok) fail(String(res.error).split('\n').map((l) => `vpnmasq: ${cmd}: ${l}`).join('\n'));
  return res.data;
}

function out(text: string): void {
  process.stdout.write(text.endsWith('\n') || text === '' ? text : text + '\n');
}

async function conntrack(v: Values, sock: string): Promise<number> {
  const modes = (['dump', 'delete', 'flush', 'count'] as const).filter((m) => v[m]);
  if (modes.length > 1) throw new UsageError(`conntrack: ${modes.map((m) => `--${m}`).join(' and ')} together; give one of -L, -D, -F, -C`);
  const mode = modes[0] ?? 'dump';
  let filter;
  try {
    filter = parseFilter(v as FilterArgs);
  } catch (err) {
    if (err instanceof FilterError) throw new UsageError(`conntrack: ${err.message}`);
    throw err;
  }
  if (mode === 'flush') {
    if (!filterEmpty(filter)) throw new UsageError('conntrack: -F takes no filters (it empties every table); use -D with filters');
    const d = (await ask(sock, 'conntrack-flush')) as { flushed: number };
    if (v.json) out(JSON.stringify(d));
    else process.stderr.write('vpnmasq: connection tracking table has been emptied.\n');
    return 0;
  }
  if (mode === 'delete') {
    if (filterEmpty(filter)) throw new UsageError('conntrack: -D needs at least one filter (-p, -s, -d, --sport, --dport, --spi, --call-id); -F empties everything');
    const deleted = (await ask(sock, 'conntrack-delete', { filter })) as FlowEntry[];
    if (v.json) out(JSON.stringify(deleted, null, 2));
    else {
      out(formatConntrack(deleted));
      process.stderr.write(`vpnmasq: ${deleted.length} flow entries have been deleted.\n`);
    }
    return 0;
  }
  const flows = ((await ask(sock, 'conntrack')) as FlowEntry[]).filter((e) => matches(e, filter));
  if (mode === 'count') {
    out(v.json ? JSON.stringify({ count: flows.length }) : `${flows.length}`);
    return 0;
  }
  if (v.json) out(JSON.stringify(flows, null, 2));
  else {
    out(formatConntrack(flows));
    process.stderr.write(`vpnmasq: ${flows.length} flow entries have been shown.\n`);
  }
  return 0;
}

async function main(argv: string[]): Promise<number> {
  // `capture` has options of its own (src/cli/capture.ts); --version as everywhere.
  if (argv[0] === 'capture') {
    if (argv.includes('--version') || argv.includes('-V')) { out(`vpnmasq ${version()}`); return 0; }
    return (await import('./capture.js')).runCapture(argv.slice(1));
  }
  let cmd: string | undefined;
  try {
    cmd = findCommand(argv);
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
  if (cmd !== undefined && !Object.prototype.hasOwnProperty.call(COMMANDS, cmd)) {
    throw new UsageError(`unknown command "${cmd}"`);
  }
  const spec = cmd ? COMMANDS[cmd]! : { options: {}, json: false };
  let parsed;
  try {
    parsed = parseArgs({ args: argv, allowPositionals: true, options: { ...COMMON, ...spec.options } });
  } catch (err) {
    throw new UsageError((err as Error).message.replace(/\. To specify a positional argument.*$/s, ''));
  }
  const v = parsed.values as Values;
  if (v.version) { out(`vpnmasq ${version()}`); return 0; }
  if (v.help) { out(cmd ? commandHelp(cmd) : USAGE); return 0; }
  if (!cmd) { out(USAGE); return 2; }
  const maxArgs = cmd === 'rpcd' ? 3 : cmd === 'guard' ? 2 : 1;
  if (parsed.positionals.length > maxArgs) throw new UsageError(`${cmd}: unexpected argument "${parsed.positionals[maxArgs]}"`);
  if (v.json && !spec.json) {
    throw new UsageError(`${cmd}: --json is not accepted (${cmd === 'run' ? 'use --log-format json for JSON log lines' : 'it prints no data'})`);
  }
  const configPath = (v.config as string | undefined) ?? DEFAULT_CONFIG_PATH;
  const sock = () => socketPath(configPath, (v.socket ?? v['socket-s']) as string | undefined);

  switch (cmd) {
    case 'run': {
      const fmt = v['log-format'] as string | undefined;
      if (fmt !== undefined && !['text', 'json', 'pretty'].includes(fmt)) {
        throw new UsageError(`run: --log-format '${fmt}' is not text, json or pretty`);
      }
      const { run, FatalError } = await import('../supervisor.js');
      try {
        return await run({ configPath, logFormat: fmt as 'text' | 'json' | 'pretty' | undefined, fresh: v.fresh === true });
      } catch (err) {
        if (err instanceof FatalError) fail(err.message, err.exitCode);
        throw err;
      }
    }
    case 'check-config': {
      try {
        const cfg = loadConfig(configPath);
        // Where the metrics and the dashboard would listen, when the devices are here to check against.
        const { checkListeners, deviceAddresses } = await import('../observe/listen.js');
        let addrs = null;
        try { addrs = deviceAddresses(cfg); } catch { /* no iproute2 or no such device here: the start checks again */ }
        if (addrs) checkListeners(cfg, addrs, null);
        if (v.json) out(JSON.stringify({ file: cfg.file, ok: true, enabled: cfg.main.enabled, redirects: cfg.redirects.length, rules: cfg.rules.length }));
        else out(`${cfg.file}: OK (${cfg.redirects.length} redirects, ${cfg.rules.length} rules)`);
        return 0;
      } catch (err) {
        if (!(err instanceof ConfigError)) throw err;
        if (v.json) {
          out(JSON.stringify({ file: configPath, ok: false, errors: err.all.map((e) => ({ file: e.file, line: e.line, reason: e.reason })) }));
          return 1;
        }
        fail(err.lines('vpnmasq: '));
      }
    }
    case 'conntrack':
      return conntrack(v, sock());
    case 'status': {
      const d = await ask(sock(), 'status');
      out(v.json ? JSON.stringify(d, null, 2) : formatStatus(d as Record<string, any>));
      return 0;
    }
    case 'wan-update': {
      const d = (await ask(sock(), 'wan-update')) as { wanAddress: string | null };
      out(v.json ? JSON.stringify(d) : `vpnmasq: WAN address ${d.wanAddress ?? '(none)'}`);
      return 0;
    }
    case 'reload': {
      const d = (await ask(sock(), 'reload')) as { restartNeeded?: string[] };
      out(v.json ? JSON.stringify(d) : 'vpnmasq: configuration reloaded' +
        (d?.restartNeeded?.length ? `; restart needed for: ${d.restartNeeded.join(', ')}` : ''));
      return 0;
    }
    case 'guard': {
      const { guardCommand } = await import('./guard.js');
      return guardCommand(parsed.positionals[1], configPath, v.json === true);
    }
    case 'rpcd': {
      const [, what, method] = parsed.positionals;
      const { RPCD_METHODS, rpcdCall } = await import('./rpcd.js');
      if (what === 'list' && method === undefined) { out(JSON.stringify(RPCD_METHODS)); return 0; }
      if (what !== 'call' || method === undefined) throw new UsageError('rpcd: use "rpcd list" or "rpcd call METHOD"');
      const input = await new Promise<string>((resolve) => {
        let buf = '';
        process.stdin.setEncoding('utf8');
        process.stdin.on('data', (d: string) => { buf += d; if (buf.length > 65536) process.stdin.destroy(); });
        process.stdin.on('end', () => resolve(buf));
        process.stdin.on('close', () => resolve(buf));
      });
      const path = sock();
      out(JSON.stringify(await rpcdCall(method, input, (c, a) => request(path, c, 5000, a as Record<string, unknown> | undefined))));
      return 0;
    }
    case 'demo': {
      const { runDemo } = await import('../lab/demo.js');
      const cliPath = fileURLToPath(import.meta.url);
      await runDemo({ cliPath });
      return 0;
    }
  }
  throw new UsageError(`unknown command "${cmd}"`);
}

/** ', 18.0 MiB on 2 MiB pages' or ', 4 KiB pages: <why>' (status.hugePages, src/supervisor.ts). */
function hugePagesText(h: { advisedBytes: number; residentBytes: number; pageBytes: number; off?: string } | undefined): string {
  if (!h) return '';
  if (h.off || !h.advisedBytes) return `, 4 KiB pages: ${h.off ?? 'none advised'}`;
  return `, ${(h.residentBytes / 1048576).toFixed(1)} MiB on ${h.pageBytes / 1048576} MiB pages`;
}

function formatStatus(s: Record<string, any>): string {
  const lines = [
    `vpnmasq pid ${s.pid}, up ${s.uptimeS} s, config ${s.config}`,
    `LAN ${s.lanDevice} (${(s.lanSubnets as string[]).join(', ')}), WAN ${s.wanDevice} ${s.wanAddress ?? '(no address)'}`,
    `flows ${s.flows.active}/${s.flows.max} (${s.flows.bytesPerFlow} bytes/flow${s.flows.acct ? ' with byte counters (acct)' : ''}, ${(s.memoryBytes / 1048576).toFixed(1)} MiB engine memory${hugePagesText(s.hugePages)})`,
    `redirects ${s.redirects}, rules ${s.rules}`,
    ...(s.offload ? [`offload ${s.offload.enabled ? (s.offload.offloads as string[]).join(' ') || 'virtio header only' : 'off'}` +
      `${s.offload.enabled && !s.offload.uso ? ' (no USO)' : ''}${s.offload.gro ? ', gro' : ''}, slots ${s.offload.slots}${s.offload.note ? ` (${s.offload.note})` : ''}`] : []),
    ...(s.dataPath ? [`data path ${s.dataPath.thread === 'main' ? 'on the main thread (too little RAM for a thread of its own)' : `on its own thread (worker ${s.dataPath.threadId})`}, ${s.dataPath.batches} batches`] : []),
    ...(s.priority ? [`data path ${s.priority.applied}${s.priority.note ? ` (${s.priority.note})` : ''}`] : []),
    ...(s.tunQueue ? [tunQueueLine(s.tunQueue)] : []),
    ...((s.redirectList ?? []) as string[]).map((l) => `  redirect ${l}`),
    ...((s.ruleList ?? []) as string[]).map((l) => `  rule ${l}`),
    ...snapshotLines(s.snapshot),
    'counters:',
    ...Object.entries(s.counters as Record<string, number>).map(([k, v]) => `  ${k.padEnd(16)} ${v}`),
    'drops:',
    ...Object.entries(s.drops as Record<string, number>).map(([k, v]) => `  ${k.padEnd(16)} ${v}`),
  ];
  if (s.tunWriteDrops) lines.push(`  ${'tun_write'.padEnd(16)} ${s.tunWriteDrops}`);
  if (s.tunQueueDrops) {
    const by = Object.entries((s.tunQueueDropsByClass ?? {}) as Record<string, number>).filter(([, n]) => n > 0).map(([c, n]) => `${c} ${n}`);
    const trims = s.tunQueueTrims ? `; ${s.tunQueueTrims} of them a super-packet's last segment` : '';
    lines.push(`  ${'tun_queue'.padEnd(16)} ${s.tunQueueDrops}${by.length ? ` (${by.join(', ')}${trims})` : ''}`);
  }
  if (s.tunQueueMarks) lines.push(`ecn: ${s.tunQueueMarks} packets marked CE by the tun queue instead of dropped`);
  return lines.join('\n') + '\n';
}

/**
 * `tun queue txqueuelen 1000/1000, 8 LAN host queues (a bulk and a sparse ring each), 8 WAN host queues (by
 * remote host and protocol), CoDel target 500 µs interval 5000 µs on ring stamps, batch 262144 B` (LAN/WAN TUN
 * rings, each TUN's host queues, then the readers' discipline and how it times packets). The WAN TUN's one
 * ring is named only where it has one against the option (a persistent single-queue device, say).
 */
function tunQueueLine(q: Record<string, any>): string {
  const clock = q.clock?.lan ?? q.clock?.wan;
  const timed = !clock ? '' : clock.kind === 'stamps' ? ' on ring stamps' : ` on the ring-empty bound (${clock.reason})`;
  const wanCodel = q.wanTargetUs !== undefined ? ` (WAN: target ${q.wanTargetUs} µs interval ${q.wanIntervalUs} µs)` : '';
  const codel = q.targetUs > 0 ? `CoDel target ${q.targetUs} µs interval ${q.intervalUs} µs${wanCodel}${timed}` : 'no head drops';
  const lan = q.hostQueues > 1 ? `${q.hostQueues} LAN host queues (a bulk and a sparse ring each)` : `one LAN ring${q.hostQueuesNote ? ` (host queues: ${q.hostQueuesNote})` : ''}`;
  const wan = q.wanHostQueues > 1 ? `, ${q.wanHostQueues} WAN host queues (by remote host and protocol)`
    : q.wanHostQueuesNote && q.hostQueues > 1 ? `, one WAN ring (host queues: ${q.wanHostQueuesNote})` : '';
  const hosts = lan + wan;
  return `tun queue txqueuelen ${q.txqueuelen?.lan ?? '?'}/${q.txqueuelen?.wan ?? '?'}, ${hosts}, ${codel}, batch ${q.batchBytes ? `${q.batchBytes} B` : 'slots only'}`;
}

function snapshotLines(sn: Record<string, any> | undefined): string[] {
  if (!sn) return [];
  const lines: string[] = [];
  if (sn.restored) {
    const e = sn.restored.entries as Record<string, number>;
    lines.push(`state restored at ${sn.restored.at} from ${sn.file} (saved ${sn.restored.savedAt}): ` +
      Object.entries(e).map(([k, v]) => `${k} ${v}`).join(', '));
  } else if (sn.refused) {
    lines.push(`state not restored (started empty): ${sn.refused}`);
  } else {
    lines.push(sn.fresh ? 'state discarded at start (--fresh)' : `no saved state at start (${sn.file})`);
  }
  lines.push(sn.lastWrite
    ? `state snapshot every ${sn.intervalS || '(stop only)'} s, last ${sn.lastWrite.at}, ${sn.lastWrite.bytes} bytes`
    : `state snapshot every ${sn.intervalS || '(stop only)'} s, none written yet${sn.writeError ? `: ${sn.writeError}` : ''}`);
  return lines;
}

main(process.argv.slice(2)).then(
  (code) => { process.exitCode = code; },
  (err) => {
    if (err instanceof UsageError) fail(`vpnmasq: ${err.message}\n${USAGE}`, 2);
    fail(`vpnmasq: ${err instanceof Error ? err.stack ?? err.message : String(err)}`);
  },
);
