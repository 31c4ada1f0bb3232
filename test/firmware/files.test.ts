// The OpenWrt-side files and the packaging: the procd init script, the
// hotplug script and vpnmasq-respawn (run under dash and busybox sh against
// stand-ins for procd, uci, logger and vpnmasq), shellcheck on every shell
// script, the OpenWrt package Makefile (run against a stand-in SDK), the
// .ipk from firmware/build-ipk.sh (unpacked and run), and the Dockerfile
// (linted; its build commands run in a copy of what it copies).
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { spawn, spawnSync, type SpawnSyncReturns } from 'node:child_process';
import {
  chmodSync, cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync,
  symlinkSync, writeFileSync, lstatSync, openSync, readSync, closeSync,
} from 'node:fs';
import { homedir, tmpdir } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { inCI, skipUnless } from '../helpers/prereq.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const FILES = join(ROOT, 'firmware/files');
const INIT = join(FILES, 'etc/init.d/vpnmasq');
const HOTPLUG = join(FILES, 'etc/hotplug.d/iface/30-vpnmasq');
const RESPAWN = join(FILES, 'usr/sbin/vpnmasq-respawn');
const PKG_DIR = join(ROOT, 'firmware/openwrt/vpnmasq');
const MAKEFILE = join(PKG_DIR, 'Makefile');
const BUILD_IPK = join(ROOT, 'firmware/build-ipk.sh');
const LIB_SH = join(ROOT, 'firmware/lib.sh');
const WRAPPER = join(PKG_DIR, 'files/vpnmasq.sh');
const DOCKERFILE = join(ROOT, 'Dockerfile');
const VERSION: string = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')).version;

const SHELL_SCRIPTS = [INIT, HOTPLUG, RESPAWN, BUILD_IPK, LIB_SH, WRAPPER];

/** The shells the scripts must work in: Debian's /bin/sh (dash) and busybox ash (OpenWrt, the image). */
const SHELLS: [string, string[]][] = [['sh', ['sh']], ['busybox sh', ['busybox', 'sh']]];

const tmpDirs: string[] = [];
function tmp(prefix: string): string {
  const d = mkdtempSync(join(tmpdir(), `vpnmasq-fw-${prefix}-`));
  tmpDirs.push(d);
  return d;
}
afterAll(() => { for (const d of tmpDirs) rmSync(d, { recursive: true, force: true }); });

function writeExec(path: string, body: string): string {
  mkdirSync(dirname(path), { recursive: true });
  writeFileSync(path, body.startsWith('#!') ? body : `#!/bin/sh\n${body}`);
  chmodSync(path, 0o755);
  return path;
}

function run(cmd: string, args: string[], opts: { cwd?: string; env?: NodeJS.ProcessEnv; timeout?: number } = {}): SpawnSyncReturns<string> {
  return spawnSync(cmd, args, { encoding: 'utf8', timeout: opts.timeout ?? 120_000, cwd: opts.cwd, env: opts.env ?? cleanEnv(), maxBuffer: 64 << 20 });
}

/** The environment without what `npm test` adds (npm_*: its config, package, lifecycle). */
function cleanEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!/^npm_/i.test(k) && k !== 'INIT_CWD') env[k] = v;
  return { ...env, ...extra };
}

function ok(r: Pick<SpawnSyncReturns<string>, 'status' | 'signal' | 'stdout' | 'stderr'>, what: string): string {
  if (r.status !== 0) throw new Error(`${what}: exit ${r.status} ${r.signal ?? ''}\n${r.stdout}\n${r.stderr}`);
  return r.stdout;
}

type Result = { status: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string };

/**
 * run() without blocking the worker: for the long commands (builds), so
 * vitest's worker keeps answering its RPC.
 */
function runAsync(cmd: string, args: string[], opts: { cwd?: string; env?: NodeJS.ProcessEnv; timeout?: number } = {}): Promise<Result> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { cwd: opts.cwd, env: opts.env ?? cleanEnv(), stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => { stdout += d; });
    child.stderr.on('data', (d) => { stderr += d; });
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeout ?? 300_000);
    child.on('error', reject);
    child.on('close', (status, signal) => { clearTimeout(timer); resolve({ status, signal, stdout, stderr }); });
  });
}

async function okAsync(p: Promise<Result>, what: string): Promise<string> {
  return ok(await p, what);
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

async function until(cond: () => boolean, ms: number, what: string): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

function alive(pid: number): boolean {
  try { process.kill(pid, 0); return true; } catch { return false; }
}

/** Every file below dir, as sorted relative paths (directories end in /). */
function tree(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string): void => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = join(d, e.name);
      if (e.isDirectory()) { out.push(relative(dir, p) + '/'); walk(p); } else out.push(relative(dir, p));
    }
  };
  walk(dir);
  return out.sort();
}

// ---------------------------------------------------------------------------
describe.skipIf(skipUnless({ tools: ['shellcheck', 'busybox'] }))('shell scripts: syntax and shellcheck', () => {
  it.each(SHELL_SCRIPTS.map((f) => [relative(ROOT, f), f]))('%s', (_name, file) => {
    ok(run('sh', ['-n', file]), `sh -n ${file}`);
    ok(run('busybox', ['sh', '-n', file]), `busybox sh -n ${file}`);
    // -x: build-ipk.sh sources firmware/lib.sh (named relative to the repo)
    ok(run('shellcheck', ['-x', '-s', 'sh', file], { cwd: ROOT }), `shellcheck ${file}`);
  });

  it('executables are executable, the sourced hotplug script need not be', () => {
    for (const f of [INIT, RESPAWN, BUILD_IPK, WRAPPER]) expect(statSync(f).mode & 0o111, f).toBe(0o111);
    expect(readFileSync(INIT, 'utf8').split('\n')[0]).toBe('#!/bin/sh /etc/rc.common');
    expect(readFileSync(HOTPLUG, 'utf8').split('\n')[0]).toBe('#!/bin/sh');
  });
});

// ---------------------------------------------------------------------------
// /etc/init.d/vpnmasq against stand-ins for rc.common/procd.sh.

const INIT_HARNESS = `
# stand-ins for what /etc/rc.common and /lib/functions/procd.sh define
procd_open_instance() { echo "procd_open_instance"; }
procd_set_param() { echo "procd_set_param $*"; }
procd_close_instance() { echo "procd_close_instance"; }
procd_add_reload_trigger() { echo "procd_add_reload_trigger $*"; }
procd_add_interface_trigger() { echo "procd_add_interface_trigger $*"; }
procd_add_validation() { echo "procd_add_validation $*"; "$@"; }
uci_validate_section() { echo "uci_validate_section $*"; }
config_load() { :; }
# config_get VAR SECTION OPTION DEFAULT, from UCI_<section>_<option>
config_get() { eval "_v=\\\${UCI_$2_$3:-}"; [ -n "$_v" ] || _v=$4; eval "$1=\\$_v"; }
config_get_bool() { config_get "$@"; eval "_v=\\$$1"; case $_v in 1|yes|on|true|enabled) eval "$1=1" ;; *) eval "$1=0" ;; esac; }
logger() { echo "logger $*"; }
start() { echo "rc.common start"; }
. "$INIT_SCRIPT"
PROG=$FAKE_VPNMASQ
"$@"
echo "rc=$?"
`;

