// Prerequisite checks for tests that need root, TUN or a Debian tool.
// Outside CI a missing prerequisite skips the test (with the reason);
// under CI=true it fails, so a broken CI machine can never pass silently.
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';

export const inCI = process.env.CI === 'true' || process.env.CI === '1';

function have(tool: string): boolean {
  try {
    execFileSync('sh', ['-c', `command -v ${tool}`], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/** Returns null when everything is there, else the reason it is not. */
export function missing(opts: { root?: boolean; tun?: boolean; tools?: string[] }): string | null {
  if (opts.root && process.getuid && process.getuid() !== 0) return 'needs root';
  if (opts.tun && !existsSync('/dev/net/tun')) return 'needs /dev/net/tun';
  for (const t of opts.tools ?? []) if (!have(t)) return `needs ${t} (apt-get install it)`;
  return null;
}

/**
 * Use as `describe.skipIf(skipUnless({...}))(...)`: under CI a missing
 * prerequisite throws at collection time, which fails the run.
 */
export function skipUnless(opts: { root?: boolean; tun?: boolean; tools?: string[] }): boolean {
  const why = missing(opts);
  if (why === null) return false;
  if (inCI) throw new Error(`prerequisite missing under CI: ${why}`);
  console.warn(`skipping: ${why}`);
  return true;
}
