// The Dockerfile: linted (dockerfile-utils), its stages and what they run
// checked against .ci/run and .dockerignore, and its build commands run in a
// copy of what it copies (there is no Docker engine on the CI machines).
import { describe, it, expect, beforeAll } from 'vitest';
import { cpSync, existsSync, readFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { inCI, skipUnless } from '../helpers/prereq.js';
import { ROOT, cleanEnv, okAsync, run, runAsync, tmpDirs } from '../helpers/shell.js';

const DOCKERFILE = join(ROOT, 'Dockerfile');
const tmp = tmpDirs();

type Instr = { kw: string; args: string; line: number };

function parseDockerfile(text: string): Instr[] {
  const out: Instr[] = [];
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    if (/^\s*(#|$)/.test(lines[i])) continue;
    const start = i;
    let s = lines[i];
    while (s.endsWith('\\')) {
      s = s.slice(0, -1);
      i++;
      while (i < lines.length && /^\s*#/.test(lines[i])) i++; // comments inside a continuation
      s += ' ' + (lines[i] ?? '').trim();
    }
    const m = s.trim().match(/^(\S+)\s+([\s\S]*)$/)!;
    out.push({ kw: m[1].toUpperCase(), args: m[2].replace(/\s+/g, ' ').trim(), line: start + 1 });
  }
  return out;
}

/** The npm_config_nodedir for this machine (the Dockerfile's is the node image's /usr/local). */
function hostNodedir(): string | undefined {
  for (const d of ['/usr/local', '/usr']) if (existsSync(join(d, 'include/node/node_api.h'))) return d;
  return undefined;
}

describe('Dockerfile', () => {
  const text = readFileSync(DOCKERFILE, 'utf8');
  const instrs = parseDockerfile(text);
  const stages: { from: string; instrs: Instr[] }[] = [];
  for (const ins of instrs) {
    if (ins.kw === 'FROM') stages.push({ from: ins.args, instrs: [] });
    else stages.at(-1)!.instrs.push(ins);
  }

  it('lints clean (dockerfile-utils)', () => {
    const bin = process.env.VPNMASQ_DOCKERFILE_LINT ?? join(ROOT, 'node_modules/.bin/dockerfile-utils');
    if (!existsSync(bin)) {
      if (inCI) throw new Error(`${bin} missing: dockerfile-utils is a devDependency`);
      console.warn(`skipping the Dockerfile lint: ${bin} missing (npm install)`);
      return;
    }
    const r = run(bin, ['lint', '--json', DOCKERFILE]);
    expect(JSON.parse(r.stdout)).toEqual([]);
    expect(r.status).toBe(0);
  });

  it('two stages: node:20-bookworm build, node:20-bookworm-slim runtime running `vpnmasq run`', () => {
    expect(stages.map((s) => s.from)).toEqual(['node:20-bookworm AS build', 'node:20-bookworm-slim']);
    const last = stages[1].instrs;
    expect(last.find((i) => i.kw === 'ENTRYPOINT')!.args).toBe('["node", "/opt/vpnmasq/dist/cli/main.js"]');
    expect(last.find((i) => i.kw === 'CMD')!.args).toBe('["run", "--config", "/etc/config/vpnmasq"]');
    expect(last.find((i) => i.kw === 'COPY' && i.args.endsWith('/etc/config/vpnmasq'))!.args)
      .toBe('firmware/files/etc/config/vpnmasq /etc/config/vpnmasq');
    expect(text).toContain('--cap-add NET_ADMIN --device /dev/net/tun');
  });

  it('the runtime stage\'s RUN commands are what .ci/run runs (apt-get update, apt-get install of the same packages)', () => {
    const ciRun = readFileSync(join(ROOT, '.ci/run'), 'utf8');
    // the apt-get install command of .ci/run with its continuation lines
    const lines = ciRun.split('\n');
    let i = lines.findIndex((l) => /^\s*apt-get install /.test(l));
    expect(i).toBeGreaterThanOrEqual(0);
    let ciInstall = lines[i];
    while (ciInstall.endsWith('\\')) ciInstall = ciInstall.slice(0, -1) + ' ' + lines[++i];
    const ciPackages = new Set(ciInstall.split(/\s+/).filter((w) => /^[a-z0-9][a-z0-9.+-]+$/.test(w)));
    const runs = stages[1].instrs.filter((i) => i.kw === 'RUN');
    expect(runs.length).toBeGreaterThan(0);
    for (const r of runs) {
      for (const cmd of r.args.split('&&').map((c) => c.trim())) {
        if (cmd === 'apt-get update') expect(ciRun).toContain('apt-get update');
        else if (cmd === 'rm -rf /var/lib/apt/lists/*') continue; // the image's cleanup
        else {
          const m = cmd.match(/^apt-get install -y --no-install-recommends ((?:[a-z0-9.+-]+ ?)+)$/);
          expect(m, `line ${r.line}: "${cmd}" is not a command CI runs`).not.toBeNull();
          for (const p of m![1].trim().split(' ')) expect(ciPackages.has(p), `.ci/run installs ${p}`).toBe(true);
        }
      }
    }
  });

  it('.dockerignore keeps out the host\'s build output but none of what the build copies', () => {
    const ignore = readFileSync(join(ROOT, '.dockerignore'), 'utf8').split('\n').map((l) => l.trim()).filter((l) => l && !l.startsWith('#'));
    for (const p of ['**/node_modules', 'dist', 'build', '.git']) expect(ignore).toContain(p);
    for (const ins of instrs.filter((i) => i.kw === 'COPY' && !i.args.startsWith('--from'))) {
      for (const src of ins.args.split(' ').slice(0, -1)) {
        const top = src.replace(/^\.\//, '').split('/')[0];
        expect(ignore.includes(top) || ignore.includes(src), src).toBe(false);
      }
    }
  });

  describe.skipIf(skipUnless({ tools: ['make', 'g++', 'python3'] }))('the build stage\'s commands, run in a copy of what it copies', () => {
    let ctx: string;
    let runtime: string;
    beforeAll(async () => {
      ctx = tmp('docker-src'); // WORKDIR /src
      runtime = tmp('docker-opt'); // WORKDIR /opt/vpnmasq, and / for absolute paths
      const env: NodeJS.ProcessEnv = cleanEnv({ npm_config_prefer_offline: 'true' });
      for (const ins of stages[0].instrs) {
        if (ins.kw === 'ENV') {
          for (const m of ins.args.matchAll(/(\w+)=(\S+)/g)) env[m[1]] = m[2];
        } else if (ins.kw === 'COPY') {
          const parts = ins.args.split(' ');
          const dest = parts.at(-1)!;
          for (const src of parts.slice(0, -1)) {
            cpSync(join(ROOT, src), dest.endsWith('/') ? join(ctx, dest, src.split('/').at(-1)!) : join(ctx, dest), { recursive: true });
          }
        } else if (ins.kw === 'RUN') {
          // the node image keeps its headers in /usr/local/include/node; this machine's may be elsewhere
          const nodedir = hostNodedir();
          if (nodedir) env.npm_config_nodedir = nodedir; else delete env.npm_config_nodedir;
          await okAsync(runAsync('sh', ['-c', ins.args], { cwd: ctx, env, timeout: 400_000 }), `Dockerfile line ${ins.line}: RUN ${ins.args}`);
        } else if (!['WORKDIR'].includes(ins.kw)) {
          throw new Error(`build stage: unexpected ${ins.kw} on line ${ins.line}`);
        }
      }
      // the runtime stage's COPY lines
      for (const ins of stages[1].instrs.filter((i) => i.kw === 'COPY')) {
        const parts = ins.args.split(' ');
        const from = parts[0].startsWith('--from=build') ? parts.shift()! : null;
        const dest = parts.at(-1)!;
        for (const src of parts.slice(0, -1)) {
          const s = from ? join(ctx, relative('/src', src)) : join(ROOT, src);
          expect(existsSync(s), `COPY ${from ?? ''} ${src}`).toBe(true);
          const base = dest.startsWith('/') ? join(runtime, 'root') : runtime;
          const d = dest.endsWith('/') || dest === './' ? join(base, dest, src.split('/').at(-1)!) : join(base, dest);
          cpSync(s, d, { recursive: true });
        }
      }
    }, 600_000);

    it('built the addon, the Wasm and the JS, and pruned the dev dependencies', () => {
      expect(existsSync(join(ctx, 'build/Release/vpnmasq_tun.node'))).toBe(true);
      expect(existsSync(join(ctx, 'dist/engine.wasm'))).toBe(true);
      expect(existsSync(join(ctx, 'dist/cli/main.js'))).toBe(true);
      for (const dev of ['typescript', 'vitest', 'assemblyscript']) expect(existsSync(join(ctx, 'node_modules', dev)), dev).toBe(false);
      expect(existsSync(join(ctx, 'node_modules/pino'))).toBe(true);
      // the lockfile is used as it is, not rewritten
      expect(readFileSync(join(ctx, 'package-lock.json'), 'utf8')).toBe(readFileSync(join(ROOT, 'package-lock.json'), 'utf8'));
    });

    it('the runtime layout runs: ENTRYPOINT check-config on the copied config, the addon loads', () => {
      const entry = join(runtime, 'dist/cli/main.js');
      const r = run('node', [entry, 'check-config', '--config', join(runtime, 'root/etc/config/vpnmasq')]);
      expect(r.stderr).toBe('');
      expect(r.status).toBe(0);
      const load = run('node', ['--input-type=module', '-e',
        `const m = await import(${JSON.stringify(join(runtime, 'dist/tun/tun.js'))}); console.log(typeof m.loadNative().openTun)`]);
      expect(load.stderr).toBe('');
      expect(load.stdout.trim()).toBe('function');
    });
  });
});
