// The TUN addon is built three ways: node-gyp from binding.gyp (the host),
// firmware/lib.sh (the images' and the .ipk's cross builds) and the OpenWrt
// package Makefile (the SDK). A source in binding.gyp that a cross build
// leaves out links anyway (a shared object may have undefined symbols) and
// fails only when its function is first called on the router: the aarch64
// image's node died with "undefined symbol: fastpath::NapiOpen" once
// option flow_offload was set. So every source must be in all three, and
// every source and header must be an input of the image's rebuild key.
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { describe, expect, it } from 'vitest';

const ROOT = resolve(__dirname, '../..');
const read = (p: string) => readFileSync(resolve(ROOT, p), 'utf8');
const gyp = JSON.parse(read('binding.gyp').replace(/^\s*#.*$/gm, ''));
const sources: string[] = gyp.targets[0].sources;

describe('the addon\'s sources are the same in every build', () => {
  it('binding.gyp has the sources', () => {
    expect(sources).toContain('src/tun/addon.cc');
    expect(sources.length).toBeGreaterThanOrEqual(3);
  });

  it.each(sources)('%s is compiled by firmware/lib.sh and the OpenWrt Makefile, and keys the image rebuild', (src) => {
    const file = src.split('/').pop()!;
    expect(read('firmware/lib.sh')).toContain(`/src/tun/${file}`);
    expect(read('firmware/openwrt/vpnmasq/Makefile')).toContain(`$(PKG_BUILD_DIR)/${src}`);
    expect(read('firmware/build-image.sh')).toMatch(new RegExp(`ADDON_INPUTS=\\([^)]*${src.replace('.', '\\.')}`));
  });
});
