// Line-oriented talk with a peer process a namespace test started (the
// flood peer's "ready", "connected", its JSON result line).
import type { ChildProcess } from 'node:child_process';

/**
 * Collects `p`'s stdout lines; the returned function resolves with the
 * first line (seen so far or later) that `pred` accepts, or rejects after
 * `ms` with the peer's stderr.
 */
export function lineReader(p: ChildProcess): (pred: (l: string) => boolean, ms: number) => Promise<string> {
  let buf = '';
  const seen: string[] = [];
  const waiters: { pred: (l: string) => boolean; res: (l: string) => void }[] = [];
  let err = '';
  p.stderr!.on('data', (d) => { err += d; });
  p.stdout!.on('data', (d) => {
    buf += d;
    let i;
    while ((i = buf.indexOf('\n')) >= 0) {
      const l = buf.slice(0, i); buf = buf.slice(i + 1);
      seen.push(l);
      for (const w of [...waiters]) if (w.pred(l)) { waiters.splice(waiters.indexOf(w), 1); w.res(l); }
    }
  });
  return (pred, ms) => new Promise<string>((res, rej) => {
    const hit = seen.find(pred);
    if (hit !== undefined) { res(hit); return; }
    const t = setTimeout(() => rej(new Error(`peer: no line in ${ms} ms; stderr: ${err}`)), ms);
    waiters.push({ pred, res: (l) => { clearTimeout(t); res(l); } });
  });
}
