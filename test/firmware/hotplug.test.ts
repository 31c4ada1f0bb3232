// /etc/hotplug.d/iface/30-vpnmasq, sourced in a subshell as hotplug-call
// does, under dash and busybox sh, with stand-ins for uci, logger and vpnmasq.
import { describe, it, expect, beforeAll } from 'vitest';
import { readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { skipUnless } from '../helpers/prereq.js';
import { ROOT, SHELLS, run, tmpDirs, writeExec } from '../helpers/shell.js';

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
    return { log: readFileSync(log, 'utf8').trim().split('\n').filter(Boolean), status: r.status };
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

    it('vpnmasq not running: logged, and the hotplug run still succeeds', () => {
      const { log } = event(shell, { ACTION: 'ifup', INTERFACE: 'wan', FAKE_DOWN: '1' });
      expect(log).toEqual([
        'vpnmasq wan-update',
        'logger -t vpnmasq -p daemon.notice wan ifup: wan-update failed: connect ENOENT /var/run/vpnmasq.sock',
      ]);
    });
  });
});
