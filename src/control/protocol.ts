// The control socket speaks newline-delimited JSON: one request
// {"cmd": ..., more fields} and one response per line.
// conntrack-delete takes {"filter": ConntrackFilter} (src/cli/filter.ts);
// the drop capture (vpnmasq capture) adds capture-start {reason?}, capture-read, capture-stop.
// With VPNMASQ_TEST_HOOKS=1 in the daemon's environment (tests only) it also takes
// debug-block-main {ms, until?} (keeps the main thread busy, see supervisor.ts) and
// debug-crash-datapath (the data-path thread throws).
import type { ConntrackFilter } from '../cli/filter.js';

export type Command = 'status' | 'conntrack' | 'conntrack-delete' | 'conntrack-flush' | 'reload' | 'wan-update'
  | 'capture-start' | 'capture-read' | 'capture-stop' | 'debug-block-main' | 'debug-crash-datapath';
export interface Request { cmd: Command; reason?: string; filter?: ConntrackFilter; ms?: number; until?: string; marker?: string }
export interface Response { ok: boolean; error?: string; data?: unknown }
