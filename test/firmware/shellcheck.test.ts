// Every shell script of the firmware and the packaging: `sh -n` under dash
// and busybox sh, shellcheck, and the executable bits.
import { describe, it, expect } from 'vitest';
import { readFileSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { skipUnless } from '../helpers/prereq.js';
import { ROOT, ok, run } from '../helpers/shell.js';

/** The scripts, relative to the repo; the executables among them marked. */
const SCRIPTS: { path: string; executable?: true }[] = [
  { path: 'firmware/files/etc/init.d/vpnmasq', executable: true },
  { path: 'firmware/files/etc/init.d/vpnmasq-guard', executable: true },
  { path: 'firmware/files/etc/hotplug.d/iface/30-vpnmasq' }, // sourced by hotplug-call
  { path: 'firmware/files/usr/sbin/vpnmasq-respawn', executable: true },
  { path: 'firmware/build-ipk.sh', executable: true },
  { path: 'firmware/lib.sh' },
  { path: 'firmware/openwrt/vpnmasq/files/vpnmasq.sh', executable: true },
  { path: 'firmware/files/usr/libexec/rpcd/vpnmasq', executable: true },
  { path: 'firmware/files/etc/uci-defaults/90-vpnmasq-firewall' },
  { path: 'firmware/image/rootfs/usr/share/udhcpc/default.script', executable: true },
  { path: 'firmware/image/rootfs/usr/sbin/vpnmasq-net', executable: true },
  { path: 'firmware/image/rootfs/etc/init.d/rcS', executable: true },
];
const SHELL_SCRIPTS = SCRIPTS.map((s) => join(ROOT, s.path));
const INIT = join(ROOT, 'firmware/files/etc/init.d/vpnmasq');
const HOTPLUG = join(ROOT, 'firmware/files/etc/hotplug.d/iface/30-vpnmasq');

describe.skipIf(skipUnless({ tools: ['shellcheck', 'busybox'] }))('shell scripts: syntax and shellcheck', () => {
  it.each(SHELL_SCRIPTS.map((f) => [relative(ROOT, f), f]))('%s', (_name, file) => {
    ok(run('sh', ['-n', file]), `sh -n ${file}`);
    ok(run('busybox', ['sh', '-n', file]), `busybox sh -n ${file}`);
    // -x: build-ipk.sh sources firmware/lib.sh (named relative to the repo)
    ok(run('shellcheck', ['-x', '-s', 'sh', file], { cwd: ROOT }), `shellcheck ${file}`);
  });

  it('executables are executable (init scripts, the rpcd plugin, the udhcpc script …), the sourced hotplug script need not be', () => {
    for (const f of SCRIPTS.filter((x) => x.executable)) expect(statSync(join(ROOT, f.path)).mode & 0o111, f.path).toBe(0o111);
    expect(readFileSync(INIT, 'utf8').split('\n')[0]).toBe('#!/bin/sh /etc/rc.common');
    expect(readFileSync(HOTPLUG, 'utf8').split('\n')[0]).toBe('#!/bin/sh');
  });
});
