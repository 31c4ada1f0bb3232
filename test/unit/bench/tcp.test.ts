// bench/e2e.js --rounds: one mode's TCP results from several rounds pooled
// (bench/e2e/tcp.js mergeTcp), so that the modes taking turns share the
// machine's drift; the medians are over every repetition of every round.
import { describe, expect, it } from 'vitest';
import { TCP_ROWS, mergeTcp, poolRounds } from '../../../bench/e2e/tcp.js';
import { plainRepsInRound } from '../../../bench/e2e/plain.js';

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

describe('bench rounds in a whole run: the mixed run in the first round, 64-byte UDP and TCP spread over all', () => {
  it('keeps each mode\'s first-round mix results and pools its 64-byte UDP and TCP repetitions over the rounds, the modes apart', () => {
    // The kernel's rounds each made 64-byte UDP repetitions (one failed); the first round alone the mix.
    const k1 = { mode: 'kernel-nft', ok: true, reps: [{ deliveredPps: 100 }, { deliveredPps: 110 }], mix: { ok: true, total: 5 }, tcp: round(10) };
    const k2 = { mode: 'kernel-nft', ok: true, reps: [{ deliveredPps: 300 }, { error: 'iperf3 failed' }], tcp: round(12) };
    // vpnmasq's later rounds made none (--reps smaller than --rounds): its first round's median stays.
    const v1 = { mode: 'vpnmasq', ok: true, reps: [], median: { deliveredPps: 120 }, mix: { ok: true, total: 7 }, tcp: round(20) };
    const v2 = { mode: 'vpnmasq', ok: true, reps: [], median: null, tcp: round(22) };
    const v3 = { mode: 'vpnmasq', ok: false, error: 'vpnmasq exited', reps: [], median: null, tcp: round(24) };
    const [k, v] = poolRounds([k1, v1, k2, v2, v3]);
    expect(k.reps).toHaveLength(4);
    expect(k.median.deliveredPps).toBe(110);
    expect(k.median.goodReps).toBe(3);
    expect(k.mode).toBe('kernel-nft');
    expect(k.mix.total).toBe(5);
    expect(k.ok).toBe(true);
    expect(k.tcp.rows.up1.medianMbps).toBe(11);
    expect(v.median).toEqual({ deliveredPps: 120 });
    expect(v.mix.total).toBe(7);
    expect(v.ok).toBe(false);
    expect(v.tcp.rows.down1.medianMbps).toBe(22);
    expect(v.tcp.rows.down1.goodReps).toBe(3);
  });
});

describe('bench rounds: the 64-byte UDP repetitions spread over the rounds', () => {
  it('gives each round its share, the first rounds one more where they do not divide, --reps in all', () => {
    expect([0, 1, 2].map((i) => plainRepsInRound(5, 3, i))).toEqual([2, 2, 1]);
    expect([0, 1, 2].map((i) => plainRepsInRound(1, 3, i))).toEqual([1, 0, 0]);
    expect([0, 1, 2, 3].map((i) => plainRepsInRound(8, 4, i))).toEqual([2, 2, 2, 2]);
    expect(plainRepsInRound(3, 1, 0)).toBe(3);
  });
});
