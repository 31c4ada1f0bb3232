// The OpenWrt package Makefile (firmware/openwrt/vpnmasq/): its package
// definition, and its recipes run against a stand-in SDK, installing the
// same files as the .ipk from firmware/build-ipk.sh.
import { describe, it, expect, beforeAll } from 'vitest';
import { existsSync, lstatSync, mkdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { skipUnless } from '../helpers/prereq.js';
import { ROOT, VERSION, cleanEnv, ok, okAsync, run, runAsync, tmpDirs, tree } from '../helpers/shell.js';
import { elfMachine, readIpk } from '../helpers/ipk.js';

const PKG_DIR = join(ROOT, 'firmware/openwrt/vpnmasq');
const MAKEFILE = join(PKG_DIR, 'Makefile');
const BUILD_IPK = join(ROOT, 'firmware/build-ipk.sh');
const tmp = tmpDirs();

function makeDefine(text: string, name: string): string {
  const m = text.match(new RegExp(`^define ${name.replace(/[/$()]/g, '\\$&')}\\n([\\s\\S]*?)^endef$`, 'm'));
  if (!m) throw new Error(`no define ${name}`);
  return m[1];
}

// Stand-ins for the SDK's rules.mk and package.mk: just enough of their
// variables and of BuildPackage (prepare, configure, compile, install into
// $(PKG_INSTALL_ROOT)) to run the package's own recipes with the host's
// node/npm and g++ as the "target" toolchain.
const STUB_RULES_MK = `
INCLUDE_DIR:=$(TOPDIR)/include
BUILD_DIR:=$(TOPDIR)/build_dir
STAGING_DIR:=$(TOPDIR)/staging_dir/target
STAGING_DIR_HOSTPKG:=$(TOPDIR)/staging_dir/hostpkg
DL_DIR:=$(TOPDIR)/dl
TARGET_CXX:=g++
TARGET_CPPFLAGS:=
TARGET_CXXFLAGS:=-O2
TARGET_LDFLAGS:=
INSTALL_DIR:=install -d -m0755
INSTALL_BIN:=install -m0755
INSTALL_DATA:=install -m0644
INSTALL_CONF:=install -m0600
CP:=cp -fpR
`;
const STUB_PACKAGE_MK = `
PKG_BUILD_DIR:=$(BUILD_DIR)/$(PKG_NAME)-$(PKG_VERSION)
PKG_INSTALL_ROOT:=$(TOPDIR)/ipkg/$(PKG_NAME)
define BuildPackage
.PHONY: all
all:
\trm -rf $(PKG_BUILD_DIR) $(PKG_INSTALL_ROOT)
\tmkdir -p $(PKG_BUILD_DIR) $(PKG_INSTALL_ROOT)
\t$$(call Build/Prepare)
\t$$(call Build/Configure)
\t$$(call Build/Compile)
\t$$(call Package/$(1)/install,$(PKG_INSTALL_ROOT))
endef
`;

describe('firmware/openwrt/vpnmasq/Makefile', () => {
  const text = readFileSync(MAKEFILE, 'utf8');

  it('is an openwrt/packages-style package for vpnmasq at the version of package.json', () => {
    expect(text).toMatch(/^include \$\(TOPDIR\)\/rules\.mk$/m);
    expect(text).toMatch(/^include \$\(INCLUDE_DIR\)\/package\.mk$/m);
    expect(text).toMatch(/^PKG_NAME:=vpnmasq$/m);
    expect(text).toMatch(new RegExp(`^PKG_VERSION:=${VERSION.replace(/\./g, '\\.')}$`, 'm'));
    expect(text).toMatch(/^PKG_RELEASE:=\d+$/m);
    expect(text).toMatch(/^PKG_LICENSE:=MIT$/m);
    expect(text).toMatch(/^\$\(eval \$\(call BuildPackage,vpnmasq\)\)$/m);
    const pkg = makeDefine(text, 'Package/vpnmasq');
    expect(pkg).toMatch(/^\s+SECTION:=net$/m);
    expect(pkg).toMatch(/^\s+CATEGORY:=Network$/m);
    expect(pkg).toMatch(/^\s+TITLE:=\S/m);
    const deps = pkg.match(/^\s+DEPENDS:=(.*)$/m)![1].split(/\s+/);
    expect(deps).toEqual(expect.arrayContaining(['+node', '+kmod-tun', '+ip-full']));
    expect(deps).toContain('+libstdcpp');
    expect(makeDefine(text, 'Package/vpnmasq/install')).not.toContain('vpnmasq-respawn');
    expect(makeDefine(text, 'Package/vpnmasq/conffiles').trim()).toBe('/etc/config/vpnmasq');
  });

  it('needs nftables for the fail-closed guard and takes the guard away when the package is removed', () => {
    const deps = makeDefine(text, 'Package/vpnmasq').match(/^\s+DEPENDS:=(.*)$/m)![1].split(/\s+/);
    expect(deps).toEqual(expect.arrayContaining(['+nftables', '+kmod-nft-core', '+kmod-nft-fib']));
    expect(makeDefine(text, 'Package/vpnmasq/install')).toContain('/etc/init.d/vpnmasq-guard');
    const prerm = makeDefine(text, 'Package/vpnmasq/prerm');
    expect(prerm).toMatch(/^#!\/bin\/sh$/m);
    expect(prerm).toContain('/usr/bin/vpnmasq guard remove');
    expect(prerm).toMatch(/IPKG_INSTROOT/);
    expect(makeDefine(text, 'Package/vpnmasq/postrm')).toContain('nft delete table ip vpnmasq_guard');
  });

  it('recipe lines start with a tab', () => {
    for (const name of ['Build/Prepare', 'Build/Compile', 'Package/vpnmasq/install']) {
      for (const line of makeDefine(text, name).split('\n').filter((l) => l.trim())) expect(line, `${name}: ${line}`).toMatch(/^\t/);
    }
  });

  it('every path it copies or installs exists in the repo, its build output or the package directory', () => {
    const paths = new Set<string>();
    for (const name of ['Build/Prepare', 'Build/Compile', 'Package/vpnmasq/install']) {
      const body = makeDefine(text, name);
      for (const m of body.matchAll(/\$\((?:PKG_BUILD_DIR|VPNMASQ_SRC)\)\/([^\s)]+)/g)) paths.add(m[1]);
      for (const m of body.matchAll(/\s\.\/(files\/\S+)/g)) paths.add(`@pkg/${m[1]}`);
    }
    expect(paths.size).toBeGreaterThan(10);
    for (const p of paths) {
      // $(PKG_BUILD_DIR)/build/Release/... is what Build/Compile writes; the repo's own
      // node-gyp build puts the same file there
      const file = p.startsWith('@pkg/') ? join(PKG_DIR, p.slice(5)) : join(ROOT, p);
      expect(existsSync(file), p).toBe(true);
    }
  });

  describe.skipIf(skipUnless({ tools: ['make', 'g++'] }))('run against a stand-in SDK (host node and g++)', () => {
    function sdk(): string {
      const top = tmp('sdk');
      writeFileSync(join(top, 'rules.mk'), STUB_RULES_MK);
      mkdirSync(join(top, 'include'));
      writeFileSync(join(top, 'include/package.mk'), STUB_PACKAGE_MK);
      mkdirSync(join(top, 'staging_dir/hostpkg/bin'), { recursive: true });
      mkdirSync(join(top, 'staging_dir/hostpkg/include'), { recursive: true });
      mkdirSync(join(top, 'dl'));
      const which = (t: string) => ok(run('sh', ['-c', `command -v ${t}`]), t).trim();
      symlinkSync(which('node'), join(top, 'staging_dir/hostpkg/bin/node'));
      symlinkSync(which('npm'), join(top, 'staging_dir/hostpkg/bin/npm'));
      symlinkSync('/usr/include/node', join(top, 'staging_dir/hostpkg/include/node'));
      // npm's own cache (filled by `npm install` of the repo) stands in for dl/npm-cache
      symlinkSync(join(homedir(), '.npm'), join(top, 'dl/npm-cache'));
      return top;
    }

    async function make(top: string, extra: string[] = []): Promise<string> {
      await okAsync(runAsync('make', ['-C', PKG_DIR, `TOPDIR=${top}`, ...extra], {
        timeout: 400_000,
        env: cleanEnv({ npm_config_prefer_offline: 'true', MAKEFLAGS: '' }),
      }), 'make');
      return join(top, 'ipkg/vpnmasq');
    }

    let ipkData: string;
    beforeAll(async () => {
      const out = tmp('mk-ipk');
      const r = await okAsync(runAsync('sh', [BUILD_IPK, '--no-build', '--out', out]), 'build-ipk.sh');
      ipkData = readIpk(r.trim().split('\n').at(-1)!, join(out, 'x')).data;
    }, 200_000);

    function compareWithIpk(root: string): void {
      // the same files, with the same modes, as the .ipk from build-ipk.sh
      expect(tree(root)).toEqual(tree(ipkData));
      for (const f of tree(root).filter((p) => !p.endsWith('/') && !p.includes('node_modules/'))) {
        expect(lstatSync(join(root, f)).mode & 0o777, f).toBe(lstatSync(join(ipkData, f)).mode & 0o777);
      }
      const r = run('node', [join(root, 'usr/lib/vpnmasq/dist/cli/main.js'), 'check-config', '--config', join(root, 'etc/config/vpnmasq')]);
      expect(r.status, r.stderr).toBe(0);
    }

    it('default: npm install, npm run build, npm prune, the addon with the "target" compiler; installs what the .ipk holds', async () => {
      const top = sdk();
      compareWithIpk(await make(top));
      expect(elfMachine(join(top, 'ipkg/vpnmasq/usr/lib/vpnmasq/build/Release/vpnmasq_tun.node'))).toBe(62);
    }, 420_000);

    it('VPNMASQ_PREBUILT=1: the tree\'s dist/ and node_modules/, pruned', async () => {
      compareWithIpk(await make(sdk(), ['VPNMASQ_PREBUILT=1']));
    }, 300_000);
  });
});
