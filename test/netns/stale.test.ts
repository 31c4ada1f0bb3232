// `vpnmasq run` after a killed run: the crashed run's rules, routes and
// sysctls are removed once, at the start of the next run, before it creates
// anything; so even a start that then fails (its TUN name is taken) leaves
// the namespace as it was before the first run, and a start that succeeds
// replaces them and removes its own on SIGTERM.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { skipUnless } from '../helpers/prereq.js';

const CLI = resolve(__dirname, '../../dist/cli/main.js');
const CLEAN_RULES = '0:\tfrom all lookup local\n32766:\tfrom all lookup main\n32767:\tfrom all lookup default\n';

describe.skipIf(skipUnless({ root: true, tun: true, tools: ['ip'] }))('vpnmasq run after a killed run', () => {
  const id = process.pid % 100000;
  const ns = `vm${id}-stale`;
  const tunIn = `vms${id}i`; // the routing state file is named after it: unique per test run
  const dir = mkdtempSync(join(tmpdir(), 'vpnmasq-stale-'));
  const inNs = (...cmd: string[]) => execFileSync('ip', ['netns', 'exec', ns, ...cmd], { encoding: 'utf8' });
  const conf = (name: string, tunInside: string) => {
    const f = join(dir, name);
    writeFileSync(f, `config vpnmasq 'main'
	option lan_device 'vms-lan'
	option wan_device 'vms-wan'
	option enabled '1'
	option tun_inside '${tunInside}'
	option tun_outside 'vms${id}o'
	option lan_subnet '192.168.78.0/24'
	option control_socket '${join(dir, `${name}.sock`)}'
	option snapshot_dir '${join(dir, 'state')}'
`);
    return f;
  };
  const children: ChildProcess[] = [];

  /** Starts `vpnmasq run` in the namespace and waits for its control socket. */
  async function runDaemon(f: string, sock: string): Promise<ChildProcess> {
    const child = spawn('ip', ['netns', 'exec', ns, process.execPath, CLI, 'run', '-c', f], { stdio: ['ignore', 'pipe', 'pipe'] });
    children.push(child);
    let out = '';
    child.stdout!.on('data', (d) => { out += d; });
    child.stderr!.on('data', (d) => { out += d; });
    for (let i = 0; i < 150 && !(out.includes('vpnmasq ready') && existsSync(sock)); i++) {
      if (child.exitCode !== null) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    if (!out.includes('vpnmasq ready')) throw new Error(`vpnmasq did not start:\n${out}`);
    return child;
  }
  const exited = (c: ChildProcess) => new Promise<void>((r) => (c.exitCode !== null || c.signalCode !== null ? r() : c.once('exit', () => r())));

  beforeAll(() => {
    spawnSync('ip', ['netns', 'del', ns]);
    execFileSync('ip', ['netns', 'add', ns]);
    execFileSync('ip', ['-n', ns, 'link', 'add', 'vms-lan', 'type', 'veth', 'peer', 'name', 'vms-wan']);
    execFileSync('ip', ['-n', ns, 'link', 'add', 'vms-busy', 'type', 'veth', 'peer', 'name', 'vms-busy2']);
    for (const d of ['lo', 'vms-lan', 'vms-wan']) execFileSync('ip', ['-n', ns, 'link', 'set', d, 'up']);
  });
  afterAll(() => {
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    spawnSync('ip', ['netns', 'del', ns]);
    rmSync(`/run/vpnmasq/routing-${tunIn}.json`, { force: true });
    rmSync(dir, { recursive: true, force: true });
  });

  it('a failing start still removes the crashed run\'s rules; a good start replaces them and cleans up on SIGTERM', async () => {
    expect(inNs('ip', '-4', 'rule', 'show')).toBe(CLEAN_RULES);
    const good = conf('good', tunIn);

    const first = await runDaemon(good, join(dir, 'good.sock'));
    const installed = inNs('ip', '-4', 'rule', 'show');
    expect(installed).toMatch(/^30:\tfrom all fwmark 0x1000000\/0x1000000 iif vms-lan lookup 100$/m);
    first.kill('SIGKILL');
    await exited(first);
    expect(inNs('ip', '-4', 'rule', 'show')).toBe(installed); // a crash leaves its rules behind

    // The next start fails at its TUN (the name belongs to a veth), after the stale clean-up.
    const busy = spawnSync('ip', ['netns', 'exec', ns, process.execPath, CLI, 'run', '-c', conf('busy', 'vms-busy')], {
      encoding: 'utf8', timeout: 30_000,
    });
    expect(busy.status).not.toBe(0);
    expect(busy.stderr).toMatch(/^vpnmasq: cannot create TUN device "vms-busy": /);
    expect(inNs('ip', '-4', 'rule', 'show')).toBe(CLEAN_RULES);

    // Crash again, then a start that succeeds, then a clean stop.
    const second = await runDaemon(good, join(dir, 'good.sock'));
    second.kill('SIGKILL');
    await exited(second);
    const third = await runDaemon(good, join(dir, 'good.sock'));
    expect(inNs('ip', '-4', 'rule', 'show')).toBe(installed);
    third.kill('SIGTERM');
    await exited(third);
    expect(inNs('ip', '-4', 'rule', 'show')).toBe(CLEAN_RULES);
    expect(inNs('ip', '-o', 'link', 'show', 'type', 'tun')).toBe('');
  });
});
