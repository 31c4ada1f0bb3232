// The .ipk from firmware/build-ipk.sh: opkg's format, its control fields
// and scripts, what it holds, the program run from the unpacked tree,
// reproducible bytes, and the aarch64 variant.
import { describe, it, expect, beforeAll } from 'vitest';
import { existsSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { skipUnless } from '../helpers/prereq.js';
import { ROOT, VERSION, ok, okAsync, run, runAsync, tmpDirs, tree } from '../helpers/shell.js';
import { elfMachine, readIpk } from '../helpers/ipk.js';

const FILES = join(ROOT, 'firmware/files');
const BUILD_IPK = join(ROOT, 'firmware/build-ipk.sh');
const tmp = tmpDirs();

const DATA_FILES = [
  'etc/config/vpnmasq',
  'etc/hotplug.d/iface/30-vpnmasq',
  'etc/init.d/vpnmasq',
  'etc/init.d/vpnmasq-guard',
  'usr/bin/vpnmasq',
  'etc/uci-defaults/90-vpnmasq-firewall',
  'usr/libexec/rpcd/vpnmasq',
  'usr/share/rpcd/acl.d/vpnmasq.json',
  'usr/lib/vpnmasq/package.json',
  'usr/lib/vpnmasq/dist/cli/main.js',
  'usr/lib/vpnmasq/dist/supervisor.js',
  'usr/lib/vpnmasq/dist/engine.wasm',
  'usr/lib/vpnmasq/build/Release/vpnmasq_tun.node',
  'usr/lib/vpnmasq/node_modules/pino/package.json',
  'usr/lib/vpnmasq/node_modules/node-gyp-build/package.json',
  'usr/lib/vpnmasq/node_modules/@assemblyscript/loader/package.json',
];

describe.skipIf(skipUnless({ tools: ['tar', 'gzip', 'g++'] }))('firmware/build-ipk.sh', () => {
  let out: string;
  let ipk: string;
  let x: ReturnType<typeof readIpk>;
  beforeAll(async () => {
    out = tmp('ipk');
    // npm test has just built dist/
    const r = await okAsync(runAsync('sh', [BUILD_IPK, '--no-build', '--out', out]), 'build-ipk.sh');
    ipk = r.trim().split('\n').at(-1)!;
    x = readIpk(ipk, join(out, 'x86_64'));
  }, 200_000);

  it('is named NAME_VERSION-RELEASE_ARCH.ipk', () => {
    expect(ipk).toBe(join(out, `vpnmasq_${VERSION}-1_x86_64.ipk`));
  });

  it("is opkg's format: a tar.gz of ./debian-binary, ./data.tar.gz, ./control.tar.gz owned by root", () => {
    expect(x.outerNames).toEqual(['./debian-binary', './data.tar.gz', './control.tar.gz']);
    for (const l of [...x.outer, ...x.controlList, ...x.dataList]) expect(l.split(/\s+/)[1], l).toBe('0/0');
    expect(readFileSync(join(out, 'x86_64', 'debian-binary'), 'utf8')).toBe('2.0\n');
    // gzip magic on all three archives
    for (const f of [ipk, join(out, 'x86_64', 'data.tar.gz'), join(out, 'x86_64', 'control.tar.gz')]) {
      expect(readFileSync(f).subarray(0, 2)).toEqual(Buffer.from([0x1f, 0x8b]));
    }
    // ./-relative names inside, as ipkg-build writes them
    for (const n of x.names) expect(n.startsWith('./'), n).toBe(true);
  });

  it('control: the fields opkg reads, conffiles, postinst/prerm', () => {
    const f = x.fields;
    expect(f.get('Package')).toBe('vpnmasq');
    expect(f.get('Version')).toBe(`${VERSION}-1`);
    expect(f.get('Architecture')).toBe('x86_64');
    expect(f.get('Depends')!.split(/,\s*/)).toEqual(expect.arrayContaining(['node', 'kmod-tun', 'ip-full']));
    // the TUN addon is C++: libstdc++ is OpenWrt's libstdcpp
    expect(f.get('Depends')!.split(/,\s*/)).toContain('libstdcpp');
    expect(f.get('License')).toBe('MIT');
    expect(f.get('Section')).toBe('net');
    expect(Number(f.get('Installed-Size'))).toBeGreaterThan(100_000);
    expect(f.get('Description')).toBeTruthy();
    expect(readFileSync(join(x.ctrl, 'conffiles'), 'utf8')).toBe('/etc/config/vpnmasq\n');
    const postinst = readFileSync(join(x.ctrl, 'postinst'), 'utf8');
    const prerm = readFileSync(join(x.ctrl, 'prerm'), 'utf8');
    expect(postinst).toMatch(/-z "\$\{IPKG_INSTROOT:-\}"/);
    expect(postinst).toContain('/etc/init.d/vpnmasq enable');
    expect(prerm).toMatch(/-z "\$\{IPKG_INSTROOT:-\}"/);
    expect(prerm).toContain('/etc/init.d/vpnmasq stop');
    // removal (not an upgrade) takes the fail-closed guard away
    expect(prerm).toContain('/usr/bin/vpnmasq guard remove');
    expect(postinst).toContain('/etc/init.d/vpnmasq-guard enable');
    expect(f.get('Depends')!.split(/,\s*/)).toEqual(expect.arrayContaining(['nftables', 'kmod-nft-fib']));
    for (const s of ['postinst', 'prerm']) {
      expect(statSync(join(x.ctrl, s)).mode & 0o111).toBe(0o111);
      ok(run('sh', ['-n', join(x.ctrl, s)]), `sh -n ${s}`);
    }
  });

  it('postinst/prerm do nothing in an image build (IPKG_INSTROOT set)', () => {
    const dir = tmp('instroot');
    // the build machine's own /etc/init.d is never touched: the trace shows no call to it
    for (const s of ['postinst', 'prerm']) {
      const r = run('sh', ['-x', join(x.ctrl, s)], { env: { PATH: process.env.PATH, IPKG_INSTROOT: dir } });
      expect(r.status).toBe(0);
      expect(r.stderr).not.toContain('/etc/init.d/vpnmasq enable');
      expect(r.stderr).not.toContain('/etc/init.d/vpnmasq stop');
    }
  });

  it('data: the program, the addon, production node_modules only, the OpenWrt files', () => {
    const files = tree(x.data);
    for (const f of DATA_FILES) expect(files, f).toContain(f);
    // pino-pretty is a dev dependency (logs fall back to text lines without it)
    for (const dev of ['typescript', 'vitest', 'assemblyscript', '@types', 'fast-check', '.bin', 'pino-pretty']) {
      expect(files, dev).not.toContain(`usr/lib/vpnmasq/node_modules/${dev}/`);
    }
    expect(files.filter((f) => /^usr\/lib\/vpnmasq\/dist\/.*\.(map|wat)$/.test(f))).toEqual([]);
    const mode = (f: string) => statSync(join(x.data, f)).mode & 0o777;
    expect(mode('etc/init.d/vpnmasq')).toBe(0o755);
    expect(mode('usr/bin/vpnmasq')).toBe(0o755);
    // vpnmasq-respawn is for images without procd: the package does not carry it
    expect(files.filter((f) => f.startsWith('usr/sbin/'))).toEqual([]);
    expect(mode('usr/libexec/rpcd/vpnmasq')).toBe(0o755);
    expect(mode('etc/uci-defaults/90-vpnmasq-firewall')).toBe(0o755);
    expect(mode('etc/config/vpnmasq')).toBe(0o600);
    expect(readFileSync(join(x.data, 'etc/config/vpnmasq'), 'utf8')).toBe(readFileSync(join(FILES, 'etc/config/vpnmasq'), 'utf8'));
    expect(readFileSync(join(x.data, 'usr/bin/vpnmasq'), 'utf8')).toContain('/usr/lib/vpnmasq/dist/cli/main.js');
    expect(elfMachine(join(x.data, 'usr/lib/vpnmasq/build/Release/vpnmasq_tun.node'))).toBe(62);
  });

  it('runs from the unpacked tree: check-config on its config, the addon loads', () => {
    const lib = join(x.data, 'usr/lib/vpnmasq');
    const r = run('node', [join(lib, 'dist/cli/main.js'), 'check-config', '--config', join(x.data, 'etc/config/vpnmasq')]);
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/etc\/config\/vpnmasq: OK/);
    const bad = join(out, 'bad.conf');
    writeFileSync(bad, "config vpnmasq 'main'\n\toption lan_device 'br-lan'\n\toption wan_device 'wan'\n\toption max_flows 'lots'\n");
    const rb = run('node', [join(lib, 'dist/cli/main.js'), 'check-config', '--config', bad]);
    expect(rb.status).toBe(1);
    expect(rb.stderr).toMatch(/bad\.conf:4: .*max_flows/);
    const load = run('node', ['--input-type=module', '-e',
      `const m = await import(${JSON.stringify(join(lib, 'dist/tun/tun.js'))}); console.log(typeof m.loadNative().openTun)`]);
    expect(load.stderr).toBe('');
    expect(load.stdout.trim()).toBe('function');
  });

  it('without pino-pretty (a dev dependency) a terminal\'s pretty logs fall back to text lines', () => {
    const lib = join(x.data, 'usr/lib/vpnmasq');
    const r = run('node', ['--input-type=module', '-e',
      `const { logFormat, createLogger } = await import(${JSON.stringify(join(lib, 'dist/log.js'))});
console.log(logFormat('pretty')); createLogger('info', { format: 'pretty' }).warn({ a: 1 }, 'still readable');`]);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toBe('text\n');
    expect(r.stderr).toBe('still readable level=warn a=1\n');
  });

  it('is reproducible: the same tree gives the same bytes', async () => {
    const again = tmp('ipk2');
    const r = await okAsync(runAsync('sh', [BUILD_IPK, '--no-build', '--out', again]), 'build-ipk.sh again');
    expect(readFileSync(r.trim().split('\n').at(-1)!)).toEqual(readFileSync(ipk));
  }, 200_000);

  describe.skipIf(skipUnless({ tools: ['aarch64-linux-gnu-g++'] }))('--arch aarch64', () => {
    it('has the aarch64 addon and the opkg arch aarch64_generic', async () => {
      const dir = tmp('ipk-a64');
      const r = await okAsync(runAsync('sh', [BUILD_IPK, '--no-build', '--arch', 'aarch64', '--out', dir]), 'build-ipk.sh --arch aarch64');
      const file = r.trim().split('\n').at(-1)!;
      expect(file).toBe(join(dir, `vpnmasq_${VERSION}-1_aarch64_generic.ipk`));
      const a = readIpk(file, join(dir, 'x'));
      expect(a.fields.get('Architecture')).toBe('aarch64_generic');
      expect(elfMachine(join(a.data, 'usr/lib/vpnmasq/build/Release/vpnmasq_tun.node'))).toBe(183);
      expect(existsSync(join(ROOT, 'firmware/out/addon-aarch64/vpnmasq_tun.node'))).toBe(true);
      // everything but the addon is the same as in the x86_64 package
      const strip = (t: string[]) => t.filter((f) => !f.endsWith('vpnmasq_tun.node'));
      expect(strip(tree(a.data))).toEqual(strip(tree(x.data)));
    }, 200_000);
  });

  it('refuses an unknown arch', () => {
    const r = run('sh', [BUILD_IPK, '--no-build', '--arch', 'mips']);
    expect(r.status).toBe(2);
    expect(r.stderr).toContain("unknown arch 'mips'");
  });
});
