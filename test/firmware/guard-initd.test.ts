// /etc/init.d/vpnmasq-guard (OpenWrt, rc.common without procd): the
// fail-closed guard at boot, against stand-ins for logger and vpnmasq.
import { describe, it, expect } from 'vitest';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { skipUnless } from '../helpers/prereq.js';
import { ROOT, SHELLS, run, tmpDirs, writeExec } from '../helpers/shell.js';

const INIT = join(ROOT, 'firmware/files/etc/init.d/vpnmasq');
const GUARD_INIT = join(ROOT, 'firmware/files/etc/init.d/vpnmasq-guard');
const tmp = tmpDirs();

describe.skipIf(skipUnless({ tools: ['busybox'] }))('/etc/init.d/vpnmasq-guard', () => {
  it('starts before the network (netifd is 20) and before vpnmasq itself', () => {
    const text = readFileSync(GUARD_INIT, 'utf8');
    expect(text.split('\n')[0]).toBe('#!/bin/sh /etc/rc.common');
    const start = Number(/^START=(\d+)$/m.exec(text)![1]);
    expect(start).toBeLessThan(20);
    expect(start).toBeLessThan(Number(/^START=(\d+)$/m.exec(readFileSync(INIT, 'utf8'))![1]));
    expect(text).not.toMatch(/^USE_PROCD=/m);
  });

  describe.each(SHELLS)('under %s', (_name, shell) => {
    const call = (fn: string, fail: boolean) => {
      const dir = tmp('guard-init');
      const log = join(dir, 'log');
      writeFileSync(log, '');
      const fake = writeExec(join(dir, 'vpnmasq'), `echo "vpnmasq $*" >> "$FAKE_LOG"
if [ "$FAKE_FAIL" = 1 ]; then echo "vpnmasq: guard install: nft not found (install nftables)" >&2; exit 1; fi
echo "vpnmasq: guard installed: no forwarding between br-lan and wan outside vpnmasq"
`);
      writeFileSync(join(dir, 'h.sh'), 'logger() { echo "logger $*"; }\n. "$INIT_SCRIPT"\nPROG=$FAKE_VPNMASQ\n"$@"\necho "rc=$?"\n');
      const r = run(shell[0]!, [...shell.slice(1), join(dir, 'h.sh'), fn], {
        env: { PATH: process.env.PATH, INIT_SCRIPT: GUARD_INIT, FAKE_VPNMASQ: fake, FAKE_LOG: log, FAKE_FAIL: fail ? '1' : '0' },
      });
      return { out: r.stdout.trim().split('\n'), calls: readFileSync(log, 'utf8').trim().split('\n').filter(Boolean) };
    };

    it('start installs the guard from /etc/config/vpnmasq and logs what happened', () => {
      const { out, calls } = call('start', false);
      expect(calls).toEqual(['vpnmasq guard install --config /etc/config/vpnmasq']);
      expect(out).toEqual(['logger -t vpnmasq -p daemon.notice guard installed: no forwarding between br-lan and wan outside vpnmasq', 'rc=0']);
    });

    it('a failure is logged as an error and start fails', () => {
      const { out } = call('start', true);
      expect(out).toEqual(['logger -t vpnmasq -p daemon.err guard install: nft not found (install nftables)', 'rc=1']);
    });

    it('stop keeps the guard (only `vpnmasq guard remove` takes it away)', () => {
      const { out, calls } = call('stop', false);
      expect(calls).toEqual([]);
      expect(out).toEqual(['rc=0']);
    });
  });
});

// With uci present (OpenWrt), the guard follows vpnmasq.main.enabled: the
// package ships vpnmasq off, and installing it must not cut the LAN off.
describe.skipIf(skipUnless({ tools: ['busybox'] }))('/etc/init.d/vpnmasq-guard and option enabled (stand-in uci)', () => {
  describe.each(SHELLS)('under %s', (_name, shell) => {
    const start = (enabled: string) => {
      const dir = tmp('guard-uci');
      const log = join(dir, 'log');
      writeFileSync(log, '');
      writeFileSync(join(dir, 'vpnmasq.conf'), `config vpnmasq 'main'\n\toption lan_device 'br-lan'\n\toption wan_device 'wan'\n\toption enabled '${enabled}'\n`);
      const cfgDir = join(dir, 'config');
      run('mkdir', ['-p', cfgDir]);
      writeFileSync(join(cfgDir, 'vpnmasq'), readFileSync(join(dir, 'vpnmasq.conf'), 'utf8'));
      const fake = writeExec(join(dir, 'vpnmasq'), 'echo "vpnmasq $*" >> "$FAKE_LOG"\necho "vpnmasq: guard installed: no forwarding between br-lan and wan outside vpnmasq"\n');
      writeFileSync(join(dir, 'h.sh'), 'logger() { echo "logger $*"; }\n. "$INIT_SCRIPT"\nPROG=$FAKE_VPNMASQ\n"$@"\necho "rc=$?"\n');
      const r = run(shell[0]!, [...shell.slice(1), join(dir, 'h.sh'), 'start'], {
        env: { PATH: `${join(ROOT, 'test/helpers/bin')}:${process.env.PATH}`, UCI_CONFIG_DIR: cfgDir, INIT_SCRIPT: GUARD_INIT, FAKE_VPNMASQ: fake, FAKE_LOG: log },
      });
      return { out: r.stdout.trim().split('\n'), calls: readFileSync(log, 'utf8').trim().split('\n').filter(Boolean) };
    };

    it("disabled ('0', the package's default): no guard, one notice, start succeeds", () => {
      const { out, calls } = start('0');
      expect(calls).toEqual([]);
      expect(out).toEqual(['logger -t vpnmasq -p daemon.notice guard not installed: vpnmasq is disabled (vpnmasq.main.enabled)', 'rc=0']);
    });

    it("enabled ('1'): the guard is installed", () => {
      expect(start('1').calls).toEqual(['vpnmasq guard install --config /etc/config/vpnmasq']);
    });
  });
});