const FAKE_VPNMASQ_INIT = `
echo "vpnmasq $*" >> "$FAKE_LOG"
case $1 in
check-config)
  if [ "$FAKE_CONFIG" = bad ] || [ "$FAKE_CONFIG" = bad2 ]; then
    echo "vpnmasq: /etc/config/vpnmasq:7: option dest_ip: '192.168.1.300' is not an IPv4 address" >&2
    [ "$FAKE_CONFIG" = bad2 ] && echo "vpnmasq: /etc/config/vpnmasq:9: option src_dport: 0 is out of range" >&2
    exit 1
  fi
  echo "/etc/config/vpnmasq: OK (0 redirects, 0 rules)" ;;
status) [ "$FAKE_RUNNING" = 1 ] || { echo "vpnmasq: connect ENOENT /var/run/vpnmasq.sock" >&2; exit 1; } ;;
reload)
  if [ "$FAKE_CONFIG" = bad ]; then echo "vpnmasq: reload: /etc/config/vpnmasq:7: bad (refused)" >&2; exit 1; fi
  echo "vpnmasq: configuration reloaded" ;;
wan-update) echo "vpnmasq: WAN address 203.0.113.5" ;;
esac
exit 0
`;

describe.skipIf(skipUnless({ tools: ['busybox'] }))('/etc/init.d/vpnmasq (procd)', () => {
  let dir: string;
  let harness: string;
  let fake: string;
  beforeAll(() => {
    dir = tmp('init');
    harness = join(dir, 'harness.sh');
    writeFileSync(harness, INIT_HARNESS);
    fake = writeExec(join(dir, 'vpnmasq'), FAKE_VPNMASQ_INIT);
  });

  function call(shell: string[], fn: string, env: Record<string, string> = {}): { out: string[]; calls: string[] } {
    const log = join(dir, `calls-${Math.random().toString(36).slice(2)}`);
    writeFileSync(log, '');
    const r = run(shell[0], [...shell.slice(1), harness, fn], {
      // (switched on unless a test says otherwise: the init script reads vpnmasq.main.enabled)
      env: { PATH: process.env.PATH, INIT_SCRIPT: INIT, FAKE_VPNMASQ: fake, FAKE_LOG: log, UCI_main_enabled: '1', ...env },
    });
    expect(r.stderr.replace(/^vpnmasq: .*\n/gm, ''), `${fn} stderr`).toBe('');
    return { out: r.stdout.trim().split('\n'), calls: readFileSync(log, 'utf8').trim().split('\n').filter(Boolean) };
  }

  it('is a procd script for /usr/bin/vpnmasq and /etc/config/vpnmasq', () => {
    const text = readFileSync(INIT, 'utf8');
    expect(text).toMatch(/^USE_PROCD=1$/m);
    expect(text).toMatch(/^START=\d\d$/m);
    expect(text).toMatch(/^PROG=\/usr\/bin\/vpnmasq$/m);
    expect(text).toMatch(/^CONFIG=\/etc\/config\/vpnmasq$/m);
  });

  describe.each(SHELLS)('under %s', (_name, shell) => {
    it('start_service checks the config, then declares one respawning instance with its output logged', () => {
      const { out, calls } = call(shell, 'start_service', { FAKE_CONFIG: 'good' });
      expect(calls).toEqual(['vpnmasq check-config --config /etc/config/vpnmasq']);
      expect(out).toEqual([
        'procd_open_instance',
        `procd_set_param command ${fake} run --config /etc/config/vpnmasq`,
        'procd_set_param respawn',
        'procd_set_param reload_signal HUP',
        'procd_set_param stdout 1',
        'procd_set_param stderr 1',
        'procd_close_instance',
        'rc=0',
      ]);
    });

    it('respawn_* variables override the respawn parameters', () => {
      const { out } = call(shell, 'start_service', { FAKE_CONFIG: 'good', respawn_threshold: '600', respawn_timeout: '2', respawn_retry: '9' });
      expect(out).toContain('procd_set_param respawn 600 2 9');
    });

    it('a broken config is logged with its line and nothing is started', () => {
      const { out } = call(shell, 'start_service', { FAKE_CONFIG: 'bad', FAKE_RUNNING: '0' });
      expect(out).toEqual([
        "logger -t vpnmasq -p daemon.err not started: /etc/config/vpnmasq:7: option dest_ip: '192.168.1.300' is not an IPv4 address",
        'rc=1',
      ]);
    });

    it('a broken config leaves an already running vpnmasq running (same instance declared)', () => {
      const { out } = call(shell, 'start_service', { FAKE_CONFIG: 'bad', FAKE_RUNNING: '1' });
      expect(out[0]).toMatch(/^logger -t vpnmasq -p daemon\.err \/etc\/config\/vpnmasq:7: .*the running vpnmasq keeps its configuration/);
      expect(out).toContain(`procd_set_param command ${fake} run --config /etc/config/vpnmasq`);
      expect(out.at(-1)).toBe('rc=1');
    });

    it('service_triggers: the config reload trigger and the validation of the main section; no interface trigger (hotplug does WAN events)', () => {
      const { out } = call(shell, 'service_triggers');
      expect(out[0]).toBe('procd_add_reload_trigger vpnmasq');
      expect(out[1]).toBe('procd_add_validation vpnmasq_validate');
      expect(out[2]).toMatch(/^uci_validate_section vpnmasq vpnmasq main enabled:bool:0 lan_device:string wan_device:string /);
      expect(out[2]).toContain('max_flows:range(1024,4194304):65536');
      expect(out.at(-1)).toBe('rc=0');
      expect(out.join('\n')).not.toContain('procd_add_interface_trigger');
    });

    it("disabled (option enabled '0' or left out): no instance, one notice, nothing run", () => {
      for (const env of [{ UCI_main_enabled: '0' }, { UCI_main_enabled: '' }]) {
        const { out, calls } = call(shell, 'start_service', { FAKE_CONFIG: 'good', ...env });
        expect(calls).toEqual([]);
        expect(out).toEqual(['logger -t vpnmasq -p daemon.notice disabled (uci set vpnmasq.main.enabled=1 to run)', 'rc=0']);
      }
    });

    it('reload is procd\'s: SIGHUP to the instance (reload_signal), no reload_service starting Node again', () => {
      expect(readFileSync(INIT, 'utf8')).not.toMatch(/^reload_service\(\)/m);
      expect(call(shell, 'start_service', { FAKE_CONFIG: 'good' }).out).toContain('procd_set_param reload_signal HUP');
    });

    it('every line of a broken config is logged, the first also on stderr', () => {
      const { out } = call(shell, 'start_service', { FAKE_CONFIG: 'bad2', FAKE_RUNNING: '0' });
      expect(out).toEqual([
        "logger -t vpnmasq -p daemon.err not started: /etc/config/vpnmasq:7: option dest_ip: '192.168.1.300' is not an IPv4 address",
        'logger -t vpnmasq -p daemon.err /etc/config/vpnmasq:9: option src_dport: 0 is out of range',
        'rc=1',
      ]);
    });
  });
});

// ---------------------------------------------------------------------------
// /etc/hotplug.d/iface/30-vpnmasq, sourced in a subshell as hotplug-call does.

