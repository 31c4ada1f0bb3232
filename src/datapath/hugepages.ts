// Transparent huge pages under the engine's Wasm memory (issue 10: the
// core's lookups). The flow index and records are hashed into at random,
// so with 4 KiB pages a lookup in a table of a few MiB or more is also a TLB
// miss, and in a VM a nested (two-level) page walk; with 2 MiB pages the
// whole memory fits in a few dozen TLB entries. The addon asks the kernel
// with madvise(MADV_HUGEPAGE) (src/tun/addon.cc adviseHugePages) before the
// engine touches the memory, so every first touch is a huge page.
//
// It costs no memory: the engine's init touches all of its memory (the
// tables are laid out and cleared up front), so every page is resident
// from the start either way (measured at max_flows 1M: 116.0 MiB process
// RSS with 4 KiB pages, 116.3 MiB with huge pages). Where the kernel has no THP, or
// has it set to `never`, or cannot find free 2 MiB blocks, the memory stays
// on 4 KiB pages and `status` says so. VPNMASQ_HUGE_PAGES=0 in the
// environment turns the advice off (benchmarks compare the two).

import { readFileSync } from 'node:fs';
import { constants } from 'node:os';
import type { HugePages } from '../engine/engine.js';
import { loadNative } from '../tun/tun.js';

const THP_DIR = '/sys/kernel/mm/transparent_hugepage';
const DEFAULT_HUGE_BYTES = 2 * 1024 * 1024;

function errnoName(n: number): string {
  for (const [name, v] of Object.entries(constants.errno)) if (v === n) return name;
  return `errno ${n}`;
}

/** The kernel's THP mode ('always', 'madvise', 'never'), or null without THP. */
export function thpMode(dir = THP_DIR): string | null {
  try {
    return /\[(\w+)\]/.exec(readFileSync(`${dir}/enabled`, 'utf8'))?.[1] ?? null;
  } catch {
    return null;
  }
}

/** Whether to ask: yes unless VPNMASQ_HUGE_PAGES=0; `off` says why not. */
export function hugePagesWanted(env: NodeJS.ProcessEnv = process.env): { on: boolean; off?: string } {
  return env.VPNMASQ_HUGE_PAGES === '0' ? { on: false, off: 'VPNMASQ_HUGE_PAGES=0' } : { on: true };
}

/** Advises `buf` (the engine's memory, before its first touch); never throws: the engine runs either way. */
export function adviseHugePages(buf: ArrayBuffer, dir = THP_DIR): HugePages {
  const mode = thpMode(dir);
  if (mode === null) return { advisedBytes: 0, pageBytes: 0, address: 0, off: 'kernel without transparent huge pages' };
  if (mode === 'never') return { advisedBytes: 0, pageBytes: 0, address: 0, off: 'transparent_hugepage [never]' };
  let pageBytes = DEFAULT_HUGE_BYTES;
  try {
    const n = Number(readFileSync(`${dir}/hpage_pmd_size`, 'utf8'));
    if (Number.isSafeInteger(n) && n > 0 && (n & (n - 1)) === 0) pageBytes = n;
  } catch { /* older kernels: 2 MiB on x86_64 and on arm64 with 4 KiB pages */ }
  try {
    const [advised, err, address] = loadNative().adviseHugePages(buf, pageBytes);
    if (err !== 0) return { advisedBytes: 0, pageBytes, address: 0, off: `madvise: ${errnoName(err)}` };
    if (advised === 0) return { advisedBytes: 0, pageBytes, address: 0, off: 'memory smaller than one huge page' };
    return { advisedBytes: advised, pageBytes, address };
  } catch (err) {
    return { advisedBytes: 0, pageBytes, address: 0, off: (err as Error).message.split('\n')[0] };
  }
}

/**
 * Bytes of [address, address + bytes) that are resident on huge pages now:
 * the AnonHugePages of the mappings /proc/<pid>/smaps lists over that range
 * (the whole of each overlapping mapping: the engine's memory is a mapping of
 * its own, between V8's guard regions). 0 when the file cannot be read.
 */
export function hugeResidentBytes(address: number, bytes: number, smapsPath = '/proc/self/smaps'): number {
  let text: string;
  try {
    text = readFileSync(smapsPath, 'utf8');
  } catch {
    return 0;
  }
  let inRange = false;
  let total = 0;
  for (const line of text.split('\n')) {
    const m = /^([0-9a-f]+)-([0-9a-f]+) /.exec(line);
    if (m) {
      const lo = parseInt(m[1], 16), hi = parseInt(m[2], 16);
      inRange = lo < address + bytes && hi > address;
    } else if (inRange && line.startsWith('AnonHugePages:')) {
      total += Number(/(\d+) kB/.exec(line)?.[1] ?? 0) * 1024;
    }
  }
  return total;
}
