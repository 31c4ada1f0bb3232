#!/usr/bin/env node
// vpnmasq command line: run | check-config | status | conntrack | reload | demo
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';
import { ConfigError, DEFAULT_CONFIG_PATH, loadConfig } from '../config/index.js';
import { MAIN_DEFAULTS } from '../config/schema.js';
import { request } from '../control/client.js';
import { formatConntrack } from './conntrack.js';
import type { FlowEntry } from '../engine/engine.js';

const USAGE = `usage: vpnmasq <command> [options]

commands:
  run            run the router (foreground; procd/init keeps it alive)
  check-config   validate the configuration and exit (0 = valid)
  status         counters, flow table use, drops
  conntrack      the flow table, like conntrack -L (-L accepted; --json)
  reload         re-read the configuration (a bad file is refused, the running one stays)
  wan-update     re-read the WAN device's address now (the hotplug script's call)
  demo           the embedded namespace lab (what \`sudo npm start\` runs)

options:
  -c, --config FILE   configuration (default ${DEFAULT_CONFIG_PATH})
  -s, --socket PATH   control socket (default: the config's control_socket)
      --json          machine-readable output (status, conntrack)
  -h, --help`;

function fail(msg: string, code = 1): never {
  process.stderr.write(msg.endsWith('\n') ? msg : msg + '\n');
  process.exit(code);
}

function socketPath(configPath: string, explicit?: string): string {
  if (explicit) return explicit;
  try {
    return loadConfig(configPath).main.controlSocket;
  } catch {
    return MAIN_DEFAULTS.controlSocket;
  }
}

async function main(argv: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv, allowPositionals: true,
      options: {
        config: { type: 'string', short: 'c' }, socket: { type: 'string', short: 's' },
        json: { type: 'boolean' }, help: { type: 'boolean', short: 'h' }, L: { type: 'boolean', short: 'L' },
      },
    });
  } catch (err) {
    fail(`vpnmasq: ${(err as Error).message}\n${USAGE}`, 2);
  }
  const { values, positionals } = parsed;
  const cmd = positionals[0];
  if (values.help || !cmd) { process.stdout.write(USAGE + '\n'); return cmd || values.help ? 0 : 2; }
  const configPath = values.config ?? DEFAULT_CONFIG_PATH;

  switch (cmd) {
    case 'run': {
      const { run, FatalError } = await import('../supervisor.js');
      try {
        return await run({ configPath });
      } catch (err) {
        if (err instanceof FatalError) fail(err.message, err.exitCode);
        throw err;
      }
    }
    case 'check-config': {
      try {
        const cfg = loadConfig(configPath);
        process.stdout.write(`${cfg.file}: OK (${cfg.redirects.length} redirects, ${cfg.rules.length} rules)\n`);
        return 0;
      } catch (err) {
        if (err instanceof ConfigError) fail(err.lines('vpnmasq: '));
        throw err;
      }
    }
    case 'status':
    case 'conntrack':
    case 'reload':
    case 'wan-update': {
      const sock = socketPath(configPath, values.socket);
      let res;
      try {
        res = await request(sock, cmd);
      } catch (err) {
        fail(`vpnmasq: ${(err as Error).message}`);
      }
      if (!res.ok) fail(`vpnmasq: ${cmd}: ${res.error}`);
      if (cmd === 'conntrack') {
        const flows = res.data as FlowEntry[];
        if (values.json) process.stdout.write(JSON.stringify(flows, null, 2) + '\n');
        else {
          process.stdout.write(formatConntrack(flows));
          process.stderr.write(`vpnmasq: ${flows.length} flow entries have been shown.\n`);
        }
      } else if (cmd === 'status') {
        process.stdout.write(values.json ? JSON.stringify(res.data, null, 2) + '\n' : formatStatus(res.data as Record<string, any>));
      } else if (cmd === 'wan-update') {
        const d = res.data as { wanAddress: string | null };
        process.stdout.write(`vpnmasq: WAN address ${d.wanAddress ?? '(none)'}\n`);
      } else {
        const d = res.data as { restartNeeded?: string[] };
        process.stdout.write('vpnmasq: configuration reloaded' +
          (d?.restartNeeded?.length ? `; restart needed for: ${d.restartNeeded.join(', ')}` : '') + '\n');
      }
      return 0;
    }
    case 'demo': {
      const { runDemo } = await import('../lab/demo.js');
      const cliPath = fileURLToPath(import.meta.url);
      await runDemo({ cliPath });
      return 0;
    }
    default:
      fail(`vpnmasq: unknown command "${cmd}"\n${USAGE}`, 2);
  }
}

function formatStatus(s: Record<string, any>): string {
  const lines = [
    `vpnmasq pid ${s.pid}, up ${s.uptimeS} s, config ${s.config}`,
    `LAN ${s.lanDevice} (${(s.lanSubnets as string[]).join(', ')}), WAN ${s.wanDevice} ${s.wanAddress ?? '(no address)'}`,
    `flows ${s.flows.active}/${s.flows.max} (${s.flows.bytesPerFlow} bytes/flow, ${(s.memoryBytes / 1048576).toFixed(1)} MiB engine memory)`,
    `redirects ${s.redirects}, rules ${s.rules}`,
    'counters:',
    ...Object.entries(s.counters as Record<string, number>).map(([k, v]) => `  ${k.padEnd(16)} ${v}`),
    'drops:',
    ...Object.entries(s.drops as Record<string, number>).map(([k, v]) => `  ${k.padEnd(16)} ${v}`),
  ];
  if (s.tunWriteDrops) lines.push(`  ${'tun_write'.padEnd(16)} ${s.tunWriteDrops}`);
  return lines.join('\n') + '\n';
}

main(process.argv.slice(2)).then(
  (code) => { process.exitCode = code; },
  (err) => fail(`vpnmasq: ${err instanceof Error ? err.stack ?? err.message : String(err)}`),
);
