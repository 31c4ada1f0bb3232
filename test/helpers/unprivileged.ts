// A copy of what a process started as another user (setpriv --reuid=65534)
// loads from the checkout, in a temporary directory everyone may enter and
// read. The checkout itself may sit where other users cannot go (a clone
// under /root, or in a `mktemp -d` directory, mode 0700); run from there the
// unprivileged process could not even load its code, and a test would see
// that error instead of the one it is about.
import { chmodSync, cpSync, existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';

export const ROOT = resolve(__dirname, '../..');

export interface ReadableCopy {
  /** the copy's root: ROOT's layout, only the parts asked for */
  root: string;
  /** removes the copy */
  cleanup(): void;
}

/**
 * Copies `parts` (paths relative to the repo root: files or directories),
 * the production packages of package-lock.json (what `npm prune --omit=dev`
 * keeps, as build-ipk.sh copies them) and the dev packages named in
 * `devModules` into a fresh directory below the system's temp directory,
 * readable by everyone. package.json is always copied: it makes dist/*.js
 * ES modules and is where node-gyp-build and createRequire start.
 */
export function readableCopy(parts: string[], devModules: string[] = []): ReadableCopy {
  const root = mkdtempSync(join(tmpdir(), 'vpnmasq-copy-'));
  const cleanup = (): void => rmSync(root, { recursive: true, force: true });
  try {
    for (const part of new Set(['package.json', ...parts])) {
      const from = join(ROOT, part);
      if (!existsSync(from)) throw new Error(`${from} is missing (npm install builds it)`);
      cpSync(from, join(root, part), { recursive: true });
    }
    const lock = JSON.parse(readFileSync(join(ROOT, 'package-lock.json'), 'utf8')) as {
      packages?: Record<string, { dev?: boolean; link?: boolean; optional?: boolean }>;
    };
    const wanted = new Set(devModules.map((m) => `node_modules/${m}`));
    for (const [p, meta] of Object.entries(lock.packages ?? {})) {
      if (!p.startsWith('node_modules/') || meta.link || (meta.dev && !wanted.has(p))) continue;
      const from = join(ROOT, p);
      if (!existsSync(from)) {
        if (meta.optional) continue;
        throw new Error(`${from} is missing (npm install)`);
      }
      cpSync(from, join(root, p), {
        recursive: true, verbatimSymlinks: true,
        // a package's own node_modules/ has lockfile entries of its own
        filter: (src) => !src.slice(from.length + 1).split('/').includes('node_modules'),
      });
    }
    for (const m of devModules) if (!existsSync(join(root, 'node_modules', m))) throw new Error(`node_modules/${m} is missing (npm install)`);
    openUp(root);
    reachable(root);
  } catch (e) {
    cleanup();
    throw e;
  }
  return { root, cleanup };
}

/** o+r on every file (o+x where the owner may execute), o+rx on every directory. */
function openUp(path: string): void {
  const st = statSync(path);
  if (st.isDirectory()) {
    chmodSync(path, (st.mode & 0o7777) | 0o005);
    for (const e of readdirSync(path)) openUp(join(path, e));
  } else if (st.isFile()) {
    chmodSync(path, (st.mode & 0o7777) | 0o004 | (st.mode & 0o100 ? 0o001 : 0));
  }
}

/** Throws with the reason when another user could not reach dir (a parent they may not enter). */
function reachable(dir: string): void {
  for (let d = dirname(dir); ; d = dirname(d)) {
    if ((statSync(d).mode & 0o001) === 0) {
      throw new Error(`${d} may not be entered by other users, so neither may ${dir}: point TMPDIR at a directory they can enter`);
    }
    if (d === dirname(d)) return;
  }
}
