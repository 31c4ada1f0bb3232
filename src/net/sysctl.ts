// Read/write /proc/sys values, with save/restore.
//
// Keys are either dotted sysctl names ('net.ipv4.ip_forward') or paths
// relative to /proc/sys ('net/ipv4/conf/eth0.100/rp_filter'). Use the path
// form (or sysctlKey()) whenever an interface name is involved, because
// interface names may contain dots. /proc/sys/net always shows the network
// namespace of the calling process.
import { readFileSync, writeFileSync } from 'node:fs';

const ROOT = '/proc/sys/';

/** Builds a path-form key from segments: sysctlKey('net','ipv4','conf',dev,'rp_filter'). */
export function sysctlKey(...segments: string[]): string {
  for (const s of segments) {
    if (s === '' || s === '.' || s === '..' || s.includes('/')) throw new Error(`invalid sysctl key segment ${JSON.stringify(s)}`);
  }
  return segments.join('/');
}

export function sysctlPath(key: string): string {
  const rel = key.includes('/') ? key : key.split('.').join('/');
  if (rel.split('/').some((s) => s === '' || s === '.' || s === '..')) throw new Error(`invalid sysctl key ${JSON.stringify(key)}`);
  return ROOT + rel;
}

/** Human-readable dotted name (for messages). */
export function sysctlName(key: string): string {
  return key.includes('/') ? key.split('/').join('.') : key;
}

/** Normalizes whitespace: '32768\t60999\n' -> '32768 60999'. */
export function normalizeSysctlValue(v: string): string {
  return v.trim().split(/\s+/).join(' ');
}

export function readSysctl(key: string): string {
  try {
    return normalizeSysctlValue(readFileSync(sysctlPath(key), 'utf8'));
  } catch (e) {
    throw new Error(`sysctl ${sysctlName(key)}: cannot read: ${(e as Error).message}`, { cause: e });
  }
}

export function writeSysctl(key: string, value: string | number): void {
  try {
    writeFileSync(sysctlPath(key), `${value}\n`);
  } catch (e) {
    throw new Error(`sysctl ${sysctlName(key)}=${value}: cannot write: ${(e as Error).message}`, { cause: e });
  }
}

/**
 * Remembers the original value of every sysctl it changes and puts them back
 * on restore(). Values already equal to the wanted one are not touched (and
 * therefore not restored either).
 */
export class SysctlSaver {
  private readonly saved = new Map<string, string>();
  /**
   * Called after an original value has been recorded and before the new value
   * is written: the place to persist entries() so a crash cannot lose them.
   */
  onSave?: (entries: Record<string, string>) => void;

  /** Starts from originals recorded earlier (e.g. by a crashed run). */
  constructor(initial?: Record<string, string>) {
    for (const [k, v] of Object.entries(initial ?? {})) this.saved.set(k, v);
  }

  /** Sets key=value; returns true if the value was changed. */
  set(key: string, value: string | number): boolean {
    const want = normalizeSysctlValue(String(value));
    const cur = readSysctl(key);
    if (cur === want) return false;
    if (!this.saved.has(key)) {
      this.saved.set(key, cur);
      this.onSave?.(this.entries());
    }
    writeSysctl(key, want);
    return true;
  }

  /** The originals still to be restored. */
  entries(): Record<string, string> {
    return Object.fromEntries(this.saved);
  }

  get size(): number {
    return this.saved.size;
  }

  /**
   * Writes every saved original back, in reverse order of change. Keys that
   * no longer exist (device gone) are skipped. Entries restored successfully
   * are forgotten, so restore() is idempotent; the errors of the others are
   * returned (and they stay saved for a later attempt).
   */
  restore(): Error[] {
    const errors: Error[] = [];
    for (const [key, value] of [...this.saved].reverse()) {
      try {
        writeSysctl(key, value);
        this.saved.delete(key);
      } catch (e) {
        if ((e as { cause?: NodeJS.ErrnoException }).cause?.code === 'ENOENT') this.saved.delete(key);
        else errors.push(e as Error);
      }
    }
    return errors;
  }
}
