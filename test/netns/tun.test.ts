// Real TUN devices, inside a network namespace created (and deleted) here.
//
// The vitest worker cannot enter a namespace, so each scenario runs in a
// child `ip netns exec NS node child.mjs`. The child imports the real
// src/tun/tun.ts (TunDevice over the built addon) through a tiny loader hook
// that transpiles .ts with the project's own `typescript`, so the wrapper, the
// addon and the libuv poller are all exercised, not a copy of them.
// The children load it from a world-readable copy of the checkout's
// package.json, src/, addon, node-gyp-build and typescript
// (test/helpers/unprivileged.ts): one of them runs as nobody, who may not be
// able to enter the directory the checkout sits in.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { execFile, execFileSync } from 'node:child_process';
import { existsSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { skipUnless } from '../helpers/prereq.js';
import { readableCopy, type ReadableCopy } from '../helpers/unprivileged.js';
import { TunDevice } from '../../src/tun/tun.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const ADDON = path.join(ROOT, 'build', 'Release', 'vpnmasq_tun.node');
const NS = `vmtun-${process.pid}`;

// The copy the children run from; child() writes each script into it, so
// this names the copy's src/tun/tun.ts.
let copy: ReadableCopy | undefined;
const TUN_TS = './src/tun/tun.ts';

// Loader hook: .ts -> ESM JavaScript via typescript.transpileModule.
const hooks = (root: string) => `
import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
const ts = createRequire(${JSON.stringify(path.join(root, 'package.json'))})('typescript');
export async function load(url, context, next) {
  if (!url.startsWith('file:') || !url.endsWith('.ts')) return next(url, context);
  const source = ts.transpileModule(await readFile(new URL(url), 'utf8'), {
    fileName: url,
    compilerOptions: { module: ts.ModuleKind.ESNext, target: ts.ScriptTarget.ES2022 },
  }).outputText;
  return { format: 'module', source, shortCircuit: true };
}
`;

// Scenario 1 (root, in NS): open t0, read a UDP packet the kernel routes to
// it, write a crafted one back, close. Prints one JSON line. It never calls
// process.exit: if the poller kept the loop alive after close(), the child
// would hang and the test would time out.
const IO_CHILD = `
import { TunDevice, writeDrops } from ${JSON.stringify(TUN_TS)};
import { execFileSync } from 'node:child_process';
import dgram from 'node:dgram';

const SLOT = 2048, MAX = 16, SLOT_BASE = 0, LEN_BASE = SLOT * MAX, VERDICT_BASE = LEN_BASE + 4 * MAX;
const mem = new WebAssembly.Memory({ initial: 1 }).buffer; // what the engine will hand us
const bytes = new Uint8Array(mem);
const dv = new DataView(mem);
const ip4 = (p, o) => Array.from(p.subarray(o, o + 4)).join('.');
const out = {};

const dev = TunDevice.open('t0');
out.name = dev.name;
execFileSync('ip', ['addr', 'add', '10.200.0.1/24', 'dev', 't0']);
execFileSync('ip', ['link', 'set', 't0', 'up']);

// --- kernel -> readBatch -------------------------------------------------
const tx = dgram.createSocket('udp4');
out.read = await new Promise((resolve, reject) => {
  const timer = setTimeout(() => reject(new Error('no UDP packet seen on t0 within 5 s')), 5000);
  let wakeups = 0;
  dev.onReadable(() => {
    wakeups++;
    const n = dev.readBatch(mem, SLOT_BASE, SLOT, LEN_BASE, MAX);
    for (let i = 0; i < n; i++) {
      const len = dv.getUint32(LEN_BASE + 4 * i, true);
      const p = bytes.subarray(SLOT_BASE + i * SLOT, SLOT_BASE + i * SLOT + len);
      // other traffic (IPv6 router solicitations, MLD) may show up too
      if (p[0] >> 4 !== 4 || p[9] !== 17 || ip4(p, 16) !== '10.200.0.2') continue;
      const ihl = (p[0] & 15) * 4;
      clearTimeout(timer);
      resolve({
        n, len, wakeups, version: p[0] >> 4, ihl, protocol: p[9],
        totalLength: (p[2] << 8) | p[3], src: ip4(p, 12), dst: ip4(p, 16),
        dstPort: (p[ihl + 2] << 8) | p[ihl + 3],
        payload: Buffer.from(p.subarray(ihl + 8)).toString(),
      });
    }
  });
  tx.send('hello-tun', 9999, '10.200.0.2', (err) => err && reject(err));
});
tx.close();

// --- writeBatch -> kernel ------------------------------------------------
function sum16(buf, start, end, acc = 0) {
  for (let i = start; i < end; i += 2) acc += (buf[i] << 8) | (i + 1 < end ? buf[i + 1] : 0);
  return acc;
}
const fold = (acc) => { while (acc > 0xffff) acc = (acc & 0xffff) + (acc >>> 16); return ~acc & 0xffff; };
function udp4(slot, src, dst, sport, dport, text) {
  const payload = Buffer.from(text);
  const total = 20 + 8 + payload.length;
  const p = bytes.subarray(SLOT_BASE + slot * SLOT, SLOT_BASE + slot * SLOT + total);
  p.fill(0);
  p.set([0x45, 0, total >> 8, total & 255, 0x12, 0x34, 0x40, 0, 64, 17, 0, 0, ...src, ...dst]);
  const ipsum = fold(sum16(p, 0, 20));
  p[10] = ipsum >> 8; p[11] = ipsum & 255;
  const ulen = 8 + payload.length;
  p.set([sport >> 8, sport & 255, dport >> 8, dport & 255, ulen >> 8, ulen & 255, 0, 0], 20);
  p.set(payload, 28);
  // pseudo-header: src, dst, zero+proto, udp length
  let acc = sum16(p, 12, 20) + 17 + ulen;
  let usum = fold(sum16(p, 20, total, acc));
  if (usum === 0) usum = 0xffff;
  p[26] = usum >> 8; p[27] = usum & 255;
  dv.setUint32(LEN_BASE + 4 * slot, total, true);
}

const rx = dgram.createSocket('udp4');
await new Promise((r) => rx.bind(0, '10.200.0.1', r));
const port = rx.address().port;
const received = [];
rx.on('message', (msg, rinfo) => received.push({ text: msg.toString(), from: rinfo.address + ':' + rinfo.port }));

const WANT = 1;
udp4(0, [10, 200, 0, 2], [10, 200, 0, 1], 4000, port, 'decoy: verdict 0, must not arrive');
bytes[VERDICT_BASE + 0] = 0;
udp4(1, [10, 200, 0, 2], [10, 200, 0, 1], 4242, port, 'from-the-engine');
bytes[VERDICT_BASE + 1] = WANT;
udp4(2, [10, 200, 0, 2], [10, 200, 0, 1], 4343, port, 'bad length: must be dropped');
dv.setUint32(LEN_BASE + 8, SLOT + 1, true);
bytes[VERDICT_BASE + 2] = WANT;

const drops0 = writeDrops();
const written = dev.writeBatch(mem, SLOT_BASE, SLOT, LEN_BASE, VERDICT_BASE, 3, WANT);
await new Promise((r) => setTimeout(r, 300));
rx.close();
out.write = { written, drops: writeDrops() - drops0, received };

// --- bounds and close ----------------------------------------------------
try { dev.readBatch(new ArrayBuffer(100), 0, SLOT, 0, 1); out.rangeError = null; }
catch (e) { out.rangeError = e.constructor.name + ': ' + e.message; }
dev.close();
dev.close();
try { execFileSync('ip', ['link', 'show', 't0'], { stdio: 'ignore' }); out.goneAfterClose = false; }
catch { out.goneAfterClose = true; }
try { dev.readBatch(mem, 0, SLOT, LEN_BASE, 1); } catch (e) { out.afterClose = e.message; }
console.log(JSON.stringify(out));
`;

// Scenario 2 (in NS, without CAP_NET_ADMIN): opening must fail cleanly.
const EPERM_CHILD = `
import { TunDevice } from ${JSON.stringify(TUN_TS)};
try {
  TunDevice.open('t1');
  console.log(JSON.stringify({ opened: true }));
} catch (e) {
  console.log(JSON.stringify({ message: e.message, code: e.code, syscall: e.syscall }));
}
`;

function run(cmd: string, args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { timeout: 30_000, encoding: 'utf8' }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${cmd} ${args.join(' ')} failed: ${err.message}\nstdout: ${stdout}\nstderr: ${stderr}`));
      else resolve(stdout);
    });
  });
}

function child(script: string, prefix: string[] = []): Promise<string> {
  const dir = copy!.root;
  const file = path.join(dir, `child-${Math.random().toString(36).slice(2)}.mjs`);
  writeFileSync(file, script, { mode: 0o644 });
  const register = `data:text/javascript,import{register}from"node:module";register(${JSON.stringify(
    pathToFileURL(path.join(dir, 'hooks.mjs')).href,
  )});`;
  return run('ip', ['netns', 'exec', NS, ...prefix, process.execPath, '--import', register, file]);
}

const lastLine = (s: string) => JSON.parse(s.trim().split('\n').at(-1)!);

describe.skipIf(skipUnless({ root: true, tun: true, tools: ['ip', 'setpriv'] }))('TunDevice on a real TUN (netns)', () => {
  beforeAll(() => {
    if (!existsSync(ADDON)) throw new Error(`${ADDON} is missing: run \`npm run build:addon\` first`);
    copy = readableCopy(['src', 'build/Release/vpnmasq_tun.node'], ['typescript']);
    writeFileSync(path.join(copy.root, 'hooks.mjs'), hooks(copy.root), { mode: 0o644 });
    execFileSync('ip', ['netns', 'add', NS]);
  });

  afterAll(() => {
    try {
      execFileSync('ip', ['netns', 'del', NS], { stdio: 'ignore' });
    } catch {
      // never created
    }
    copy?.cleanup();
  });

  it('reads a kernel-routed UDP packet and injects a crafted one, zero-copy into wasm memory', async () => {
    const out = lastLine(await child(IO_CHILD));
    expect(out.name).toBe('t0');

    expect(out.read).toMatchObject({
      version: 4,
      ihl: 20,
      protocol: 17,
      src: '10.200.0.1',
      dst: '10.200.0.2',
      dstPort: 9999,
      payload: 'hello-tun',
    });
    expect(out.read.len).toBe(out.read.totalLength);
    expect(out.read.wakeups).toBeGreaterThanOrEqual(1);

    // slot 0 had the wrong verdict, slot 2 a length over slotSize
    expect(out.write.written).toBe(1);
    expect(out.write.drops).toBe(1);
    expect(out.write.received).toEqual([{ text: 'from-the-engine', from: '10.200.0.2:4242' }]);

    expect(out.rangeError).toMatch(/^RangeError: readBatch: slots or lengths fall outside the buffer/);
    expect(out.goneAfterClose).toBe(true);
    expect(out.afterClose).toBe('TUN device "t0" is closed');
  });

  it('fails with a one-line EPERM error when root lacks CAP_NET_ADMIN', async () => {
    // uid 0 can still open /dev/net/tun, so this reaches TUNSETIFF, which
    // is where the kernel checks CAP_NET_ADMIN.
    const out = lastLine(
      await child(EPERM_CHILD, ['setpriv', '--bounding-set=-net_admin', '--inh-caps=-net_admin']),
    );
    expect(out).toEqual({
      message: 'cannot create TUN device "t1": Operation not permitted (EPERM) — run as root with CAP_NET_ADMIN',
      code: 'EPERM',
      syscall: 'ioctl',
    });
  });

  it('fails with a one-line error for an unprivileged user', async () => {
    const out = lastLine(await child(EPERM_CHILD, ['setpriv', '--reuid=65534', '--regid=65534', '--clear-groups']));
    // Stock Debian has /dev/net/tun 0666: open succeeds and TUNSETIFF says
    // EPERM. Hardened hosts (0600) refuse the open itself with EACCES.
    const worldRw = (statSync('/dev/net/tun').mode & 0o006) === 0o006;
    if (worldRw) {
      expect(out).toEqual({
        message: 'cannot create TUN device "t1": Operation not permitted (EPERM) — run as root with CAP_NET_ADMIN',
        code: 'EPERM',
        syscall: 'ioctl',
      });
    } else {
      expect(out).toEqual({
        message:
          'cannot create TUN device "t1": open /dev/net/tun: Permission denied (EACCES) — run as root with CAP_NET_ADMIN',
        code: 'EACCES',
        syscall: 'open',
      });
    }
  });

  it('rejects a name the kernel would truncate, before touching the kernel', () => {
    let err: (Error & { code?: string }) | undefined;
    try {
      TunDevice.open('a-name-of-16-byt');
    } catch (e) {
      err = e as Error & { code?: string };
    }
    expect(err?.code).toBe('EINVAL');
    expect(err?.message).toBe(
      'cannot create TUN device "a-name-of-16-byt": Invalid argument (EINVAL) — interface names are 1 to 15 bytes, without spaces, \'/\' or \':\'',
    );
    expect(() => TunDevice.open('two\nlines')).toThrow(expect.objectContaining({ code: 'EINVAL' }));
  });
});
