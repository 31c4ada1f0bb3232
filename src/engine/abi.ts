// Names for the numbers the engine writes into its memory. The numbers
// themselves (drop reasons, counters, events, record layouts, codes, the
// export signatures) are generated from assembly/abi/ into abi.gen.ts; this
// module re-exports them and adds the address helpers.

export * from './abi.gen.js';
import { POLICY_REASON_NAMES } from './abi.gen.js';

/** Malformed input is counted silently; policy drops are worth a log line (wireguard-go's split). */
export const POLICY_REASONS: ReadonlySet<string> = new Set(POLICY_REASON_NAMES);

export const TCP_STATES = ['NONE', 'SYN_SENT', 'SYN_RECV', 'ESTABLISHED', 'FIN_WAIT', 'TIME_WAIT', 'CLOSE'];

/** Dotted quad → the engine's raw u32 (network-order bytes read little-endian). */
export function ipToRaw(ip: string): number {
  const parts = ip.split('.').map(Number);
  if (parts.length !== 4 || parts.some((x) => !Number.isInteger(x) || x < 0 || x > 255)) {
    throw new Error(`not an IPv4 address: ${ip}`);
  }
  return ((parts[0]) | (parts[1] << 8) | (parts[2] << 16) | (parts[3] << 24)) >>> 0;
}

export function rawToIp(raw: number): string {
  return `${raw & 0xff}.${(raw >>> 8) & 0xff}.${(raw >>> 16) & 0xff}.${(raw >>> 24) & 0xff}`;
}

/** Prefix length → raw mask. */
export function maskRaw(prefix: number): number {
  if (prefix <= 0) return 0;
  const hostOrder = prefix >= 32 ? 0xffffffff : (0xffffffff << (32 - prefix)) >>> 0;
  // host-order mask to network-order bytes read little-endian
  return (((hostOrder >>> 24) & 0xff) | (((hostOrder >>> 16) & 0xff) << 8) | (((hostOrder >>> 8) & 0xff) << 16) | ((hostOrder & 0xff) << 24)) >>> 0;
}

/** Fixed capacities of the engine's tables other than flows (assembly/layout.ts; flows: max_flows). */
export const TABLE_CAPACITY = {
  bindings: 3 * 65536, // BIND_PROTOS × 65536 alias ports
  fragments: 4096,     // FRAG_CAP
  esp: 8192,           // ESP_CAP
  ike: 4096,           // IKE_CAP
  pptp: 4096,          // CALL_CAP
} as const;
