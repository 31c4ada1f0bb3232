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

  it("leaves the respawn values to procd (no threshold, delay or retry count written in the script)", () => {
    const respawnLines = readFileSync(INIT, 'utf8').split('\n').filter((l) => /^\s*procd_(set|append)_param\s+respawn\b/.test(l));
    expect(respawnLines.map((l) => l.trim())).toEqual(['procd_set_param respawn']);
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

    it("respawn carries no values of its own (procd.sh then uses the system-wide ones), also with respawn_* set", () => {
      const { out } = call(shell, 'start_service', { FAKE_CONFIG: 'good', respawn_threshold: '600', respawn_timeout: '2', respawn_retry: '9' });
      expect(out.filter((l) => l.startsWith('procd_set_param respawn'))).toEqual(['procd_set_param respawn']);
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
      // the data path's options, with the defaults and ranges of the option table (src/config/options.ts)
      for (const v of ['offload:bool:1', 'gro:bool:1', "priority:or('normal','high','realtime'):realtime", 'busy_poll:range(0,100000):0']) {
        expect(out[2]).toContain(v);
      }
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
