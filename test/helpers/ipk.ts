// Reading an .ipk (opkg's tar.gz of debian-binary, control.tar.gz and
// data.tar.gz) and an ELF header: for the .ipk test and the OpenWrt package
// Makefile test, which compares what the Makefile installs with the .ipk.
import { expect } from 'vitest';
import { closeSync, mkdirSync, openSync, readFileSync, readSync } from 'node:fs';
import { join } from 'node:path';
import { ok, run } from './shell.js';

/** Unpacks ipk into `into` (outer archive, CONTROL/, data/) and lists every level. */
export function readIpk(ipk: string, into: string) {
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
export function elfMachine(file: string): number {
  const fd = openSync(file, 'r');
  const b = Buffer.alloc(20);
  readSync(fd, b, 0, 20, 0);
  closeSync(fd);
  expect(b.subarray(0, 4).toString('latin1')).toBe('\x7fELF');
  return b.readUInt16LE(18);
}
