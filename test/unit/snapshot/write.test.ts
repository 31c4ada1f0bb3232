// Writing snapshot files: a background write (writeCapture, awaiting between
// chunks) still in flight when the clean stop writes the final snapshot
// (writeCaptureSync) must never leave a corrupt file in place: each write
// has its own temporary file, so neither truncates the other's.
import { describe, expect, it } from 'vitest';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { TestRouter, WAN } from '../../helpers/harness.js';
import { udp } from '../../helpers/packet.js';
import { ipToRaw } from '../../../src/engine/abi.js';
import { capture, discardStaleTemporaries, writeCapture, writeCaptureSync } from '../../../src/snapshot/state.js';
import { decode } from '../../../src/snapshot/format.js';

describe('snapshot files', () => {
  it('W01 a background write overtaken by the final write at any point: the file in place always decodes', async () => {
    const r = new TestRouter({ maxFlows: 65536 });
    for (let i = 0; i < 2000; i++) r.out(udp('192.168.1.10', 1000 + i, '198.51.100.7', 53));
    const dir = mkdtempSync(join(tmpdir(), 'vpnmasq-snapwrite-'));
    const path = join(dir, 'snapshot-tin.bin');
    try {
      for (let k = 0; k < 12; k++) {
        const background = writeCapture(path, capture(r.engine, ipToRaw(WAN), r.now));
        for (let j = 0; j < k; j++) await new Promise((res) => setImmediate(res)); // let it get k steps in
        writeCaptureSync(path, capture(r.engine, ipToRaw(WAN), r.now));
        await background;
        expect(() => decode(readFileSync(path)), `overtaken after ${k} steps`).not.toThrow();
      }
      expect(readdirSync(dir)).toEqual(['snapshot-tin.bin']); // no temporary file left behind
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('W02 a killed write\'s temporary file is removed at the next start; nothing else is', () => {
    const dir = mkdtempSync(join(tmpdir(), 'vpnmasq-snapstale-'));
    const path = join(dir, 'snapshot-tin.bin');
    try {
      const keep = ['snapshot-tin.bin', 'snapshot-tin2.bin', 'snapshot-tin2.bin.tmp-7-1', 'snapshot-tin.bin.tmp-notes', 'routing-tin.json'];
      for (const n of [...keep, 'snapshot-tin.bin.tmp-17524-10', 'snapshot-tin.bin.tmp-1-2']) writeFileSync(join(dir, n), 'x');
      expect(discardStaleTemporaries(path).sort()).toEqual(['snapshot-tin.bin.tmp-1-2', 'snapshot-tin.bin.tmp-17524-10']);
      expect(readdirSync(dir).sort()).toEqual([...keep].sort());
      expect(discardStaleTemporaries(join(dir, 'none', 'snapshot-tin.bin'))).toEqual([]); // no directory yet: nothing to do
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
