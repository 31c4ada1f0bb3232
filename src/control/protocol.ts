// The control socket speaks newline-delimited JSON: one request
// {"cmd": ..., "args"?: {...}} and one response per line.
// conntrack-delete takes {"filter": ConntrackFilter} (src/cli/filter.ts).
export type Command = 'status' | 'conntrack' | 'conntrack-delete' | 'conntrack-flush' | 'reload' | 'wan-update';
export interface Request { cmd: Command; args?: unknown }
export interface Response { ok: boolean; error?: string; data?: unknown }
