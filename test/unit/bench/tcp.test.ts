// bench/e2e.js --rounds: one mode's TCP results from several rounds pooled
// (bench/e2e/tcp.js mergeTcp), so that the modes taking turns share the
// machine's drift; the medians are over every repetition of every round.
import { describe, expect, it } from 'vitest';
import { TCP_ROWS, mergeTcp } from '../../../bench/e2e/tcp.js';

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
