// The control socket speaks newline-delimited JSON: one request
// {"cmd": "status" | "conntrack" | "reload" | "wan-update"} and one response per line.
export type Command = 'status' | 'conntrack' | 'reload' | 'wan-update';
export interface Request { cmd: Command }
export interface Response { ok: boolean; error?: string; data?: unknown }
