// The numbers both languages share come from assembly/abi/ alone: the
// TypeScript side (src/engine/abi.gen.ts) and the engine's self-description
// (assembly/abi/describe.gen.ts) are generated from it. These tests fail
// when the generated files fell out of step with their source, when the
// built Wasm disagrees with the TypeScript about any constant, or when the
// engine's exports and the EngineExports interface differ.
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
// @ts-expect-error: a plain ES module without declarations
import { AS_OUT, TS_OUT, generate } from '../../../assembly/abi/gen.mjs';
import * as abi from '../../../src/engine/abi.js';
import { Engine, wasmPath } from '../../../src/engine/engine.js';

describe('engine ABI: one source', () => {
  it('the generated files are what assembly/abi/ and assembly/index.ts give', () => {
    const { ts, as } = generate() as { ts: string; as: string };
    expect(readFileSync(TS_OUT, 'utf8'), 'src/engine/abi.gen.ts: run npm run build:wasm').toBe(ts);
    expect(readFileSync(AS_OUT, 'utf8'), 'assembly/abi/describe.gen.ts: run npm run build:wasm').toBe(as);
  });

  for (const debug of [false, true]) {
    it(`the built engine${debug ? ' (debug)' : ''} has the values the TypeScript names`, () => {
      const e = Engine.load({ maxFlows: 1024, debug });
      const words = e.x.abiWords();
      expect(words).toBe(abi.ABI_ORDER.length + 1);
      expect(e.x.abiDescribe(e.slotBase)).toBe(words);
      const dv = new DataView(e.buffer, e.slotBase, words * 4);
      const mismatches: string[] = [];
      const check = (name: string, ts: number, i: number) => {
        const wasm = dv.getUint32(i * 4, true);
        if (wasm !== ts) mismatches.push(`${name}: the engine says ${wasm}, src/engine/abi.gen.ts says ${ts}`);
      };
      check('DROP_COUNT', abi.DROP_COUNT, 0);
      abi.ABI_ORDER.forEach((name, i) => check(name, (abi as unknown as Record<string, number>)[name], i + 1));
      expect(mismatches).toEqual([]);
    });
  }

  it('every export of the engine is in EngineExports with its parameter count, and nothing else', () => {
    const mod = new WebAssembly.Module(readFileSync(wasmPath()));
    const inst = new WebAssembly.Instance(mod, {
      env: { memory: new WebAssembly.Memory({ initial: 1, maximum: 1 }), abort() { throw new Error('abort'); } },
    });
    const wasm: Record<string, number> = {};
    for (const [k, v] of Object.entries(inst.exports)) if (typeof v === 'function') wasm[k] = v.length;
    expect(wasm).toEqual({ ...abi.ENGINE_EXPORT_ARITY });
  });

  it('reason names and counters fit the counter block', () => {
    expect(abi.DROP_REASONS.length).toBe(abi.DROP_COUNT);
    expect(abi.C_DROP_BASE + abi.DROP_COUNT).toBeLessThanOrEqual(abi.COUNTER_SLOTS);
    // Counters sit below the drop block, or past its end (slots added later, e.g. groDatagrams), never inside it.
    for (const v of Object.values(abi.COUNTERS)) {
      expect(v < abi.C_DROP_BASE || (v >= abi.C_DROP_BASE + abi.DROP_COUNT && v < abi.COUNTER_SLOTS)).toBe(true);
    }
    expect(new Set(Object.values(abi.COUNTERS)).size).toBe(Object.values(abi.COUNTERS).length);
    for (const r of abi.POLICY_REASONS) expect(abi.DROP_REASONS).toContain(r);
  });
});
