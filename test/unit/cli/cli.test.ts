// The built command line (node dist/cli/main.js) as a user meets it: exit
// codes and the exact lines on stdout/stderr. check-config, status and
// conntrack without a daemon, unknown commands; as root also `run` refusing
// to start unprivileged and with a missing device, leaving nothing behind.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync, spawnSync } from 'node:child_process';
import { chmodSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { skipUnless } from '../../helpers/prereq.js';
import { readableCopy, type ReadableCopy } from '../../helpers/unprivileged.js';

const ROOT = resolve(__dirname, '../../..');
const CLI = join(ROOT, 'dist/cli/main.js');
const SHIPPED_CONFIG = join(ROOT, 'firmware/files/etc/config/vpnmasq');

function newest(dir: string): number {
  let t = 0;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    t = Math.max(t, e.isDirectory() ? newest(p) : e.name.endsWith('.ts') ? statSync(p).mtimeMs : 0);
  }
  return t;
}

/** Builds dist/ with tsc when it is missing or older than src/. */
function ensureBuilt(): void {
  let built = 0;
  try { built = statSync(CLI).mtimeMs; } catch { /* not built */ }
  if (built >= newest(join(ROOT, 'src'))) return;
  execFileSync(process.execPath, [join(ROOT, 'node_modules/typescript/bin/tsc'), '-p', join(ROOT, 'tsconfig.json')], {
    cwd: ROOT, stdio: 'pipe',
  });
}

