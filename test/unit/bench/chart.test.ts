// The bench report as an SVG chart (bench/e2e/chart.js), drawn from the JSON
// summary of a real run (test/unit/bench/e2e-summary.json, the run behind
// docs/bench.svg): one row per line of the text tables, each with the
// kernel's and vpnmasq's bar scaled to the larger one, the values and the
// ratio; text escaped; the README's picture is what the renderer makes.
import { describe, it, expect } from 'vitest';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
// @ts-expect-error plain JS module without types
import { chartRows, renderChart } from '../../../bench/e2e/chart.js';
// @ts-expect-error plain JS module without types
import { buildSummary } from '../../../bench/e2e/report.js';

const here = (p: string) => fileURLToPath(new URL(p, import.meta.url));
const summary = JSON.parse(readFileSync(here('./e2e-summary.json'), 'utf8'));

/** [label, [[mode, value, width]...], ratio text] per row, read back from the SVG. */
function rowsOf(svg: string) {
  const rows = [...svg.matchAll(/<g class="row" data-label="([^"]*)">([\s\S]*?)<\/g>/g)];
  return rows.map(([, label, body]) => [
    label,
    [...body!.matchAll(/data-mode="([^"]+)" data-value="([^"]*)"[^>]* width="([\d.]+)"/g)].map(([, m, v, w]) => [m, v === '' ? null : Number(v), Number(w)]),
    /class="ratio"[^>]*>([^<]*)</.exec(body!)![1],
  ]) as [string, [string, number | null, number][], string][];
}

describe('bench chart', () => {
  const svg = renderChart(summary);

  it('is an SVG document with one row per table line', () => {
    expect(svg.startsWith('<svg xmlns="http://www.w3.org/2000/svg"')).toBe(true);
    expect(svg.trim().endsWith('</svg>')).toBe(true);
    expect((svg.match(/<g /g) ?? []).length).toBe((svg.match(/<\/g>/g) ?? []).length);
    expect(rowsOf(svg).map((r) => r[0])).toEqual([
      'plain: 64-byte UDP, 16 flows', 'plain: ping RTT median',
      'mixed: UDP', 'mixed: NAT-T', 'mixed: ESP lan1', 'mixed: ESP lan2', 'mixed: total',
    ]);
  });

  it('draws each row to its own scale: the larger bar full, the other in proportion, values from the summary', () => {
    const k = summary.modes['kernel-nft'], v = summary.modes.vpnmasq;
    const rows = rowsOf(svg);
    const plain = rows[0]!;
    expect(plain[1].map((b) => b[1])).toEqual([k.median.deliveredPps, v.median.deliveredPps]);
    const [kb, vb] = plain[1];
    const full = Math.max(kb![2], vb![2]);
    expect(Math.min(kb![2], vb![2]) / full).toBeCloseTo(Math.min(kb![1]!, vb![1]!) / Math.max(kb![1]!, vb![1]!), 2);
    expect(plain[2]).toBe(`${(v.median.deliveredPps / k.median.deliveredPps).toFixed(2)}×`);
    expect(rows[1]![2]).toMatch(/^\+0\.\d{3} ms$/);
    for (const r of rows) expect(Math.max(...r[1].map((b) => b[2]))).toBeCloseTo(full, 0);
    // ESP of the second LAN host: the kernel delivered none
    const lan2 = rows.find((r) => r[0] === 'mixed: ESP lan2')!;
    expect(lan2[1][0]![1]).toBe(0);
    expect(lan2[1][1]![1]).toBeGreaterThan(0);
    expect(lan2[2]).toBe('kernel: none');
  });

  it('escapes text from the machine and leaves out the mixed rows of a run without them', () => {
    const s = structuredClone(summary);
    s.machine.kernel = '6.1 <script>&"';
    for (const m of Object.values(s.modes) as { mix?: unknown }[]) delete m.mix;
    const out = renderChart(s);
    expect(out).toContain('6.1 &lt;script&gt;&amp;&quot;');
    expect(out).not.toContain('<script>');
    expect(chartRows(s)).toHaveLength(2);
  });

  it('is what the bench writes: buildSummary of the modes renders the same chart', () => {
    const a = { ...summary.params, mix: true, mixReps: 3, mixFlows: 8 };
    const modes = Object.values(summary.modes);
    const built = buildSummary(a, summary.machine, modes, { doVpnmasq: true, cmp: summary.comparison, mixCmp: summary.mixComparison });
    expect(renderChart({ ...built, date: summary.date })).toBe(svg);
  });

  it('docs/bench.svg is the chart of this summary', () => {
    expect(readFileSync(here('../../../docs/bench.svg'), 'utf8')).toBe(svg);
  });
});
