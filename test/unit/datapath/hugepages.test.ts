// Transparent huge pages under the engine's memory (src/datapath/hugepages.ts,
// the addon's adviseHugePages): asked for before the engine touches its
// memory, found again in /proc/self/smaps, and a clear reason where the
// kernel has none. The real addon and the real kernel; a fake sysfs
// directory only for the kernels this one is not (THP `never`, no THP).
import { afterAll, describe, expect, it } from 'vitest';
import { mkdtempSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { adviseHugePages, hugePagesWanted, hugeResidentBytes, thpMode } from '../../../src/datapath/hugepages.js';
import { Engine } from '../../../src/engine/engine.js';
import { loadNative } from '../../../src/tun/tun.js';

const tmp = mkdtempSync(join(tmpdir(), 'vpnmasq-thp-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

function fakeSysfs(name: string, enabled: string | null): string {
  const dir = join(tmp, name);
  mkdirSync(dir, { recursive: true });
  if (enabled !== null) writeFileSync(join(dir, 'enabled'), enabled);
  return dir;
}

const MiB = 1024 * 1024;
const mode = thpMode();

describe('huge pages for the engine memory', () => {
  it('01 this kernel: the 2 MiB-aligned middle of the memory is advised, and touched pages become huge pages', () => {
    const mem = new WebAssembly.Memory({ initial: 160, maximum: 160 }); // 10 MiB
    const h = adviseHugePages(mem.buffer);
    if (mode === null || mode === 'never') {
      // A kernel without THP (or with it off) says so and advises nothing.
      expect(h.advisedBytes).toBe(0);
      expect(h.off).toMatch(/transparent/);
      return;
    }
    expect(h.off).toBeUndefined();
    expect(h.pageBytes).toBe(Number(readFileSync('/sys/kernel/mm/transparent_hugepage/hpage_pmd_size', 'utf8')));
    // Whole huge pages inside the buffer: at least the buffer less one page at each end.
    expect(h.advisedBytes % h.pageBytes).toBe(0);
    expect(h.advisedBytes).toBeGreaterThanOrEqual(10 * MiB - 2 * h.pageBytes);
    expect(h.advisedBytes).toBeLessThanOrEqual(10 * MiB);
    expect(h.address % h.pageBytes).toBe(0);
    expect(hugeResidentBytes(h.address, h.advisedBytes)).toBe(0); // nothing touched yet
    new Uint8Array(mem.buffer).fill(1);
    // The kernel backs the first touches with huge pages (it may fall short only when memory is fragmented).
    expect(hugeResidentBytes(h.address, h.advisedBytes)).toBeGreaterThanOrEqual(h.pageBytes);
  });

  it('02 without the advice the same memory stays on 4 KiB pages (THP in madvise mode, as on Debian)', () => {
    if (mode !== 'madvise') {
      expect(['always', 'never', null]).toContain(mode);
      return;
    }
    const mem = new WebAssembly.Memory({ initial: 160, maximum: 160 });
    new Uint8Array(mem.buffer).fill(1);
    // Find the mapping through an advice made after the touch: it marks, it does not collapse.
    const h = adviseHugePages(mem.buffer);
    expect(h.advisedBytes).toBeGreaterThan(0);
    expect(hugeResidentBytes(h.address, h.advisedBytes)).toBe(0);
  });

  it('03 Engine.load asks before anything touches the memory, and keeps the answer', () => {
    let seen: Uint8Array | null = null;
    const e = Engine.load({
      maxFlows: 65536, seed: 1,
      adviseMemory: (buf) => {
        seen = new Uint8Array(buf).slice(); // a copy of what the engine had written by then
        return { advisedBytes: 123, pageBytes: 2 * MiB, address: 0 };
      },
    });
    expect(seen).not.toBeNull();
    expect(seen!.length).toBe(e.memoryBytes);
    expect(seen!.every((b) => b === 0)).toBe(true); // not instantiated, not initialized yet
    expect(new Uint8Array(e.buffer).some((b) => b !== 0)).toBe(true); // init has written since
    expect(e.hugePages).toEqual({ advisedBytes: 123, pageBytes: 2 * MiB, address: 0 });
    expect(Engine.load({ maxFlows: 1024, seed: 1 }).hugePages).toBeNull();
  });

  it('04 a real engine: its tables are on huge pages from init on', () => {
    const e = Engine.load({ maxFlows: 100000, seed: 1, adviseMemory: (b) => adviseHugePages(b) });
    if (mode === null || mode === 'never') {
      expect(e.hugePages?.advisedBytes).toBe(0);
      return;
    }
    expect(e.hugePages!.advisedBytes).toBeGreaterThan(e.memoryBytes / 2);
    expect(hugeResidentBytes(e.hugePages!.address, e.hugePages!.advisedBytes)).toBeGreaterThan(0);
  });

  it('05 kernels without THP, or with it set to never: nothing advised, and why', () => {
    const buf = new WebAssembly.Memory({ initial: 64, maximum: 64 }).buffer;
    expect(adviseHugePages(buf, fakeSysfs('never', 'always madvise [never]\n'))).toEqual({
      advisedBytes: 0, pageBytes: 0, address: 0, off: 'transparent_hugepage [never]',
    });
    expect(adviseHugePages(buf, join(tmp, 'absent'))).toEqual({
      advisedBytes: 0, pageBytes: 0, address: 0, off: 'kernel without transparent huge pages',
    });
    expect(thpMode(fakeSysfs('always', '[always] madvise never\n'))).toBe('always');
    expect(thpMode(fakeSysfs('garbled', 'what\n'))).toBeNull();
  });

  it('06 a buffer smaller than one huge page: nothing advised, and why', () => {
    if (mode === null || mode === 'never') return expect(mode === null || mode === 'never').toBe(true);
    const h = adviseHugePages(new ArrayBuffer(64 * 1024));
    expect(h.advisedBytes).toBe(0);
    expect(h.off).toBe('memory smaller than one huge page');
  });

  it('07 VPNMASQ_HUGE_PAGES=0 turns the advice off; anything else leaves it on', () => {
    expect(hugePagesWanted({ VPNMASQ_HUGE_PAGES: '0' })).toEqual({ on: false, off: 'VPNMASQ_HUGE_PAGES=0' });
    expect(hugePagesWanted({})).toEqual({ on: true });
    expect(hugePagesWanted({ VPNMASQ_HUGE_PAGES: '1' })).toEqual({ on: true });
  });

  it('08 smaps: only the mappings over the range count, in bytes', () => {
    const f = join(tmp, 'smaps');
    writeFileSync(f, [
      '7f0000000000-7f0000400000 rw-p 00000000 00:00 0 ',
      'Rss:                4096 kB',
      'AnonHugePages:      4096 kB',
      '7f0000400000-7f0001400000 rw-p 00000000 00:00 0 ',
      'Rss:               16384 kB',
      'AnonHugePages:     14336 kB',
      '7f0001400000-7f0001600000 rw-p 00000000 00:00 0 ',
      'AnonHugePages:      2048 kB',
      '',
    ].join('\n'));
    const lo = 0x7f0000400000;
    expect(hugeResidentBytes(lo, 16 * MiB, f)).toBe(14336 * 1024);
    expect(hugeResidentBytes(lo - 4096, 16 * MiB + 8192, f)).toBe((4096 + 14336 + 2048) * 1024);
    expect(hugeResidentBytes(0x10000, 4096, f)).toBe(0);
    expect(hugeResidentBytes(lo, MiB, join(tmp, 'no-such-smaps'))).toBe(0);
  });

  it('09 the addon refuses what it cannot advise: not an ArrayBuffer, a page size that is not a power of two', () => {
    const n = loadNative();
    const buf = new ArrayBuffer(4096);
    expect(() => n.adviseHugePages(new Uint8Array(4096) as unknown as ArrayBuffer, 2 * MiB)).toThrow(TypeError);
    expect(() => n.adviseHugePages(buf, 3 * MiB)).toThrow(/power of two/);
    expect(() => n.adviseHugePages(buf, 0)).toThrow(/power of two/);
    expect(() => n.adviseHugePages(buf, -1)).toThrow(RangeError);
    expect(n.adviseHugePages(buf, 2 * MiB).slice(0, 2)).toEqual([0, 0]); // under one page: nothing to ask, no error
  });
});
