// `npm run fuzz -- --count N [--seed S] [--debug] [--lockstep] [--json]`
// Runs the engine fuzzer (src/tools/fuzz.ts) and prints packets/s, the
// counts, and every finding with its reproducer. Exit status 1 when there
// is any finding (a trap included), 2 on bad arguments.

import { formatFinding, runFuzz, type FuzzOptions } from './fuzz.js';

const USAGE = 'usage: npm run fuzz -- [--count N] [--seed S] [--debug] [--lockstep] [--keep K] [--json]';

function count(s: string | undefined): number {
  const m = /^([0-9.]+(?:e[0-9]+)?)([kKmM]?)$/.exec(s ?? '');
  if (!m) throw new Error(`--count: '${s}' is not a number (e.g. 200000, 200k, 10M)`);
  const n = Number(m[1]) * (m[2] === 'k' || m[2] === 'K' ? 1e3 : m[2] ? 1e6 : 1);
  if (!Number.isFinite(n) || n < 1) throw new Error(`--count: '${s}' is not a positive number`);
  return Math.round(n);
}

function parseArgs(argv: string[]): FuzzOptions & { json: boolean } {
  const o: FuzzOptions & { json: boolean } = { count: 1_000_000, seed: (Math.random() * 2 ** 32) >>> 0, json: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const val = () => { const v = argv[++i]; if (v === undefined) throw new Error(`${a} needs a value`); return v; };
    switch (a) {
      case '--count': case '-n': o.count = count(val()); break;
      case '--seed': {
        const v = val();
        if (!/^(0x[0-9a-fA-F]+|[0-9]+)$/.test(v) || Number(v) > 0xffffffff) throw new Error(`--seed: '${v}' is not a 32-bit number`);
        o.seed = Number(v) >>> 0;
        break;
      }
      case '--debug': o.debug = true; break;
      case '--lockstep': o.lockstep = true; break;
      case '--keep': o.keep = count(val()); break;
      case '--json': o.json = true; break;
      case '--help': case '-h': process.stdout.write(`${USAGE}\n`); process.exit(0);
      default: throw new Error(`unknown argument '${a}'`);
    }
  }
  return o;
}

let opts: ReturnType<typeof parseArgs>;
try {
  opts = parseArgs(process.argv.slice(2));
} catch (e) {
  process.stderr.write(`vpnmasq fuzz: ${(e as Error).message}\n${USAGE}\n`);
  process.exit(2);
}

process.stderr.write(`fuzzing ${opts.count} packets, seed ${opts.seed}${opts.debug ? ', debug build' : ''}${opts.lockstep ? ', lockstep with the other build' : ''}\n`);
const r = runFuzz({ ...opts, progress: (l) => process.stderr.write(`  ${l}\n`) });
if (opts.json) {
  process.stdout.write(`${JSON.stringify(r, null, 2)}\n`);
} else {
  for (const f of r.kept) process.stdout.write(`${formatFinding(f, r.seed)}\n\n`);
  const gens = Object.entries(r.generators).map(([k, [g, p]]) => `${k} ${g}/${p}`).join(', ');
  const drops = Object.entries(r.drops).sort((a, b) => b[1] - a[1]).map(([k, v]) => `${k} ${v}`).join(', ');
  process.stdout.write([
    `seed ${r.seed}: ${r.packets} packets in ${r.batches} batches, ${r.passed} passed, ${r.dropped} dropped`,
    `generated/passed: ${gens}`,
    `drops: ${drops}`,
    `${r.seconds.toFixed(1)} s, ${Math.round(r.packetsPerSecond)} packets/s (engine alone ${r.engineSeconds.toFixed(1)} s)`,
    `traps ${r.traps}, findings ${r.findings}${r.findings > r.kept.length ? ` (first ${r.kept.length} shown)` : ''}`,
  ].join('\n') + '\n');
}
process.exitCode = r.findings > 0 ? 1 : 0;
