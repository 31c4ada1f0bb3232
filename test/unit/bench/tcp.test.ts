// bench/e2e.js --rounds: one mode's TCP results from several rounds pooled
// (bench/e2e/tcp.js mergeTcp), so that the modes taking turns share the
// machine's drift; the medians are over every repetition of every round.
import { describe, expect, it } from 'vitest';
import { TCP_ROWS, mergeTcp, poolRounds } from '../../../bench/e2e/tcp.js';

const rep = (mbps: number, retransmits = 100) => ({ mbps, bytes: mbps * 1e6, retransmits, ping: { medianMs: 0.04, p99Ms: 0.1 }, pingRt: { medianMs: 0.05, p99Ms: 0.2 } });
const round = (...mbps: number[]) => ({
  ok: true, error: null, pingIdleMs: 0.09, cpu: { gb: 1, machineSPerGB: 0.8, procSPerGB: 0.01 },
  rows: Object.fromEntries((TCP_ROWS as { key: string }[]).map((r) => [r.key, { reps: mbps.map((m) => rep(m)) }])),
});

describe('bench --rounds: TCP repetitions pooled over the rounds', () => {
  it('takes each row\'s median over every repetition of every round, not a median of medians', () => {
    // Round medians 10.5 and 30: their mean would be 20.25; the pooled median of 10, 11, 12, 29, 30, 31 is 20.5.
    const m = mergeTcp([round(10, 11), round(29, 30, 31), round(12)]);
    expect(m.ok).toBe(true);
    expect(m.rows.up1.medianMbps).toBe(20.5);
    expect(m.rows.down4.goodReps).toBe(6);
    expect(m.cpu.gb).toBe(3);
  });

  it('a failed round is said, and what the others measured still counts', () => {
    const m = mergeTcp([round(10, 12), { ok: false, error: 'vpnmasq exited', rows: {}, pingIdleMs: NaN, cpu: null }]);
    expect(m.ok).toBe(false);
    expect(m.rows.up4.medianMbps).toBe(11);
  });
});

describe('bench rounds in a whole run: the UDP and mixed runs in the first round, TCP in every round', () => {
  it('keeps each mode\'s first-round UDP and mix results and pools its TCP repetitions over the rounds, the modes apart', () => {
    const k1 = { mode: 'kernel-nft', ok: true, median: { pps: 100 }, mix: { ok: true, total: 5 }, tcp: round(10) };
    const v1 = { mode: 'vpnmasq', ok: true, median: { pps: 120 }, mix: { ok: true, total: 7 }, tcp: round(20) };
    // Later rounds are TCP only (benchMode's tcpOnly: no median, no mix).
    const k2 = { mode: 'kernel-nft', ok: true, median: null, tcp: round(12) };
    const v2 = { mode: 'vpnmasq', ok: true, median: null, tcp: round(22) };
    const v3 = { mode: 'vpnmasq', ok: false, error: 'vpnmasq exited', median: null, tcp: round(24) };
    const [k, v] = poolRounds([k1, v1, k2, v2, v3]);
    expect(k.mode).toBe('kernel-nft');
    expect(k.median).toEqual({ pps: 100 });
    expect(k.mix.total).toBe(5);
    expect(k.ok).toBe(true);
    expect(k.tcp.rows.up1.medianMbps).toBe(11);
    expect(v.median).toEqual({ pps: 120 });
    expect(v.mix.total).toBe(7);
    expect(v.ok).toBe(false);
    expect(v.tcp.rows.down1.medianMbps).toBe(22);
    expect(v.tcp.rows.down1.goodReps).toBe(3);
  });
});
