// `vpnmasq rpcd list | call METHOD`: the body of rpcd's exec plugin
// /usr/libexec/rpcd/vpnmasq (the path LuCI uses: ubus call vpnmasq METHOD).
// rpcd runs the plugin with `list` once to learn the methods and their
// argument types, and with `call METHOD` for each call, the arguments as a
// JSON object on stdin; the answer is one JSON object on stdout. Failures
// are answered as {"error": "..."} so the caller sees why.
import type { Command } from '../control/protocol.js';
import type { FlowEntry } from '../engine/engine.js';
import { FilterError, filterEmpty, matches, parseFilter, type FilterArgs } from './filter.js';

/** Method signatures as rpcd wants them: argument name -> an example of its type. */
const FILTER = { proto: 'str', src: 'str', dst: 'str', sport: 0, dport: 0, spi: 'str', call_id: 0 } as const;
/**
 * Deleting is its own method so the ACL can grant it apart from reading
 * (rpcd's ACLs are per method): status and conntrack are "read",
 * conntrack_delete and reload "write".
 */
export const RPCD_METHODS = { status: {}, conntrack: FILTER, conntrack_delete: FILTER, reload: {} } as const;

export type Ask = (cmd: Command, args?: unknown) => Promise<{ ok: boolean; error?: string; data?: unknown }>;

function text(v: unknown): string | undefined {
  return v === undefined || v === null ? undefined : String(v);
}

export async function rpcdCall(method: string, input: string, ask: Ask): Promise<Record<string, unknown>> {
  let args: Record<string, unknown> = {};
  if (input.trim() !== '') {
    try {
      const parsed = JSON.parse(input) as unknown;
      if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) return { error: 'the arguments must be a JSON object' };
      args = parsed as Record<string, unknown>;
    } catch {
      return { error: 'the arguments are not JSON' };
    }
  }
  const answer = async (cmd: Command, a?: unknown) => {
    const r = await ask(cmd, a);
    if (!r.ok) throw new Error(r.error ?? `${cmd} failed`);
    return r.data;
  };
  try {
    switch (method) {
      case 'status':
        return (await answer('status')) as Record<string, unknown>;
      case 'reload': {
        const d = (await answer('reload')) as { restartNeeded?: string[] };
        return { reloaded: true, restart_needed: d?.restartNeeded ?? [] };
      }
      case 'conntrack':
      case 'conntrack_delete': {
        const fa: FilterArgs = {
          proto: text(args.proto), src: text(args.src), dst: text(args.dst), sport: text(args.sport),
          dport: text(args.dport), spi: text(args.spi), 'call-id': text(args.call_id),
        };
        let filter;
        try {
          filter = parseFilter(fa);
        } catch (err) {
          if (err instanceof FilterError) return { error: err.message };
          throw err;
        }
        if (method === 'conntrack_delete') {
          if (filterEmpty(filter)) return { error: 'delete needs at least one filter' };
          const deleted = (await answer('conntrack-delete', { filter })) as FlowEntry[];
          return { deleted: deleted.length, entries: deleted };
        }
        const entries = ((await answer('conntrack')) as FlowEntry[]).filter((e) => matches(e, filter));
        return { count: entries.length, entries };
      }
      default:
        return { error: `unknown method "${method}" (known: ${Object.keys(RPCD_METHODS).join(', ')})` };
    }
  } catch (err) {
    return { error: (err as Error).message };
  }
}