interface Run { status: number | null; stdout: string; stderr: string }
function cli(args: string[], prefix: string[] = [], cliPath = CLI): Run {
  const argv = [...prefix, process.execPath, cliPath, ...args];
  const r = spawnSync(argv[0], argv.slice(1), { encoding: 'utf8', timeout: 30_000, env: { ...process.env, NO_COLOR: '1' } });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

let dir: string;
const at = (name: string) => join(dir, name);
function write(name: string, text: string | Buffer): string {
  writeFileSync(at(name), text);
  chmodSync(at(name), 0o644);
  return at(name);
}

const MAIN = (sock: string) => `config vpnmasq 'main'
	option lan_device 'br-lan'
	option wan_device 'wan'
	option enabled '1'
	option control_socket '${sock}'
`;

beforeAll(() => {
  ensureBuilt();
  // readable by everyone: the unprivileged `run` below reads its config from here
  dir = mkdtempSync(join(tmpdir(), 'vpnmasq-cli-'));
  chmodSync(dir, 0o755);
});
afterAll(() => { if (dir) rmSync(dir, { recursive: true, force: true }); });

describe('vpnmasq check-config', () => {
  it('a good file: exit 0, one line "FILE: OK (…)" on stdout', () => {
    const f = write('good', `${MAIN(at('good.sock'))}
config redirect
	option name 'web'
	option src 'wan'
	option proto 'tcp'
	option src_dport '8080'
	option dest 'lan'
	option dest_ip '192.168.1.10'
	option dest_port '80'

config rule
	option src 'wan'
	option proto 'udp'
	option dest_port '500 4500'
	option target 'ACCEPT'
`);
    const r = cli(['check-config', '-c', f]);
    expect(r).toEqual({ status: 0, stdout: `${f}: OK (1 redirects, 1 rules)\n`, stderr: '' });
    expect(cli(['check-config', '--config', f]).status).toBe(0);
  });

  it('the configuration shipped in the image is valid', () => {
    const r = cli(['check-config', '-c', SHIPPED_CONFIG]);
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/^.*firmware\/files\/etc\/config\/vpnmasq: OK \(\d+ redirects, \d+ rules\)\n$/);
  });

  const HEAD = "config vpnmasq 'main'\n\toption lan_device 'br-lan'\n\toption wan_device 'wan'\n";
  const bad: [string, string | Buffer, number, RegExp][] = [
    ['an unterminated quote', "config vpnmasq 'main'\n\toption lan_device 'br-lan\n", 2, /unterminated ' quote/],
    ['an unknown option', `${HEAD}\toption frobnicate '1'\n`, 4, /option frobnicate: unknown option in a 'vpnmasq' section/],
    ['a value out of range', `${HEAD}\toption max_flows '12'\n`, 4, /option max_flows: '12' is out of range \(1024\.\.4194304\)/],
    ['a bad log level', `${HEAD}\toption log_level 'loud'\n`, 4, /option log_level: 'loud' is not a log level/],
    ['a bad address in a redirect', `${HEAD}\nconfig redirect\n\toption src 'wan'\n\toption proto 'tcp'\n\toption src_dport '8080'\n\toption dest_ip '192.168.1.300'\n`,
      9, /option dest_ip: '192\.168\.1\.300' is not an IPv4 address/],
    ['an unknown section', `${HEAD}\nconfig frobnicate\n`, 5, /config frobnicate: unknown section type/],
    ['an option outside a section', "option lan_device 'x'\n", 1, /option outside a section/],
    ['invalid UTF-8', Buffer.concat([Buffer.from(`${HEAD}\toption name '`), Buffer.from([0xff, 0xfe]), Buffer.from("'\n")]), 4, /invalid UTF-8 text/],
    ['a required option missing', "config vpnmasq 'main'\n\toption lan_device 'br-lan'\n", 1, /^vpnmasq: option wan_device is required$/],
    ['an incomplete redirect', "config redirect\n\toption src 'wan'\n", 1, /^redirect: option src_dport is required for proto tcp udp$/],
  ];
  it.each(bad)('%s: exit 1, one line "vpnmasq: FILE:LINE: reason" on stderr', (name, text, line, reason) => {
    const f = write(`bad-${name.replace(/\W+/g, '-')}`, text);
    const r = cli(['check-config', '-c', f]);
    expect(r.status).toBe(1);
    expect(r.stdout).toBe('');
    const lines = r.stderr.split('\n');
    expect(lines.length, r.stderr).toBe(2); // one line and its newline
    expect(lines[1]).toBe('');
    const m = /^vpnmasq: (.+):(\d+): (.+)$/.exec(lines[0]);
    expect(m, lines[0]).not.toBeNull();
    expect(m![1]).toBe(f);
    expect(Number(m![2])).toBe(line);
    expect(m![3]).toMatch(reason);
  });

  it('a missing file: exit 1, "FILE:0: cannot read the configuration: ENOENT"', () => {
    const f = at('does-not-exist');
    const r = cli(['check-config', '-c', f]);
    expect(r).toEqual({ status: 1, stdout: '', stderr: `vpnmasq: ${f}:0: cannot read the configuration: ENOENT: no such file or directory\n` });
  });

  it('a directory: exit 1, "FILE:0: cannot read the configuration: EISDIR"', () => {
    const r = cli(['check-config', '-c', dir]);
    expect(r.status).toBe(1);
    expect(r.stderr).toBe(`vpnmasq: ${dir}:0: cannot read the configuration: EISDIR: illegal operation on a directory\n`);
  });
});

describe('vpnmasq status / conntrack / reload without a daemon', () => {
  it.each([['status'], ['conntrack'], ['reload'], ['status', '--json'], ['conntrack', '-L']])('%s %s: exit 1, "not running (no control socket at …)"', (...args) => {
    const sock = at('nobody-listens.sock');
    const r = cli([...args.filter(Boolean), '--socket', sock]);
    expect(r).toEqual({ status: 1, stdout: '', stderr: `vpnmasq: vpnmasq is not running (no control socket at ${sock})\n` });
  });

  it('the socket path comes from the configuration\'s control_socket', () => {
    const sock = at('from-config.sock');
    const f = write('sockcfg', MAIN(sock));
    for (const cmd of ['status', 'conntrack']) {
      expect(cli([cmd, '-c', f])).toEqual({ status: 1, stdout: '', stderr: `vpnmasq: vpnmasq is not running (no control socket at ${sock})\n` });
    }
  });

  it('a stale file where the socket should be is "not running" too', () => {
    const stale = write('stale.sock', '');
    expect(cli(['status', '-s', stale])).toEqual({
      status: 1, stdout: '', stderr: `vpnmasq: vpnmasq is not running (no control socket at ${stale})\n`,
    });
  });
});

describe('vpnmasq usage', () => {
  it('an unknown command: exit 2, the command named and the usage on stderr', () => {
    const r = cli(['frobnicate']);
    expect(r.status).toBe(2);
    expect(r.stdout).toBe('');
    expect(r.stderr.split('\n')[0]).toBe('vpnmasq: unknown command "frobnicate"');
    expect(r.stderr).toContain('usage: vpnmasq <command> [options]');
    expect(r.stderr).toMatch(/^\s+check-config\s/m);
  });

  it('guard: an unknown subcommand is exit 2 with the guard usage; the command is in the usage', () => {
    const r = cli(['guard', 'frobnicate']);
    expect(r.status).toBe(2);
    expect(r.stdout).toBe('');
    expect(r.stderr).toBe('vpnmasq: guard: unknown subcommand "frobnicate"\nusage: vpnmasq guard install|remove|status [--config FILE] [--json]\n');
    expect(cli(['--help']).stdout).toMatch(/^\s+guard install\|remove\|status$/m);
  });

  it('an unknown option: exit 2 with the usage', () => {
    const r = cli(['status', '--frobnicate']);
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/^vpnmasq: .*--frobnicate/);
    expect(r.stderr).toContain('usage: vpnmasq <command> [options]');
  });

  it('no command: exit 2 with the usage; --help: exit 0 with the usage', () => {
    const none = cli([]);
    expect(none.status).toBe(2);
    expect(none.stdout).toContain('usage: vpnmasq <command> [options]');
    const help = cli(['--help']);
    expect(help.status).toBe(0);
    expect(help.stdout).toBe(none.stdout);
    expect(help.stderr).toBe('');
  });
});

