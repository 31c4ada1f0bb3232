// src/tun/ is a leaf, like wireguard-go's tun/: TUN devices and their test
// double, nothing about the engine, the config or the network set-up. The
// batch loop that drives the engine lives in src/datapath/.
import { describe, it, expect } from 'vitest';
import { readdirSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const TUN_DIR = fileURLToPath(new URL('../../../src/tun/', import.meta.url));

function importsOf(text: string): string[] {
  return [...text.matchAll(/^\s*(?:import|export)\b[^'"]*?from\s+['"]([^'"]+)['"]/gm), ...text.matchAll(/import\(\s*['"]([^'"]+)['"]\s*\)/g)]
    .map((m) => m[1]!);
}

describe('src/tun is a leaf', () => {
  const files = readdirSync(TUN_DIR).filter((f) => f.endsWith('.ts'));

  it('holds the TUN device, its fake and the kernel fast path, not the batch loop', () => {
    expect(files.sort()).toEqual(['fake.ts', 'fastpath.ts', 'tun.ts']);
  });

  it('imports only node built-ins and its own files', () => {
    const outside: string[] = [];
    for (const f of files) {
      const specs = importsOf(readFileSync(TUN_DIR + f, 'utf8'));
      expect(specs.length).toBeGreaterThan(0);
      for (const s of specs) {
        const own = s.startsWith('./') && !s.slice(2).includes('/');
        if (!own && !s.startsWith('node:')) outside.push(`${f}: ${s}`);
      }
    }
    expect(outside).toEqual([]);
  });
});
