// Names for the numbers the engine writes into its memory. Keep in step
// with assembly/nat/reasons.ts, assembly/nat/state.ts and assembly/nat/table.ts.

export const SIDE_INSIDE = 0;
export const SIDE_OUTSIDE = 1;
export const VERDICT_DROP = 0;
export const VERDICT_PASS = 1;

/** Drop reasons, indexed by code (assembly/nat/reasons.ts). */
export const DROP_REASONS = [
  'none', 'truncated', 'bad_version', 'bad_ihl', 'bad_total_len', 'bad_ip_csum', 'bad_fragment',
  'bad_l4_header', 'bad_src', 'not_for_us', 'wan_to_lan', 'no_flow', 'table_full', 'pool_exhausted',
  'frag_no_head', 'frag_tiny', 'frag_overlap', 'frag_table_full', 'icmp_unsupported', 'icmp_bad_embedded',
  'icmp_no_flow', 'policy_drop', 'policy_reject', 'proto_unsupported', 'tcp_no_flow', 'oversize',
  'no_wan_address', 'bad_port', 'esp_spi_zero', 'esp_serialized', 'esp_squelched', 'esp_no_sa', 'esp_table_full',
  'isakmp_truncated', 'isakmp_zero_cookie', 'isakmp_cookie_collision', 'ike_table_full', 'ah_translated',
  'gre_bad_header', 'gre_no_call', 'pptp_bad_magic', 'pptp_bad_length', 'pptp_bad_type', 'pptp_table_full',
  'pptp_no_call', 'esp_spi_reserved',
] as const;
export type DropReason = (typeof DROP_REASONS)[number];

/** Malformed input is counted silently; policy drops are worth a log line (wireguard-go's split). */
export const POLICY_REASONS: ReadonlySet<string> = new Set([
  'bad_src', 'wan_to_lan', 'no_flow', 'policy_drop', 'policy_reject', 'table_full', 'pool_exhausted',
  'frag_table_full', 'proto_unsupported', 'no_wan_address', 'esp_serialized', 'esp_squelched', 'esp_no_sa',
  'esp_table_full', 'isakmp_cookie_collision', 'ike_table_full', 'ah_translated', 'gre_no_call', 'pptp_table_full',
]);

export const COUNTERS = {
  rxInside: 0, rxOutside: 1, passInside: 2, passOutside: 3, flowsNew: 4, flowsExpired: 5,
  flowsActive: 6, bindingsActive: 7, fragsActive: 8, eventsLost: 9, localAccept: 10, flowsFlushed: 11,
  espActive: 12, ikeActive: 13, callsActive: 14, espBound: 15,
  fragsHeld: 16, fragsReleased: 17, fragsHoldExpired: 18, fragIdsRewritten: 19,
} as const;
export const C_DROP_BASE = 32;

export const EV_FLOW_NEW = 1;
export const EV_FLOW_EXPIRED = 2;
export const EV_DROP = 3;
export const EV_FLUSH = 4;
export const EV_ESP_BOUND = 5;
export const EV_AH_REFUSED = 6;
export const EV_IKE_COLLISION = 7;

// Flow record (assembly/nat/table.ts)
export const F_LAN_ADDR = 0;
export const F_REM_ADDR = 4;
export const F_LAN_PORT = 8;
export const F_REM_PORT = 10;
export const F_ALIAS_PORT = 12;
export const F_PROTO = 14;
export const F_STATE = 15;
export const F_EXPIRES = 16;
export const F_FLAGS = 20;
export const F_PKTS_OUT = 24;
export const F_PKTS_IN = 28;
export const FL_IN_USE = 1;
export const FL_REDIRECT = 2;
export const FL_REPLIED = 4;

export const TCP_STATES = ['NONE', 'SYN_SENT', 'SYN_RECV', 'ESTABLISHED', 'FIN_WAIT', 'TIME_WAIT', 'CLOSE'];

// Rule encoding (assembly/nat/filter.ts)
export const ZONE_WAN = 0;
export const ZONE_LAN = 1;
export const DEST_ROUTER = 0;
export const DEST_FORWARD = 1;
export const TARGET_ACCEPT = 1;
export const TARGET_DROP = 2;
export const TARGET_REJECT = 3;

export const PROTO_NAMES: Record<number, string> = { 1: 'icmp', 6: 'tcp', 17: 'udp', 47: 'gre', 50: 'esp', 51: 'ah' };

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
