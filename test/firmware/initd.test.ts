// /etc/init.d/vpnmasq, the procd script, run under dash and busybox sh
// against stand-ins for rc.common/procd.sh, config_get and logger, with a
// fake vpnmasq that logs how it was called.
import { describe, it, expect, beforeAll } from 'vitest';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { skipUnless } from '../helpers/prereq.js';
import { ROOT, SHELLS, run, tmpDirs, writeExec } from '../helpers/shell.js';

const INIT = join(ROOT, 'firmware/files/etc/init.d/vpnmasq');
const tmp = tmpDirs();

const INIT_HARNESS = `
# stand-ins for what /etc/rc.common and /lib/functions/procd.sh define
procd_open_instance() { echo "procd_open_instance"; }
procd_set_param() { echo "procd_set_param $*"; }
procd_close_instance() { echo "procd_close_instance"; }
procd_add_reload_trigger() { echo "procd_add_reload_trigger $*"; }
procd_add_interface_trigger() { echo "procd_add_interface_trigger $*"; }
config_load() { echo "config_load $*"; }
# config_get VAR SECTION OPTION DEFAULT, from UCI_<section>_<option>
config_get() { eval "_v=\\\${UCI_$2_$3:-}"; [ -n "$_v" ] || _v=$4; eval "$1=\\$_v"; }
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
  if [ "$FAKE_CONFIG" = bad ]; then
    echo "vpnmasq: /etc/config/vpnmasq:7: option dest_ip: '192.168.1.300' is not an IPv4 address" >&2; exit 1
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
      env: { PATH: process.env.PATH, INIT_SCRIPT: INIT, FAKE_VPNMASQ: fake, FAKE_LOG: log, ...env },
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
        'procd_set_param respawn 3600 0 5',
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

    it('service_triggers: config reload trigger and the WAN interface trigger (wan_interface, default wan)', () => {
      expect(call(shell, 'service_triggers').out).toEqual([
        'procd_add_reload_trigger vpnmasq',
        'config_load vpnmasq',
        'procd_add_interface_trigger interface.* wan /etc/init.d/vpnmasq reload',
        'rc=0',
      ]);
      expect(call(shell, 'service_triggers', { UCI_main_wan_interface: 'wan6' }).out)
        .toContain('procd_add_interface_trigger interface.* wan6 /etc/init.d/vpnmasq reload');
    });

    it('reload_service: a running vpnmasq re-reads its config and the WAN address', () => {
      const { out, calls } = call(shell, 'reload_service', { FAKE_CONFIG: 'good', FAKE_RUNNING: '1' });
      expect(calls).toEqual([
        'vpnmasq status --config /etc/config/vpnmasq',
        'vpnmasq reload --config /etc/config/vpnmasq',
        'vpnmasq wan-update --config /etc/config/vpnmasq',
      ]);
      expect(out).toEqual(['logger -t vpnmasq -p daemon.info configuration reloaded', 'rc=0']);
    });

    it('reload_service: a refused reload is logged as an error and fails', () => {
      const { out } = call(shell, 'reload_service', { FAKE_CONFIG: 'bad', FAKE_RUNNING: '1' });
      expect(out).toEqual(['logger -t vpnmasq -p daemon.err reload: /etc/config/vpnmasq:7: bad (refused)', 'rc=1']);
    });

    it('reload_service: when vpnmasq is not running it is started', () => {
      const { out, calls } = call(shell, 'reload_service', { FAKE_CONFIG: 'good', FAKE_RUNNING: '0' });
      expect(calls).toEqual(['vpnmasq status --config /etc/config/vpnmasq']);
      expect(out).toEqual(['rc.common start', 'rc=0']);
    });
  });
});
