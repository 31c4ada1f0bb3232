// /etc/hotplug.d/iface/30-vpnmasq, sourced in a subshell as hotplug-call
// does, under dash and busybox sh, with stand-ins for uci, logger and vpnmasq.
import { describe, it, expect, beforeAll } from 'vitest';
import { readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { skipUnless } from '../helpers/prereq.js';
import { ROOT, SHELLS, run, tmpDirs, until, writeExec } from '../helpers/shell.js';

const HOTPLUG = join(ROOT, 'firmware/files/etc/hotplug.d/iface/30-vpnmasq');
const tmp = tmpDirs();

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
