// A process inside a network namespace that runs the src/net modules for
// the routing and WAN-watch tests: `ip netns exec NS node harness.mjs`,
// one JSON request per line on stdin, one reply per line on stdout.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';

export const NET_MODULES = ['iface', 'sysctl', 'nft', 'routes', 'guard', 'wanwatch'];

/** Transpiles src/net/*.ts to outDir/net/*.js (no type check: other people's files don't matter). */
export function buildNetModules(outDir: string): void {
  const srcDir = fileURLToPath(new URL('../../src/net/', import.meta.url));
  mkdirSync(join(outDir, 'net'), { recursive: true });
  writeFileSync(join(outDir, 'package.json'), '{"type":"module"}\n');
  for (const f of NET_MODULES) {
    const out = ts.transpileModule(readFileSync(join(srcDir, `${f}.ts`), 'utf8'), {
      compilerOptions: { module: ts.ModuleKind.ESNext, target: ts.ScriptTarget.ES2022 },
      fileName: `${f}.ts`,
    });
    writeFileSync(join(outDir, 'net', `${f}.js`), out.outputText);
  }
  writeFileSync(join(outDir, 'harness.mjs'), HARNESS);
}

const HARNESS = `
import { createInterface } from 'node:readline';
import { readdirSync, readFileSync } from 'node:fs';
const mods = {};
for (const m of ${JSON.stringify(NET_MODULES)}) mods[m] = await import(new URL('./net/' + m + '.js', import.meta.url).href);
const out = (o) => process.stdout.write(JSON.stringify(o) + '\\n');
let routing = null, watch = null;
function children() {
  const res = [];
  for (const p of readdirSync('/proc')) {
    if (!/^\\d+$/.test(p)) continue;
    try {
      const st = readFileSync('/proc/' + p + '/stat', 'utf8');
      const rest = st.slice(st.lastIndexOf(')') + 2).split(' ');
      if (Number(rest[1]) === process.pid) res.push({ pid: Number(p), comm: st.slice(st.indexOf('(') + 1, st.lastIndexOf(')')), state: rest[0] });
    } catch {}
  }
  return res;
}
const ops = {
  setup: (plan) => { routing = mods.routes.setupRouting(plan); return routing.wanAddress(); },
  update: (addr) => { routing.updateWanAddress(addr); return routing.wanAddress(); },
  teardown: () => routing.teardown(),
  stale: (spec) => mods.routes.teardownStale(spec),
  call: (mod, fn, ...args) => mods[mod][fn](...args),
  watch: (dev, opts) => { watch = mods.wanwatch.watchWanAddress(dev, (addr) => out({ event: 'addr', addr, t: Date.now() }), opts); return watch.current(); },
  current: () => watch.current(),
  stopWatch: () => watch.stop(),
  children,
};
createInterface({ input: process.stdin }).on('line', (line) => {
  const { id, op, args } = JSON.parse(line);
  try { const result = ops[op](...(args ?? [])); out({ id, ok: true, result: result ?? null }); }
  catch (e) { out({ id, ok: false, error: String(e && e.message || e) }); }
});
out({ ready: true });
`;

/** A harness process inside a namespace. */
export class Harness {
  readonly proc: ChildProcess;
  readonly events: { addr: string | null; t: number }[] = [];
  private buf = '';
  private nextId = 1;
  private waiters = new Map<number, (m: { ok: boolean; result?: unknown; error?: string }) => void>();
  private stderr = '';
  readonly ready: Promise<void>;
  readonly exited: Promise<void>;

  constructor(ns: string, dir: string, env?: NodeJS.ProcessEnv) {
    this.proc = spawn('ip', ['netns', 'exec', ns, process.execPath, join(dir, 'harness.mjs')], {
      stdio: ['pipe', 'pipe', 'pipe'],
      env: env ?? process.env,
    });
    let onReady!: () => void;
    this.ready = new Promise((r) => (onReady = r));
    this.exited = new Promise((r) => this.proc.on('exit', () => r()));
    this.proc.stderr!.on('data', (d) => (this.stderr += d));
    this.proc.stdout!.setEncoding('utf8');
    this.proc.stdout!.on('data', (d: string) => {
      this.buf += d;
      let nl: number;
      while ((nl = this.buf.indexOf('\n')) >= 0) {
        const m = JSON.parse(this.buf.slice(0, nl));
        this.buf = this.buf.slice(nl + 1);
        if (m.ready) onReady();
        else if (m.event) this.events.push({ addr: m.addr, t: m.t });
        else this.waiters.get(m.id)?.(m);
      }
    });
  }

  async call(op: string, ...args: unknown[]): Promise<any> {
    await Promise.race([this.ready, this.exited.then(() => Promise.reject(new Error(`harness died: ${this.stderr}`)))]);
    const id = this.nextId++;
    const reply = new Promise<{ ok: boolean; result?: unknown; error?: string }>((r) => this.waiters.set(id, r));
    this.proc.stdin!.write(JSON.stringify({ id, op, args }) + '\n');
    type Reply = { ok: boolean; result?: unknown; error?: string };
    const died = this.exited.then((): Reply => ({ ok: false, error: `harness died: ${this.stderr}` }));
    const m = await Promise.race([reply, died]);
    this.waiters.delete(id);
    if (!m.ok) throw new Error(m.error);
    return m.result;
  }

  /** SIGKILL: a crash, leaving whatever state it installed. */
  async crash(): Promise<void> {
    this.proc.kill('SIGKILL');
    await this.exited;
  }

  async close(): Promise<void> {
    if (this.proc.exitCode !== null || this.proc.signalCode !== null) return;
    this.proc.stdin!.end();
    this.proc.kill('SIGTERM');
    await this.exited;
  }
}
