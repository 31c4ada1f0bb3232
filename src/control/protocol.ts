// The control socket speaks newline-delimited JSON: one request
// {"cmd": "status" | "conntrack" | "reload" | "wan-update"} and one response per line.
// The drop capture (vpnmasq capture) adds capture-start {reason?}, capture-read, capture-stop.
export type Command = 'status' | 'conntrack' | 'reload' | 'wan-update' | 'capture-start' | 'capture-read' | 'capture-stop';
export interface Request { cmd: Command; reason?: string }
export interface Response { ok: boolean; error?: string; data?: unknown }
