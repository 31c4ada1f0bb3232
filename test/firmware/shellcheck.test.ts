// Every shell script of the firmware and the packaging: `sh -n` under dash
// and busybox sh, shellcheck, and the executable bits.
import { describe, it, expect } from 'vitest';
import { readFileSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { skipUnless } from '../helpers/prereq.js';
import { ROOT, ok, run } from '../helpers/shell.js';

const INIT = join(ROOT, 'firmware/files/etc/init.d/vpnmasq');
const GUARD_INIT = join(ROOT, 'firmware/files/etc/init.d/vpnmasq-guard');
const HOTPLUG = join(ROOT, 'firmware/files/etc/hotplug.d/iface/30-vpnmasq');
const RESPAWN = join(ROOT, 'firmware/files/usr/sbin/vpnmasq-respawn');
const BUILD_IPK = join(ROOT, 'firmware/build-ipk.sh');
const LIB_SH = join(ROOT, 'firmware/lib.sh');
const WRAPPER = join(ROOT, 'firmware/openwrt/vpnmasq/files/vpnmasq.sh');

const RPCD = join(ROOT, 'firmware/files/usr/libexec/rpcd/vpnmasq');
const UCI_DEFAULTS = join(ROOT, 'firmware/files/etc/uci-defaults/90-vpnmasq-firewall');

const UDHCPC = join(ROOT, 'firmware/image/rootfs/usr/share/udhcpc/default.script');
const IMAGE_NET = join(ROOT, 'firmware/image/rootfs/usr/sbin/vpnmasq-net');
const RCS = join(ROOT, 'firmware/image/rootfs/etc/init.d/rcS');

const SHELL_SCRIPTS = [INIT, GUARD_INIT, HOTPLUG, RESPAWN, BUILD_IPK, LIB_SH, WRAPPER, RPCD, UCI_DEFAULTS, UDHCPC, IMAGE_NET, RCS];

describe.skipIf(skipUnless({ tools: ['shellcheck', 'busybox'] }))('shell scripts: syntax and shellcheck', () => {
  it.each(SHELL_SCRIPTS.map((f) => [relative(ROOT, f), f]))('%s', (_name, file) => {
    ok(run('sh', ['-n', file]), `sh -n ${file}`);
    ok(run('busybox', ['sh', '-n', file]), `busybox sh -n ${file}`);
    // -x: build-ipk.sh sources firmware/lib.sh (named relative to the repo)
    ok(run('shellcheck', ['-x', '-s', 'sh', file], { cwd: ROOT }), `shellcheck ${file}`);
  });

  it('executables are executable, the sourced hotplug script need not be', () => {
    for (const f of [INIT, RESPAWN, BUILD_IPK, WRAPPER, IMAGE_NET, RCS]) expect(statSync(f).mode & 0o111, f).toBe(0o111);
    expect(readFileSync(INIT, 'utf8').split('\n')[0]).toBe('#!/bin/sh /etc/rc.common');
    expect(readFileSync(HOTPLUG, 'utf8').split('\n')[0]).toBe('#!/bin/sh');
  });
});
