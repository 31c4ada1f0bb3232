// The control socket speaks newline-delimited JSON: one request
// {"cmd": ..., more fields} and one response per line.
// conntrack-delete takes {"filter": ConntrackFilter} (src/cli/filter.ts);
// the drop capture (vpnmasq capture) adds capture-start {reason?}, capture-read, capture-stop.
import type { ConntrackFilter } from '../cli/filter.js';

export type Command = 'status' | 'conntrack' | 'conntrack-delete' | 'conntrack-flush' | 'reload' | 'wan-update'
  | 'capture-start' | 'capture-read' | 'capture-stop';
export interface Request { cmd: Command; reason?: string; filter?: ConntrackFilter }
export interface Response { ok: boolean; error?: string; data?: unknown }
