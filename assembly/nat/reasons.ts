// Why a packet was dropped. Each reason has a counter; the supervisor maps
// the numbers to the names in src/engine/abi.ts (keep both lists in step).
export const enum Drop {
  NONE = 0,
  TRUNCATED = 1,        // shorter than a header it claims
  BAD_VERSION = 2,      // not IPv4
  BAD_IHL = 3,
  BAD_TOTAL_LEN = 4,
  BAD_IP_CSUM = 5,
  BAD_FRAGMENT = 6,     // offset + length beyond 65535
  BAD_L4_HEADER = 7,    // TCP data offset < 5, UDP length inconsistent
  BAD_SRC = 8,          // inside packet not from a LAN subnet nor the router; martian source
  NOT_FOR_US = 9,       // WAN packet to an address that is not the WAN address
  WAN_TO_LAN = 10,      // WAN packet addressed straight to a LAN address
  NO_FLOW = 11,         // unsolicited inbound: no flow, no redirect, no rule
  TABLE_FULL = 12,
  POOL_EXHAUSTED = 13,
  FRAG_NO_HEAD = 14,    // later fragment whose first fragment was not seen
  FRAG_TINY = 15,       // first fragment too short for the L4 header
  FRAG_OVERLAP = 16,    // fragment overlapping the header-bearing first fragment
  FRAG_TABLE_FULL = 17,
  ICMP_UNSUPPORTED = 18,
  ICMP_BAD_EMBEDDED = 19,
  ICMP_NO_FLOW = 20,
  POLICY_DROP = 21,     // a rule said DROP
  POLICY_REJECT = 22,   // a rule said REJECT
  PROTO_UNSUPPORTED = 23,
  TCP_NO_FLOW = 24,     // RST without a flow
  OVERSIZE = 25,        // read length beyond the slot
  NO_WAN_ADDRESS = 26,
  BAD_PORT = 27,        // port 0
  COUNT = 28,
}