describe.skipIf(skipUnless({ tools: ['busybox'] }))('/etc/hotplug.d/iface/30-vpnmasq', () => {
  let withUci: string;
  let noUci: string;
  beforeAll(() => {
    const dir = tmp('hotplug');
    withUci = join(dir, 'with-uci');
    noUci = join(dir, 'no-uci');
    for (const d of [withUci, noUci]) {
      writeExec(join(d, 'logger'), 'echo "logger $*" >> "$FAKE_LOG"\n');
      writeExec(join(d, 'vpnmasq'), 'echo "vpnmasq $*" >> "$FAKE_LOG"\n' +
        '[ "${FAKE_DOWN:-0}" = 1 ] && { echo "vpnmasq: connect ENOENT /var/run/vpnmasq.sock" >&2; exit 1; }\n' +
        'echo "vpnmasq: WAN address 203.0.113.5"\n');
    }
    writeExec(join(withUci, 'uci'), `
[ "$1" = -q ] && shift
[ "$1" = get ] || exit 1
case $2 in
vpnmasq.main.enabled) [ "\${UCI_ENABLED-1}" != '' ] || exit 1; echo "\${UCI_ENABLED-1}" ;;
vpnmasq.main.wan_interface) [ -n "$UCI_WAN_IF" ] || exit 1; echo "$UCI_WAN_IF" ;;
vpnmasq.main.wan_device) [ -n "$UCI_WAN_DEV" ] || exit 1; echo "$UCI_WAN_DEV" ;;
*) exit 1 ;;
esac
`);
  });

  function event(shell: string[], env: Record<string, string>, uci = true): { log: string[]; status: number | null } {
    const log = join(dirname(withUci), `log-${Math.random().toString(36).slice(2)}`);
    writeFileSync(log, '');
    // hotplug-call: for script in /etc/hotplug.d/iface/*; do ( . $script ); done
    const r = run(shell[0], [...shell.slice(1), '-c', '( . "$1" ); echo "after $?"', 'hotplug-call', HOTPLUG], {
      env: { PATH: `${uci ? withUci : noUci}:/usr/bin:/bin`, FAKE_LOG: log, ...env },
    });
    expect(r.stderr).toBe('');
    expect(r.stdout).toBe('after 0\n');
    // The script returns at once and tells vpnmasq in the background: a told
    // event ends with its logger line; an ignored one writes nothing.
    const lines = () => readFileSync(log, 'utf8').trim().split('\n').filter(Boolean);
    const end = Date.now() + 15_000;
    let quiet = 0;
    for (;;) {
      const l = lines();
      if (l.length > 0 && l.at(-1)!.startsWith('logger ')) break;
      if (l.length === 0 && ++quiet > 10) break;
      if (Date.now() > end) throw new Error(`hotplug: no logger line after ${l.join(' | ')}`);
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 20);
    }
    return { log: lines(), status: r.status };
  }

  describe.each(SHELLS)('under %s', (_name, shell) => {
    const told = (env: Record<string, string>, uci = true): boolean =>
      event(shell, env, uci).log.includes('vpnmasq wan-update');

    it('an ifup of the WAN tells vpnmasq, and logs the new address', () => {
      const { log } = event(shell, { ACTION: 'ifup', INTERFACE: 'wan', DEVICE: 'eth1' });
      expect(log).toEqual([
        'vpnmasq wan-update',
        'logger -t vpnmasq -p daemon.info wan ifup: WAN address 203.0.113.5',
      ]);
    });

    it('an ifupdate tells vpnmasq only when the addresses changed', () => {
      expect(told({ ACTION: 'ifupdate', INTERFACE: 'wan' })).toBe(false);
      expect(told({ ACTION: 'ifupdate', INTERFACE: 'wan', IFUPDATE_ADDRESSES: '0', IFUPDATE_ROUTES: '1' })).toBe(false);
      expect(told({ ACTION: 'ifupdate', INTERFACE: 'wan', IFUPDATE_ADDRESSES: '1' })).toBe(true);
    });

    it('other actions and other interfaces are ignored', () => {
      expect(told({ ACTION: 'ifdown', INTERFACE: 'wan' })).toBe(false);
      expect(told({ ACTION: 'ifup-failed', INTERFACE: 'wan' })).toBe(false);
      expect(told({ ACTION: 'ifup', INTERFACE: 'lan', DEVICE: 'br-lan' })).toBe(false);
    });

    it('the WAN interface comes from uci (vpnmasq.main.wan_interface), or its device from wan_device', () => {
      expect(told({ ACTION: 'ifup', INTERFACE: 'wan6', UCI_WAN_IF: 'wan6' })).toBe(true);
      expect(told({ ACTION: 'ifup', INTERFACE: 'wan', UCI_WAN_IF: 'wan6' })).toBe(false);
      expect(told({ ACTION: 'ifup', INTERFACE: 'wanb', DEVICE: 'pppoe-wanb', UCI_WAN_DEV: 'pppoe-wanb' })).toBe(true);
      expect(told({ ACTION: 'ifup', INTERFACE: 'wanb', DEVICE: 'eth3', UCI_WAN_DEV: 'pppoe-wanb' })).toBe(false);
    });

    it('without uci (the image) the WAN interface is "wan"', () => {
      expect(told({ ACTION: 'ifup', INTERFACE: 'wan' }, false)).toBe(true);
      expect(told({ ACTION: 'ifup', INTERFACE: 'lan' }, false)).toBe(false);
    });

    it("does nothing while vpnmasq.main.enabled is not '1'", () => {
      expect(told({ ACTION: 'ifup', INTERFACE: 'wan', UCI_ENABLED: '0' })).toBe(false);
      expect(told({ ACTION: 'ifup', INTERFACE: 'wan', UCI_ENABLED: '' })).toBe(false);
      expect(told({ ACTION: 'ifup', INTERFACE: 'wan', UCI_ENABLED: 'yes' })).toBe(true);
    });

    it('returns before vpnmasq answers (the work is in the background)', async () => {
      const dir = tmp('hotplug-slow');
      const gate = join(dir, 'gate');
      const log = join(dir, 'log');
      writeFileSync(log, '');
      // a vpnmasq that answers only once the test opens the gate
      writeExec(join(dir, 'vpnmasq'), `echo "vpnmasq $*" >> "$FAKE_LOG"\nwhile [ ! -e "${gate}" ]; do sleep 0.05; done\necho "vpnmasq: WAN address 203.0.113.9"\n`);
      writeExec(join(dir, 'logger'), 'echo "logger $*" >> "$FAKE_LOG"\n');
      const r = run(shell[0], [...shell.slice(1), '-c', '( . "$1" ); echo "after $?"', 'hotplug-call', HOTPLUG], {
        env: { PATH: `${dir}:/usr/bin:/bin`, FAKE_LOG: log, ACTION: 'ifup', INTERFACE: 'wan' },
      });
      expect(r.stdout).toBe('after 0\n');
      await until(() => readFileSync(log, 'utf8').includes('vpnmasq wan-update'), 10_000, 'the background wan-update');
      expect(readFileSync(log, 'utf8')).not.toContain('logger');
      writeFileSync(gate, '');
      await until(() => readFileSync(log, 'utf8').includes('logger'), 10_000, 'the logger line');
      expect(readFileSync(log, 'utf8').trim().split('\n')).toEqual(['vpnmasq wan-update', 'logger -t vpnmasq -p daemon.info wan ifup: WAN address 203.0.113.9']);
    });

    it('vpnmasq not running: logged, and the hotplug run still succeeds', () => {
      const { log } = event(shell, { ACTION: 'ifup', INTERFACE: 'wan', FAKE_DOWN: '1' });
      expect(log).toEqual([
        'vpnmasq wan-update',
        'logger -t vpnmasq -p daemon.notice wan ifup: wan-update failed: connect ENOENT /var/run/vpnmasq.sock',
      ]);
    });
  });
});

