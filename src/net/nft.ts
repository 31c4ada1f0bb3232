// Small synchronous helpers around `nft` (nftables) for start/stop code,
// in the style of iface.ts' runIp: one line naming the command and nft's
// error when it fails. Nothing here is on the packet hot path.
import { execFileSync } from 'node:child_process';
import { oneLine } from './iface.js';

/** An `nft` invocation failed. `message` is one line naming the command and nft's stderr. */
export class NftError extends Error {
  readonly args: readonly string[];
  readonly stderr: string;
  constructor(args: readonly string[], stderr: string, cause?: unknown) {
    super(`nft ${args.join(' ')} failed: ${oneLine(stderr) || 'no error output'}`, { cause });
    this.name = 'NftError';
    this.args = args;
    this.stderr = stderr;
  }
}

/** Runs `nft ...args` (with `input` on stdin, e.g. for `-f -`) and returns stdout. */
export function runNft(args: readonly string[], input?: string): string {
  try {
    return execFileSync('nft', args, { encoding: 'utf8', input, stdio: ['pipe', 'pipe', 'pipe'] });
  } catch (e) {
    const err = e as NodeJS.ErrnoException & { stderr?: string | Buffer };
    const stderr = err.stderr ? String(err.stderr) : '';
    if (!stderr && err.code === 'ENOENT') throw new NftError(args, 'nft not found (install nftables)', e);
    throw new NftError(args, stderr || err.message, e);
  }
}

/** Applies an nft script atomically (one transaction: all of it or none). */
export function applyNftScript(script: string): void {
  runNft(['-f', '-'], script);
}

/** `nft list table ip NAME`, or null when there is no such table. */
export function listTable(name: string): string | null {
  try {
    return runNft(['list', 'table', 'ip', name]);
  } catch (e) {
    if (e instanceof NftError && /No such file or directory|does not exist/i.test(e.stderr)) return null;
    throw e;
  }
}

/** Deletes table `ip NAME`; returns false if it was not there (also: no nft at all, so no table either). */
export function deleteTable(name: string): boolean {
  try {
    runNft(['delete', 'table', 'ip', name]);
    return true;
  } catch (e) {
    if (e instanceof NftError && /No such file or directory|does not exist|nft not found/i.test(e.stderr)) return false;
    throw e;
  }
}

/** An nft string literal for an interface name (isValidIfName-checked names only). */
export function nftString(s: string): string {
  if (!/^[^\s"\\/:]{1,15}$/.test(s)) throw new Error(`nft: ${JSON.stringify(s)} is not a usable interface name`);
  return `"${s}"`;
}
