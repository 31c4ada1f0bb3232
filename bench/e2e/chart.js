// The end-to-end report as an SVG chart: one row per line of the text
// tables (plain run: delivered pps and ping RTT; mixed run: each traffic
// class and the total), two bars each, the kernel's nftables masquerade and
// vpnmasq, scaled to the larger of the two, with the values and their ratio.
// Made from the JSON summary (writeSummary in report.js), so a saved run
// renders again without re-running the bench:
//
//   node bench/e2e/chart.js summary.json [out.svg]
import { readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const W = 860;
const LABEL_W = 250;
const RATIO_W = 110;
const BAR_MAX = W - LABEL_W - RATIO_W - 100; // room for the value after the bar
const BAR_H = 16;
const ROW_H = 2 * BAR_H + 18;
const COLORS = { 'kernel-nft': '#9ca3af', vpnmasq: '#2563eb' };
const MIX = [['udp', 'UDP'], ['natt', 'NAT-T'], ['espLan1', 'ESP lan1'], ['espLan2', 'ESP lan2'], ['total', 'total']];

const esc = (s) => String(s).replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
const fin = (x) => typeof x === 'number' && Number.isFinite(x);
const fmt = (x, unit) => (!fin(x) ? 'n/a' : unit === 'ms' ? `${x.toFixed(3)} ms` : `${Math.round(x).toLocaleString('en-US')} pps`);

/** The rows of the chart: [label, kernel value, vpnmasq value, unit, higher is better]. */
export function chartRows(s) {
  const k = s.modes?.['kernel-nft'];
  const v = s.modes?.vpnmasq;
  const flows = s.params?.flows ?? '';
  const rows = [
    [`plain: 64-byte UDP, ${flows} flows`, k?.median?.deliveredPps, v?.median?.deliveredPps, 'pps', true],
    ['plain: ping RTT median', k?.latency?.medianMs, v?.latency?.medianMs, 'ms', false],
  ];
  // summaries written before the lan2 pings during the flood have no such row
  if (Number.isFinite(k?.median?.floodPingMs) || Number.isFinite(v?.median?.floodPingMs)) {
    rows.push(['plain: lan2 ping RTT during the flood (real-time pinger), median', k?.median?.floodPingMs, v?.median?.floodPingMs, 'ms', false]);
  }
  if (k?.mix?.median || v?.mix?.median) {
    for (const [c, name] of MIX) rows.push([`mixed: ${name}`, k?.mix?.median?.[c]?.deliveredPps, v?.mix?.median?.[c]?.deliveredPps, 'pps', true]);
  }
  return rows;
}

export function renderChart(s) {
  const rows = chartRows(s);
  const top = 64;
  const h = top + rows.length * ROW_H + 40;
  const out = [];
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${h}" viewBox="0 0 ${W} ${h}" font-family="sans-serif" font-size="12">`);
  out.push(`<rect width="${W}" height="${h}" fill="#ffffff"/>`);
  out.push(`<text x="10" y="22" font-size="15" font-weight="bold">vpnmasq vs the kernel's nftables masquerade (end to end, same run)</text>`);
  const m = s.machine ?? {};
  out.push(`<text x="10" y="40" fill="#555">${esc(`${(s.date ?? '').slice(0, 10)} · nproc ${m.nproc ?? '?'} · kernel ${m.kernel ?? '?'} · node ${m.node ?? '?'} · medians of ${s.params?.reps ?? '?'} reps`)}</text>`);
  out.push(`<rect x="${LABEL_W}" y="48" width="10" height="10" fill="${COLORS['kernel-nft']}"/><text x="${LABEL_W + 14}" y="57">kernel nftables</text>`);
  out.push(`<rect x="${LABEL_W + 120}" y="48" width="10" height="10" fill="${COLORS.vpnmasq}"/><text x="${LABEL_W + 134}" y="57">vpnmasq</text>`);
  out.push(`<text x="${W - RATIO_W}" y="57" fill="#555">vpnmasq/kernel</text>`);
  rows.forEach(([label, kv, vv, unit, higher], i) => {
    const y = top + i * ROW_H;
    const max = Math.max(fin(kv) ? kv : 0, fin(vv) ? vv : 0) || 1;
    out.push(`<g class="row" data-label="${esc(label)}">`);
    out.push(`<text x="10" y="${y + BAR_H + 4}">${esc(label)}</text>`);
    [['kernel-nft', kv], ['vpnmasq', vv]].forEach(([mode, val], j) => {
      const by = y + j * (BAR_H + 2);
      const w = fin(val) ? Math.max(1, (val / max) * BAR_MAX) : 0;
      out.push(`<rect class="bar" data-mode="${mode}" data-value="${fin(val) ? val : ''}" x="${LABEL_W}" y="${by}" width="${w.toFixed(1)}" height="${BAR_H}" fill="${COLORS[mode]}"/>`);
      out.push(`<text x="${LABEL_W + w + 4}" y="${by + BAR_H - 4}" fill="#333">${esc(fmt(val, unit))}</text>`);
    });
    let ratio = 'n/a';
    if (fin(kv) && fin(vv) && kv > 0) ratio = unit === 'ms' ? `${vv - kv >= 0 ? '+' : ''}${(vv - kv).toFixed(3)} ms` : `${(vv / kv).toFixed(2)}×`;
    else if (fin(vv) && vv > 0 && (!fin(kv) || kv === 0)) ratio = 'kernel: none';
    const good = fin(kv) && fin(vv) && (higher ? vv >= kv : vv <= kv);
    out.push(`<text class="ratio" x="${W - RATIO_W}" y="${y + BAR_H + 4}" font-weight="bold" fill="${good || ratio === 'kernel: none' ? '#059669' : '#b45309'}">${esc(ratio)}</text>`);
    out.push('</g>');
  });
  out.push(`<text x="10" y="${h - 14}" fill="#555">Shared 2-vCPU machine: compare the two modes of one run only (README, Performance).</text>`);
  out.push('</svg>');
  return out.join('\n') + '\n';
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const [input, output] = process.argv.slice(2);
  if (!input) {
    console.error('usage: node bench/e2e/chart.js summary.json [out.svg]');
    process.exit(2);
  }
  const svg = renderChart(JSON.parse(readFileSync(input, 'utf8')));
  if (output) writeFileSync(output, svg);
  else process.stdout.write(svg);
}