// ---------------------------------------------------------------------------
// /usr/sbin/vpnmasq-respawn with a fake vpnmasq (VPNMASQ_RESPAWN_SCALE=0.01:
// 1 s of back-off is 10 ms, the 60 s "long run" is 0.6 s).

const FAKE_VPNMASQ_RESPAWN = `
case $1 in
check-config)
  [ "\${FAKE_CONFIG:-bad}" = good ] && { echo "$3: OK"; exit 0; }
  echo "vpnmasq: $3:7: option dest_ip: '192.168.1.300' is not an IPv4 address" >&2; exit 1 ;;
run)
  n=$(( $(cat "$FAKE_DIR/count" 2>/dev/null || echo 0) + 1 )); echo $n > "$FAKE_DIR/count"
  read -r up _ < /proc/uptime
  echo "run $n $up $*" >> "$FAKE_DIR/calls"
  echo $$ > "$FAKE_DIR/pid"
  if [ "$FAKE_MODE" = serve ]; then
    trap 'echo "got TERM" >> "$FAKE_DIR/calls"; exit 0' TERM
    while :; do sleep 0.05; done
  fi
  # run number FAKE_LONG_RUN lasts longer than the (scaled) 60 s
  [ "$n" = "\${FAKE_LONG_RUN:-0}" ] && sleep 0.8
  exit 3 ;;
esac
exit 2
`;

