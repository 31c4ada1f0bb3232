// `sudo node bench/fastsync.js [--flows N] [--runs R]`: what one sync of the
// flow fast path's table costs userland (src/datapath/fastpath.ts), on a
// real kernel table of 2 N entries (N flows, default 65,536: the table's
// capacity) attached to a veth pair in a network namespace of its own:
// one lookup per entry (the sync before 2026-12-04) against the batched
// walk (BPF_MAP_LOOKUP_BATCH) with the key lookup and the counts read that
// the sync does. The engine's two calls a flow come on top of both.
import { execFileSync, spawnSync } from 'node:child_process';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const args = process.argv.slice(2);
const opt = (name, dflt) => { const i = args.indexOf(name); return i >= 0 ? Number(args[i + 1]) : dflt; };
const flows = opt('--flows', 65536), runs = opt('--runs', 3);

if (process.env.VPNMASQ_FASTSYNC_CHILD !== '1') {
  if (process.getuid?.() !== 0) { console.error('bench/fastsync: needs root (a network namespace and a BPF table): run it with sudo'); process.exit(2); }
  const ns = `vpnmasq-fastsync-${process.pid}`;
  const ip = (...a) => execFileSync('ip', a, { stdio: ['ignore', 'ignore', 'inherit'] });
  ip('netns', 'add', ns);
  try {
    ip('-n', ns, 'link', 'add', 'fs0', 'type', 'veth', 'peer', 'name', 'fs1');
    ip('-n', ns, 'link', 'set', 'fs0', 'up');
    ip('-n', ns, 'link', 'set', 'fs1', 'up');
    const r = spawnSync('ip', ['netns', 'exec', ns, process.execPath, fileURLToPath(import.meta.url), ...args],
      { stdio: 'inherit', env: { ...process.env, VPNMASQ_FASTSYNC_CHILD: '1' } });
    process.exitCode = r.status ?? 1;
  } finally {
    ip('netns', 'delete', ns);
  }
} else {
  const { FastPath, fastPathCounts, fastPathKey, fastPathValue, parseFastPathValue } = await import(pathToFileURL(join(REPO, 'dist', 'tun', 'fastpath.js')).href);
  const fp = FastPath.open('fs0', 'fs1', 2 * flows);
  try {
    const keys = [];
    for (let i = 0; i < 2 * flows; i++) {
      const k = fastPathKey({ saddr: `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`, daddr: '198.51.100.7', sport: 1024 + (i % 60000), dport: 443, proto: 6 });
      keys.push(k);
      fp.put(k, fastPathValue({ newSaddr: '203.0.113.1', newDaddr: '198.51.100.7', newSport: 2000, newDport: 443, inIfindex: 1, outIfindex: 2, win: 65535, end: i, endKnown: true, packets: i }));
    }
    const byKey = new Map(keys.map((k, i) => [k.toString('latin1'), i]));
    const ms = (t) => Number(process.hrtime.bigint() - t) / 1e6;
    const value = Buffer.alloc(48), token = Buffer.alloc(8), kb = Buffer.alloc(16 * 1024), vb = Buffer.alloc(48 * 1024);
    const counts = { packets: 0, bytes: 0, end: 0, endKnown: false };
    console.log(`table: ${2 * flows} entries (${flows} flows)`);
    for (let run = 1; run <= runs; run++) {
      let t = process.hrtime.bigint();
      let sum = 0;
      for (const k of keys) if (fp.get(k, value)) sum += parseFastPathValue(value).packets;
      const one = ms(t);
      t = process.hrtime.bigint();
      let met = 0, calls = 0, sum2 = 0;
      for (let first = true; ;) {
        const b = fp.readBatch(token, first, kb, vb);
        first = false;
        calls++;
        for (let i = 0; i < b.count; i++) {
          if (byKey.get(kb.toString('latin1', 16 * i, 16 * i + 16)) === undefined) continue;
          met++;
          sum2 += fastPathCounts(vb, 48 * i, counts).packets;
        }
        if (b.done) break;
      }
      const batch = ms(t);
      if (met !== keys.length || sum !== sum2) throw new Error(`the walks disagree: ${met} of ${keys.length} entries met, sums ${sum} / ${sum2}`);
      console.log(`run ${run}: one lookup an entry ${one.toFixed(1)} ms; batched walk ${batch.toFixed(1)} ms (${calls} system calls), ${(one / batch).toFixed(2)}x`);
    }
  } finally {
    fp.close();
  }
}