describe.skipIf(skipUnless({ root: true, tun: true, tools: ['ip', 'setpriv'] }))('vpnmasq run (root)', () => {
  const ns = `vmcli-${process.pid}`;
  const inNs = (...cmd: string[]) => execFileSync('ip', ['netns', 'exec', ns, ...cmd], { encoding: 'utf8' });
  // what the unprivileged `run` loads, where it may read it whatever the
  // checkout's directory allows (test/helpers/unprivileged.ts)
  let copy: ReadableCopy | undefined;

  beforeAll(() => {
    spawnSync('ip', ['netns', 'del', ns]); // a leftover of a killed run
    execFileSync('ip', ['netns', 'add', ns]);
    copy = readableCopy(['dist', 'build/Release/vpnmasq_tun.node']);
  });
  afterAll(() => {
    spawnSync('ip', ['netns', 'del', ns]);
    copy?.cleanup();
  });

  it('as an unprivileged user: exactly one line about root, exit non-zero', () => {
    const f = write('unpriv', MAIN(at('unpriv.sock')));
    const r = cli(['run', '-c', f], ['setpriv', '--reuid=65534', '--regid=65534', '--clear-groups'], join(copy!.root, 'dist/cli/main.js'));
    expect(r.status).not.toBe(0);
    expect(r.status).not.toBeNull();
    expect(r.stdout).toBe('');
    expect(r.stderr).toBe('vpnmasq: must run as root (it creates TUN devices and policy routes)\n');
  });

  it.each([
    ['lan_device', 'nope0', 'lo'],
    ['wan_device', 'lo', 'nope1'],
  ])('a missing %s: the device error, exit non-zero, no TUN device and no ip rule left behind', (opt, lan, wan) => {
    const before = { rules: inNs('ip', '-4', 'rule', 'show'), links: inNs('ip', '-o', 'link', 'show') };
    const f = write(`nodev-${opt}`, `config vpnmasq 'main'
	option lan_device '${lan}'
	option wan_device '${wan}'
	option enabled '1'
	option tun_inside 'vmt-in'
	option tun_outside 'vmt-out'
	option lan_subnet '192.168.77.0/24'
	option control_socket '${at(`${opt}.sock`)}'
`);
    const r = cli(['run', '-c', f], ['ip', 'netns', 'exec', ns]);
    expect(r.status).not.toBe(0);
    expect(r.status).not.toBeNull();
    expect(r.stdout).toBe('');
    const dev = opt === 'lan_device' ? lan : wan;
    expect(r.stderr).toBe(`vpnmasq: ${f}: option ${opt}: device "${dev}" does not exist\n`);
    expect(inNs('ip', '-o', 'link', 'show', 'type', 'tun')).toBe('');
    expect(inNs('ip', '-o', 'link', 'show')).toBe(before.links);
    expect(inNs('ip', '-4', 'rule', 'show')).toBe(before.rules);
    expect(inNs('ip', '-4', 'rule', 'show')).toBe('0:\tfrom all lookup local\n32766:\tfrom all lookup main\n32767:\tfrom all lookup default\n');
  });

  describe('with devices present', () => {
    beforeAll(() => {
      // (no dummy module on every kernel here: a veth pair gives two devices)
      execFileSync('ip', ['-n', ns, 'link', 'add', 'vmd-lan', 'type', 'veth', 'peer', 'name', 'vmd-wan']);
    });
    const conf = (name: string, tunIn: string) => write(name, `config vpnmasq 'main'
	option lan_device 'vmd-lan'
	option wan_device 'vmd-wan'
	option enabled '1'
	option tun_inside '${tunIn}'
	option tun_outside 'vmt-out'
	option lan_subnet '192.168.77.0/24'
	option control_socket '${at(`${name}.sock`)}'
`);

    it('no /dev/net/tun: one line naming it, exit non-zero, nothing left behind', () => {
      const before = inNs('ip', '-4', 'rule', 'show');
      const f = conf('notun', 'vmt-in');
      // a private mount namespace where /dev/net is empty
      const r = spawnSync('ip', ['netns', 'exec', ns, 'unshare', '-m', 'sh', '-c',
        `mount -t tmpfs tmpfs /dev/net && exec "${process.execPath}" "${CLI}" run -c "${f}"`], { encoding: 'utf8', timeout: 30_000 });
      expect(r.status).not.toBe(0);
      expect(r.stderr).toBe('vpnmasq: /dev/net/tun is missing (load the tun module: modprobe tun)\n');
      expect(inNs('ip', '-o', 'link', 'show', 'type', 'tun')).toBe('');
      expect(inNs('ip', '-4', 'rule', 'show')).toBe(before);
    });

    it('a TUN that cannot be created (the name is taken by another device): one line, exit non-zero, nothing left behind', () => {
      execFileSync('ip', ['-n', ns, 'link', 'add', 'vmt-taken', 'type', 'veth', 'peer', 'name', 'vmt-taken2']);
      const before = inNs('ip', '-4', 'rule', 'show');
      const f = conf('taken', 'vmt-taken');
      const r = cli(['run', '-c', f], ['ip', 'netns', 'exec', ns]);
      expect(r.status).not.toBe(0);
      expect(r.stderr.split('\n').filter(Boolean)).toHaveLength(1);
      expect(r.stderr).toMatch(/^vpnmasq: cannot create TUN device "vmt-taken": .*\(E[A-Z]+\)/);
      expect(inNs('ip', '-o', 'link', 'show', 'type', 'tun')).toBe('');
      expect(inNs('ip', '-4', 'rule', 'show')).toBe(before);
    });
  });
});