describe.skipIf(skipUnless({ tools: ['busybox', 'awk'] }))('vpnmasq-respawn', () => {
  function start(shell: string[], env: Record<string, string>, scale = '0.01') {
    const dir = tmp('respawn');
    writeExec(join(dir, 'bin/vpnmasq'), FAKE_VPNMASQ_RESPAWN);
    writeExec(join(dir, 'bin/logger'), 'echo "logger $*" >> "$FAKE_DIR/syslog"\n');
    const child = spawn(shell[0], [...shell.slice(1), RESPAWN, '--config', join(dir, 'vpnmasq.conf')], {
      env: { PATH: `${join(dir, 'bin')}:${process.env.PATH}`, FAKE_DIR: dir, VPNMASQ_RESPAWN_SCALE: scale, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const p = { child, dir, stderr: '', exit: null as null | { code: number | null; signal: string | null } };
    child.stderr.on('data', (d) => { p.stderr += d; });
    child.on('exit', (code, signal) => { p.exit = { code, signal }; });
    const runs = (): string[][] => {
      try { return readFileSync(join(dir, 'calls'), 'utf8').trim().split('\n').filter((l) => l.startsWith('run ')).map((l) => l.split(' ')); } catch { return []; }
    };
    const stop = async (): Promise<{ code: number | null; signal: string | null }> => {
      if (!p.exit) child.kill('SIGTERM');
      await until(() => p.exit !== null, 5000, 'vpnmasq-respawn to exit');
      return p.exit!;
    };
    return { p, runs, stop };
  }

  describe.each(SHELLS)('under %s', (_name, shell) => {
    it('restarts a failing vpnmasq with growing delays (1, 2, 4 ... 30 s), reset after a long run, and logs each exit', async () => {
      const { p, runs, stop } = start(shell, { FAKE_LONG_RUN: '4' });
      try {
        await until(() => runs().length >= 11, 20_000, '11 starts');
      } finally {
        expect(await stop()).toEqual({ code: 0, signal: null });
      }
      const delays = [...p.stderr.matchAll(/restarting in (\d+) s/g)].map((m) => Number(m[1]));
      // runs 1-3 fail at once; run 4 lasts 0.8 s (> 0.6 s): back to 1 s; then 1 2 4 ... capped at 30
      expect(delays.slice(0, 10)).toEqual([1, 2, 4, 1, 2, 4, 8, 16, 30, 30]);
      expect(p.stderr).toMatch(/vpnmasq-respawn: vpnmasq exited with code 3 after 0\.\d\d s; restarting in 1 s/);
      // the reason of a quick failure, from check-config
      expect(p.stderr).toContain(`vpnmasq-respawn: vpnmasq: ${join(p.dir, 'vpnmasq.conf')}:7: option dest_ip: '192.168.1.300' is not an IPv4 address`);
      const syslog = readFileSync(join(p.dir, 'syslog'), 'utf8');
      expect(syslog).toMatch(/^logger -t vpnmasq-respawn -p daemon\.err -- vpnmasq exited with code 3 after .* s; restarting in 2 s$/m);
      expect(syslog).toMatch(/^logger -t vpnmasq-respawn -p daemon\.err -- vpnmasq: .*:7: option dest_ip/m);
      // every start is `vpnmasq run --config FILE`
      for (const r of runs()) expect(r.slice(3)).toEqual(['run', '--config', join(p.dir, 'vpnmasq.conf')]);
      // the gaps between starts are at least the scaled delays (10 ms granularity of /proc/uptime)
      const t = runs().map((r) => Number(r[2]));
      const want = [1, 2, 4, 80 + 1, 2, 4, 8, 16, 30, 30].map((d) => d * 0.01 - 0.011);
      for (let i = 0; i < want.length; i++) expect(t[i + 1] - t[i], `gap after run ${i + 1}`).toBeGreaterThanOrEqual(want[i]);
    }, 40_000);

    it('SIGTERM is passed on to vpnmasq, and both exit', async () => {
      const { p, runs, stop } = start(shell, { FAKE_MODE: 'serve' });
      await until(() => runs().length === 1 && existsSync(join(p.dir, 'pid')), 5000, 'vpnmasq to start');
      const pid = Number(readFileSync(join(p.dir, 'pid'), 'utf8'));
      expect(alive(pid)).toBe(true);
      expect(await stop()).toEqual({ code: 0, signal: null });
      expect(readFileSync(join(p.dir, 'calls'), 'utf8')).toContain('got TERM');
      await until(() => !alive(pid), 2000, 'the fake vpnmasq to be gone');
      expect(runs()).toHaveLength(1);
      expect(p.stderr).toContain('vpnmasq-respawn: stopped; vpnmasq exited with code 0');
    }, 20_000);

    it('a killed vpnmasq comes back', async () => {
      const { p, runs, stop } = start(shell, { FAKE_MODE: 'serve', FAKE_CONFIG: 'good' });
      try {
        await until(() => existsSync(join(p.dir, 'pid')), 5000, 'vpnmasq to start');
        process.kill(Number(readFileSync(join(p.dir, 'pid'), 'utf8')), 'SIGKILL');
        await until(() => runs().length === 2, 5000, 'the second start');
        expect(p.stderr).toMatch(/vpnmasq was killed by signal 9 after \d+\.\d\d s; restarting in 1 s/);
      } finally {
        expect(await stop()).toEqual({ code: 0, signal: null });
      }
    }, 20_000);

    it('SIGTERM during the back-off ends it at once', async () => {
      const { p, runs, stop } = start(shell, {}, '1'); // real delays: 1 s after the first failure
      await until(() => runs().length === 1 && /restarting in 1 s/.test(p.stderr), 5000, 'the first failure');
      const t0 = Date.now();
      expect(await stop()).toEqual({ code: 0, signal: null });
      expect(Date.now() - t0).toBeLessThan(900);
      expect(runs()).toHaveLength(1);
      expect(p.stderr).toContain('stopped while waiting to restart vpnmasq');
    }, 20_000);
  });

  it('refuses unknown arguments', () => {
    const r = run('sh', [RESPAWN, '--bogus']);
    expect(r.status).toBe(2);
    expect(r.stderr).toContain("unknown argument '--bogus'");
  });
});

// ---------------------------------------------------------------------------
// The .ipk.

function readIpk(ipk: string, into: string) {
  mkdirSync(into, { recursive: true });
  const outer = ok(run('tar', ['-tzvf', ipk]), 'tar -t outer');
  ok(run('tar', ['-xzf', ipk, '-C', into]), 'tar -x outer');
  const ctrl = join(into, 'CONTROL');
  const data = join(into, 'data');
  mkdirSync(ctrl);
  mkdirSync(data);
  ok(run('tar', ['-xzf', join(into, 'control.tar.gz'), '-C', ctrl]), 'tar -x control');
  ok(run('tar', ['-xzf', join(into, 'data.tar.gz'), '-C', data]), 'tar -x data');
  const fields = new Map<string, string>();
  for (const m of readFileSync(join(ctrl, 'control'), 'utf8').matchAll(/^([A-Za-z-]+): ?(.*)$/gm)) fields.set(m[1], m[2]);
  return {
    outer: outer.trim().split('\n'),
    outerNames: outer.trim().split('\n').map((l) => l.split(/\s+/).at(-1)),
    controlList: ok(run('tar', ['-tzvf', join(into, 'control.tar.gz')]), 'tar -t control').trim().split('\n'),
    dataList: ok(run('tar', ['-tzvf', join(into, 'data.tar.gz')]), 'tar -t data').trim().split('\n'),
    names: [join(into, 'control.tar.gz'), join(into, 'data.tar.gz')]
      .flatMap((f) => ok(run('tar', ['-tzf', f]), 'tar -t').trim().split('\n')),
    ctrl, data, fields,
  };
}

/** ELF e_machine of a file: 62 x86-64, 183 AArch64. */
function elfMachine(file: string): number {
  const fd = openSync(file, 'r');
  const b = Buffer.alloc(20);
  readSync(fd, b, 0, 20, 0);
  closeSync(fd);
  expect(b.subarray(0, 4).toString('latin1')).toBe('\x7fELF');
  return b.readUInt16LE(18);
}

const DATA_FILES = [
  'etc/config/vpnmasq',
  'etc/hotplug.d/iface/30-vpnmasq',
  'etc/init.d/vpnmasq',
  'usr/bin/vpnmasq',
  'usr/sbin/vpnmasq-respawn',
  'usr/lib/vpnmasq/package.json',
  'usr/lib/vpnmasq/dist/cli/main.js',
  'usr/lib/vpnmasq/dist/supervisor.js',
  'usr/lib/vpnmasq/dist/engine.wasm',
  'usr/lib/vpnmasq/build/Release/vpnmasq_tun.node',
  'usr/lib/vpnmasq/node_modules/pino/package.json',
  'usr/lib/vpnmasq/node_modules/node-gyp-build/package.json',
  'usr/lib/vpnmasq/node_modules/@assemblyscript/loader/package.json',
];

describe.skipIf(skipUnless({ tools: ['tar', 'gzip', 'g++'] }))('firmware/build-ipk.sh', () => {
  let out: string;
  let ipk: string;
  let x: ReturnType<typeof readIpk>;
  beforeAll(async () => {
    out = tmp('ipk');
    // npm test has just built dist/
    const r = await okAsync(runAsync('sh', [BUILD_IPK, '--no-build', '--out', out]), 'build-ipk.sh');
    ipk = r.trim().split('\n').at(-1)!;
    x = readIpk(ipk, join(out, 'x86_64'));
  }, 200_000);

  it('is named NAME_VERSION-RELEASE_ARCH.ipk', () => {
    expect(ipk).toBe(join(out, `vpnmasq_${VERSION}-1_x86_64.ipk`));
  });

  it("is opkg's format: a tar.gz of ./debian-binary, ./data.tar.gz, ./control.tar.gz owned by root", () => {
    expect(x.outerNames).toEqual(['./debian-binary', './data.tar.gz', './control.tar.gz']);
    for (const l of [...x.outer, ...x.controlList, ...x.dataList]) expect(l.split(/\s+/)[1], l).toBe('0/0');
    expect(readFileSync(join(out, 'x86_64', 'debian-binary'), 'utf8')).toBe('2.0\n');
    // gzip magic on all three archives
    for (const f of [ipk, join(out, 'x86_64', 'data.tar.gz'), join(out, 'x86_64', 'control.tar.gz')]) {
      expect(readFileSync(f).subarray(0, 2)).toEqual(Buffer.from([0x1f, 0x8b]));
    }
    // ./-relative names inside, as ipkg-build writes them
    for (const n of x.names) expect(n.startsWith('./'), n).toBe(true);
  });

  it('control: the fields opkg reads, conffiles, postinst/prerm', () => {
    const f = x.fields;
    expect(f.get('Package')).toBe('vpnmasq');
    expect(f.get('Version')).toBe(`${VERSION}-1`);
    expect(f.get('Architecture')).toBe('x86_64');
    expect(f.get('Depends')!.split(/,\s*/)).toEqual(expect.arrayContaining(['node', 'kmod-tun', 'ip-full']));
    expect(f.get('License')).toBe('MIT');
    expect(f.get('Section')).toBe('net');
    expect(Number(f.get('Installed-Size'))).toBeGreaterThan(100_000);
    expect(f.get('Description')).toBeTruthy();
    expect(readFileSync(join(x.ctrl, 'conffiles'), 'utf8')).toBe('/etc/config/vpnmasq\n');
    const postinst = readFileSync(join(x.ctrl, 'postinst'), 'utf8');
    const prerm = readFileSync(join(x.ctrl, 'prerm'), 'utf8');
    expect(postinst).toMatch(/-z "\$\{IPKG_INSTROOT:-\}"/);
    expect(postinst).toContain('/etc/init.d/vpnmasq enable');
    expect(prerm).toMatch(/-z "\$\{IPKG_INSTROOT:-\}"/);
    expect(prerm).toContain('/etc/init.d/vpnmasq stop');
    for (const s of ['postinst', 'prerm']) {
      expect(statSync(join(x.ctrl, s)).mode & 0o111).toBe(0o111);
      ok(run('sh', ['-n', join(x.ctrl, s)]), `sh -n ${s}`);
    }
  });

  it('postinst/prerm do nothing in an image build (IPKG_INSTROOT set)', () => {
    const dir = tmp('instroot');
    // the build machine's own /etc/init.d is never touched: the trace shows no call to it
    for (const s of ['postinst', 'prerm']) {
      const r = run('sh', ['-x', join(x.ctrl, s)], { env: { PATH: process.env.PATH, IPKG_INSTROOT: dir } });
      expect(r.status).toBe(0);
      expect(r.stderr).not.toContain('/etc/init.d/vpnmasq enable');
      expect(r.stderr).not.toContain('/etc/init.d/vpnmasq stop');
    }
  });

  it('data: the program, the addon, production node_modules only, the OpenWrt files', () => {
    const files = tree(x.data);
    for (const f of DATA_FILES) expect(files, f).toContain(f);
    for (const dev of ['typescript', 'vitest', 'assemblyscript', '@types', 'fast-check', '.bin']) {
      expect(files, dev).not.toContain(`usr/lib/vpnmasq/node_modules/${dev}/`);
    }
    expect(files.filter((f) => /^usr\/lib\/vpnmasq\/dist\/.*\.(map|wat)$/.test(f))).toEqual([]);
    const mode = (f: string) => statSync(join(x.data, f)).mode & 0o777;
    expect(mode('etc/init.d/vpnmasq')).toBe(0o755);
    expect(mode('usr/bin/vpnmasq')).toBe(0o755);
    expect(mode('usr/sbin/vpnmasq-respawn')).toBe(0o755);
    expect(mode('etc/config/vpnmasq')).toBe(0o600);
    expect(readFileSync(join(x.data, 'etc/config/vpnmasq'), 'utf8')).toBe(readFileSync(join(FILES, 'etc/config/vpnmasq'), 'utf8'));
    expect(readFileSync(join(x.data, 'usr/bin/vpnmasq'), 'utf8')).toContain('/usr/lib/vpnmasq/dist/cli/main.js');
    expect(elfMachine(join(x.data, 'usr/lib/vpnmasq/build/Release/vpnmasq_tun.node'))).toBe(62);
  });

  it('runs from the unpacked tree: check-config on its config, the addon loads', () => {
    const lib = join(x.data, 'usr/lib/vpnmasq');
    const r = run('node', [join(lib, 'dist/cli/main.js'), 'check-config', '--config', join(x.data, 'etc/config/vpnmasq')]);
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/etc\/config\/vpnmasq: OK/);
    const bad = join(out, 'bad.conf');
    writeFileSync(bad, "config vpnmasq 'main'\n\toption lan_device 'br-lan'\n\toption wan_device 'wan'\n\toption max_flows 'lots'\n");
    const rb = run('node', [join(lib, 'dist/cli/main.js'), 'check-config', '--config', bad]);
    expect(rb.status).toBe(1);
    expect(rb.stderr).toMatch(/bad\.conf:4: .*max_flows/);
    const load = run('node', ['--input-type=module', '-e',
      `const m = await import(${JSON.stringify(join(lib, 'dist/tun/tun.js'))}); console.log(typeof m.loadNative().openTun)`]);
    expect(load.stderr).toBe('');
    expect(load.stdout.trim()).toBe('function');
  });

  it('is reproducible: the same tree gives the same bytes', async () => {
    const again = tmp('ipk2');
    const r = await okAsync(runAsync('sh', [BUILD_IPK, '--no-build', '--out', again]), 'build-ipk.sh again');
    expect(readFileSync(r.trim().split('\n').at(-1)!)).toEqual(readFileSync(ipk));
  }, 200_000);

  describe.skipIf(skipUnless({ tools: ['aarch64-linux-gnu-g++'] }))('--arch aarch64', () => {
    it('has the aarch64 addon and the opkg arch aarch64_generic', async () => {
      const dir = tmp('ipk-a64');
      const r = await okAsync(runAsync('sh', [BUILD_IPK, '--no-build', '--arch', 'aarch64', '--out', dir]), 'build-ipk.sh --arch aarch64');
      const file = r.trim().split('\n').at(-1)!;
      expect(file).toBe(join(dir, `vpnmasq_${VERSION}-1_aarch64_generic.ipk`));
      const a = readIpk(file, join(dir, 'x'));
      expect(a.fields.get('Architecture')).toBe('aarch64_generic');
      expect(elfMachine(join(a.data, 'usr/lib/vpnmasq/build/Release/vpnmasq_tun.node'))).toBe(183);
      expect(existsSync(join(ROOT, 'firmware/out/addon-aarch64/vpnmasq_tun.node'))).toBe(true);
      // everything but the addon is the same as in the x86_64 package
      const strip = (t: string[]) => t.filter((f) => !f.endsWith('vpnmasq_tun.node'));
      expect(strip(tree(a.data))).toEqual(strip(tree(x.data)));
    }, 200_000);
  });

  it('refuses an unknown arch', () => {
    const r = run('sh', [BUILD_IPK, '--no-build', '--arch', 'mips']);
    expect(r.status).toBe(2);
    expect(r.stderr).toContain("unknown arch 'mips'");
  });
});

// ---------------------------------------------------------------------------
// The OpenWrt package Makefile.

function makeDefine(text: string, name: string): string {
  const m = text.match(new RegExp(`^define ${name.replace(/[/$()]/g, '\\$&')}\\n([\\s\\S]*?)^endef$`, 'm'));
  if (!m) throw new Error(`no define ${name}`);
  return m[1];
}

// Stand-ins for the SDK's rules.mk and package.mk: just enough of their
// variables and of BuildPackage (prepare, configure, compile, install into
// $(PKG_INSTALL_ROOT)) to run the package's own recipes with the host's
// node/npm and g++ as the "target" toolchain.
const STUB_RULES_MK = `
INCLUDE_DIR:=$(TOPDIR)/include
BUILD_DIR:=$(TOPDIR)/build_dir
STAGING_DIR:=$(TOPDIR)/staging_dir/target
STAGING_DIR_HOSTPKG:=$(TOPDIR)/staging_dir/hostpkg
DL_DIR:=$(TOPDIR)/dl
TARGET_CXX:=g++
TARGET_CPPFLAGS:=
TARGET_CXXFLAGS:=-O2
TARGET_LDFLAGS:=
INSTALL_DIR:=install -d -m0755
INSTALL_BIN:=install -m0755
INSTALL_DATA:=install -m0644
INSTALL_CONF:=install -m0600
CP:=cp -fpR
`;
const STUB_PACKAGE_MK = `
PKG_BUILD_DIR:=$(BUILD_DIR)/$(PKG_NAME)-$(PKG_VERSION)
PKG_INSTALL_ROOT:=$(TOPDIR)/ipkg/$(PKG_NAME)
define BuildPackage
.PHONY: all
all:
\trm -rf $(PKG_BUILD_DIR) $(PKG_INSTALL_ROOT)
\tmkdir -p $(PKG_BUILD_DIR) $(PKG_INSTALL_ROOT)
\t$$(call Build/Prepare)
\t$$(call Build/Configure)
\t$$(call Build/Compile)
\t$$(call Package/$(1)/install,$(PKG_INSTALL_ROOT))
endef
`;

describe('firmware/openwrt/vpnmasq/Makefile', () => {
  const text = readFileSync(MAKEFILE, 'utf8');

  it('is an openwrt/packages-style package for vpnmasq at the version of package.json', () => {
    expect(text).toMatch(/^include \$\(TOPDIR\)\/rules\.mk$/m);
    expect(text).toMatch(/^include \$\(INCLUDE_DIR\)\/package\.mk$/m);
    expect(text).toMatch(/^PKG_NAME:=vpnmasq$/m);
    expect(text).toMatch(new RegExp(`^PKG_VERSION:=${VERSION.replace(/\./g, '\\.')}$`, 'm'));
    expect(text).toMatch(/^PKG_RELEASE:=\d+$/m);
    expect(text).toMatch(/^PKG_LICENSE:=MIT$/m);
    expect(text).toMatch(/^\$\(eval \$\(call BuildPackage,vpnmasq\)\)$/m);
    const pkg = makeDefine(text, 'Package/vpnmasq');
    expect(pkg).toMatch(/^\s+SECTION:=net$/m);
    expect(pkg).toMatch(/^\s+CATEGORY:=Network$/m);
    expect(pkg).toMatch(/^\s+TITLE:=\S/m);
    const deps = pkg.match(/^\s+DEPENDS:=(.*)$/m)![1].split(/\s+/);
    expect(deps).toEqual(expect.arrayContaining(['+node', '+kmod-tun', '+ip-full']));
    expect(makeDefine(text, 'Package/vpnmasq/conffiles').trim()).toBe('/etc/config/vpnmasq');
  });

  it('recipe lines start with a tab', () => {
    for (const name of ['Build/Prepare', 'Build/Compile', 'Package/vpnmasq/install']) {
      for (const line of makeDefine(text, name).split('\n').filter((l) => l.trim())) expect(line, `${name}: ${line}`).toMatch(/^\t/);
    }
  });

  it('every path it copies or installs exists in the repo, its build output or the package directory', () => {
    const paths = new Set<string>();
    for (const name of ['Build/Prepare', 'Build/Compile', 'Package/vpnmasq/install']) {
      const body = makeDefine(text, name);
      for (const m of body.matchAll(/\$\((?:PKG_BUILD_DIR|VPNMASQ_SRC)\)\/([^\s)]+)/g)) paths.add(m[1]);
      for (const m of body.matchAll(/\s\.\/(files\/\S+)/g)) paths.add(`@pkg/${m[1]}`);
    }
    expect(paths.size).toBeGreaterThan(10);
    for (const p of paths) {
      // $(PKG_BUILD_DIR)/build/Release/... is what Build/Compile writes; the repo's own
      // node-gyp build puts the same file there
      const file = p.startsWith('@pkg/') ? join(PKG_DIR, p.slice(5)) : join(ROOT, p);
      expect(existsSync(file), p).toBe(true);
    }
  });

  describe.skipIf(skipUnless({ tools: ['make', 'g++'] }))('run against a stand-in SDK (host node and g++)', () => {
    function sdk(): string {
      const top = tmp('sdk');
      writeFileSync(join(top, 'rules.mk'), STUB_RULES_MK);
      mkdirSync(join(top, 'include'));
      writeFileSync(join(top, 'include/package.mk'), STUB_PACKAGE_MK);
      mkdirSync(join(top, 'staging_dir/hostpkg/bin'), { recursive: true });
      mkdirSync(join(top, 'staging_dir/hostpkg/include'), { recursive: true });
      mkdirSync(join(top, 'dl'));
      const which = (t: string) => ok(run('sh', ['-c', `command -v ${t}`]), t).trim();
      symlinkSync(which('node'), join(top, 'staging_dir/hostpkg/bin/node'));
      symlinkSync(which('npm'), join(top, 'staging_dir/hostpkg/bin/npm'));
      symlinkSync('/usr/include/node', join(top, 'staging_dir/hostpkg/include/node'));
      // npm's own cache (filled by `npm install` of the repo) stands in for dl/npm-cache
      symlinkSync(join(homedir(), '.npm'), join(top, 'dl/npm-cache'));
      return top;
    }

    async function make(top: string, extra: string[] = []): Promise<string> {
      await okAsync(runAsync('make', ['-C', PKG_DIR, `TOPDIR=${top}`, ...extra], {
        timeout: 400_000,
        env: cleanEnv({ npm_config_prefer_offline: 'true', MAKEFLAGS: '' }),
      }), 'make');
      return join(top, 'ipkg/vpnmasq');
    }

    let ipkData: string;
    beforeAll(async () => {
      const out = tmp('mk-ipk');
      const r = await okAsync(runAsync('sh', [BUILD_IPK, '--no-build', '--out', out]), 'build-ipk.sh');
      ipkData = readIpk(r.trim().split('\n').at(-1)!, join(out, 'x')).data;
    }, 200_000);

    function compareWithIpk(root: string): void {
      // the same files, with the same modes, as the .ipk from build-ipk.sh
      expect(tree(root)).toEqual(tree(ipkData));
      for (const f of tree(root).filter((p) => !p.endsWith('/') && !p.includes('node_modules/'))) {
        expect(lstatSync(join(root, f)).mode & 0o777, f).toBe(lstatSync(join(ipkData, f)).mode & 0o777);
      }
      const r = run('node', [join(root, 'usr/lib/vpnmasq/dist/cli/main.js'), 'check-config', '--config', join(root, 'etc/config/vpnmasq')]);
      expect(r.status, r.stderr).toBe(0);
    }

    it('default: npm install, npm run build, npm prune, the addon with the "target" compiler; installs what the .ipk holds', async () => {
      const top = sdk();
      compareWithIpk(await make(top));
      expect(elfMachine(join(top, 'ipkg/vpnmasq/usr/lib/vpnmasq/build/Release/vpnmasq_tun.node'))).toBe(62);
    }, 420_000);

    it('VPNMASQ_PREBUILT=1: the tree\'s dist/ and node_modules/, pruned', async () => {
      compareWithIpk(await make(sdk(), ['VPNMASQ_PREBUILT=1']));
    }, 300_000);
  });
});

// ---------------------------------------------------------------------------
// The Dockerfile.

type Instr = { kw: string; args: string; line: number };

function parseDockerfile(text: string): Instr[] {
  const out: Instr[] = [];
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    if (/^\s*(#|$)/.test(lines[i])) continue;
    const start = i;
    let s = lines[i];
    while (s.endsWith('\\')) {
      s = s.slice(0, -1);
      i++;
      while (i < lines.length && /^\s*#/.test(lines[i])) i++; // comments inside a continuation
      s += ' ' + (lines[i] ?? '').trim();
    }
    const m = s.trim().match(/^(\S+)\s+([\s\S]*)$/)!;
    out.push({ kw: m[1].toUpperCase(), args: m[2].replace(/\s+/g, ' ').trim(), line: start + 1 });
  }
  return out;
}

/** The npm_config_nodedir for this machine (the Dockerfile's is the node image's /usr/local). */
function hostNodedir(): string | undefined {
  for (const d of ['/usr/local', '/usr']) if (existsSync(join(d, 'include/node/node_api.h'))) return d;
  return undefined;
}

describe('Dockerfile', () => {
  const text = readFileSync(DOCKERFILE, 'utf8');
  const instrs = parseDockerfile(text);
  const stages: { from: string; instrs: Instr[] }[] = [];
  for (const ins of instrs) {
    if (ins.kw === 'FROM') stages.push({ from: ins.args, instrs: [] });
    else stages.at(-1)!.instrs.push(ins);
  }

  it('lints clean (dockerfile-utils)', () => {
    const bin = process.env.VPNMASQ_DOCKERFILE_LINT ?? join(ROOT, 'node_modules/.bin/dockerfile-utils');
    if (!existsSync(bin)) {
      if (inCI) throw new Error(`${bin} missing: dockerfile-utils is a devDependency`);
      console.warn(`skipping the Dockerfile lint: ${bin} missing (npm install)`);
      return;
    }
    const r = run(bin, ['lint', '--json', DOCKERFILE]);
    expect(JSON.parse(r.stdout)).toEqual([]);
    expect(r.status).toBe(0);
  });

  it('two stages: node:20-bookworm build, node:20-bookworm-slim runtime running `vpnmasq run`', () => {
    expect(stages.map((s) => s.from)).toEqual(['node:20-bookworm AS build', 'node:20-bookworm-slim']);
    const last = stages[1].instrs;
    expect(last.find((i) => i.kw === 'ENTRYPOINT')!.args).toBe('["node", "/opt/vpnmasq/dist/cli/main.js"]');
    expect(last.find((i) => i.kw === 'CMD')!.args).toBe('["run", "--config", "/etc/config/vpnmasq"]');
    expect(last.find((i) => i.kw === 'COPY' && i.args.endsWith('/etc/config/vpnmasq'))!.args)
      .toBe('firmware/files/etc/config/vpnmasq /etc/config/vpnmasq');
    expect(text).toContain('--cap-add NET_ADMIN --device /dev/net/tun');
  });

  it('the runtime stage\'s RUN commands are what .ci/run runs (apt-get update, apt-get install of the same packages)', () => {
    const ciRun = readFileSync(join(ROOT, '.ci/run'), 'utf8');
    // the apt-get install command of .ci/run with its continuation lines
    const lines = ciRun.split('\n');
    let i = lines.findIndex((l) => /^\s*apt-get install /.test(l));
    expect(i).toBeGreaterThanOrEqual(0);
    let ciInstall = lines[i];
    while (ciInstall.endsWith('\\')) ciInstall = ciInstall.slice(0, -1) + ' ' + lines[++i];
    const ciPackages = new Set(ciInstall.split(/\s+/).filter((w) => /^[a-z0-9][a-z0-9.+-]+$/.test(w)));
    const runs = stages[1].instrs.filter((i) => i.kw === 'RUN');
    expect(runs.length).toBeGreaterThan(0);
    for (const r of runs) {
      for (const cmd of r.args.split('&&').map((c) => c.trim())) {
        if (cmd === 'apt-get update') expect(ciRun).toContain('apt-get update');
        else if (cmd === 'rm -rf /var/lib/apt/lists/*') continue; // the image's cleanup
        else {
          const m = cmd.match(/^apt-get install -y --no-install-recommends ((?:[a-z0-9.+-]+ ?)+)$/);
          expect(m, `line ${r.line}: "${cmd}" is not a command CI runs`).not.toBeNull();
          for (const p of m![1].trim().split(' ')) expect(ciPackages.has(p), `.ci/run installs ${p}`).toBe(true);
        }
      }
    }
  });

  it('.dockerignore keeps out the host\'s build output but none of what the build copies', () => {
    const ignore = readFileSync(join(ROOT, '.dockerignore'), 'utf8').split('\n').map((l) => l.trim()).filter((l) => l && !l.startsWith('#'));
    for (const p of ['**/node_modules', 'dist', 'build', '.git']) expect(ignore).toContain(p);
    for (const ins of instrs.filter((i) => i.kw === 'COPY' && !i.args.startsWith('--from'))) {
      for (const src of ins.args.split(' ').slice(0, -1)) {
        const top = src.replace(/^\.\//, '').split('/')[0];
        expect(ignore.includes(top) || ignore.includes(src), src).toBe(false);
      }
    }
  });

  describe.skipIf(skipUnless({ tools: ['make', 'g++', 'python3'] }))('the build stage\'s commands, run in a copy of what it copies', () => {
    let ctx: string;
    let runtime: string;
    beforeAll(async () => {
      ctx = tmp('docker-src'); // WORKDIR /src
      runtime = tmp('docker-opt'); // WORKDIR /opt/vpnmasq, and / for absolute paths
      const env: NodeJS.ProcessEnv = cleanEnv({ npm_config_prefer_offline: 'true' });
      for (const ins of stages[0].instrs) {
        if (ins.kw === 'ENV') {
          for (const m of ins.args.matchAll(/(\w+)=(\S+)/g)) env[m[1]] = m[2];
        } else if (ins.kw === 'COPY') {
          const parts = ins.args.split(' ');
          const dest = parts.at(-1)!;
          for (const src of parts.slice(0, -1)) {
            cpSync(join(ROOT, src), dest.endsWith('/') ? join(ctx, dest, src.split('/').at(-1)!) : join(ctx, dest), { recursive: true });
          }
        } else if (ins.kw === 'RUN') {
          // the node image keeps its headers in /usr/local/include/node; this machine's may be elsewhere
          const nodedir = hostNodedir();
          if (nodedir) env.npm_config_nodedir = nodedir; else delete env.npm_config_nodedir;
          await okAsync(runAsync('sh', ['-c', ins.args], { cwd: ctx, env, timeout: 400_000 }), `Dockerfile line ${ins.line}: RUN ${ins.args}`);
        } else if (!['WORKDIR'].includes(ins.kw)) {
          throw new Error(`build stage: unexpected ${ins.kw} on line ${ins.line}`);
        }
      }
      // the runtime stage's COPY lines
      for (const ins of stages[1].instrs.filter((i) => i.kw === 'COPY')) {
        const parts = ins.args.split(' ');
        const from = parts[0].startsWith('--from=build') ? parts.shift()! : null;
        const dest = parts.at(-1)!;
        for (const src of parts.slice(0, -1)) {
          const s = from ? join(ctx, relative('/src', src)) : join(ROOT, src);
          expect(existsSync(s), `COPY ${from ?? ''} ${src}`).toBe(true);
          const base = dest.startsWith('/') ? join(runtime, 'root') : runtime;
          const d = dest.endsWith('/') || dest === './' ? join(base, dest, src.split('/').at(-1)!) : join(base, dest);
          cpSync(s, d, { recursive: true });
        }
      }
    }, 600_000);

    it('built the addon, the Wasm and the JS, and pruned the dev dependencies', () => {
      expect(existsSync(join(ctx, 'build/Release/vpnmasq_tun.node'))).toBe(true);
      expect(existsSync(join(ctx, 'dist/engine.wasm'))).toBe(true);
      expect(existsSync(join(ctx, 'dist/cli/main.js'))).toBe(true);
      for (const dev of ['typescript', 'vitest', 'assemblyscript']) expect(existsSync(join(ctx, 'node_modules', dev)), dev).toBe(false);
      expect(existsSync(join(ctx, 'node_modules/pino'))).toBe(true);
      // the lockfile is used as it is, not rewritten
      expect(readFileSync(join(ctx, 'package-lock.json'), 'utf8')).toBe(readFileSync(join(ROOT, 'package-lock.json'), 'utf8'));
    });

    it('the runtime layout runs: ENTRYPOINT check-config on the copied config, the addon loads', () => {
      const entry = join(runtime, 'dist/cli/main.js');
      const r = run('node', [entry, 'check-config', '--config', join(runtime, 'root/etc/config/vpnmasq')]);
      expect(r.stderr).toBe('');
      expect(r.status).toBe(0);
      const load = run('node', ['--input-type=module', '-e',
        `const m = await import(${JSON.stringify(join(runtime, 'dist/tun/tun.js'))}); console.log(typeof m.loadNative().openTun)`]);
      expect(load.stderr).toBe('');
      expect(load.stdout.trim()).toBe('function');
    });
  });
});
