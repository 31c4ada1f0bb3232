// Why a packet was dropped: the one list. Each reason has a counter slot
// (C_DROP_BASE + code); the supervisor's names are these, lower-cased
// (src/engine/abi.gen.ts is generated from this file by assembly/abi/gen.mjs).
// `@policy` marks the reasons worth a log line (policy, not malformed input).
// Add a reason before COUNT, run `npm run build`: nothing else to edit.
export const enum Drop {
  NONE = 0,
  TRUNCATED = 1,        // shorter than a header it claims
  BAD_VERSION = 2,      // not IPv4
  BAD_IHL = 3,
  BAD_TOTAL_LEN = 4,
  BAD_IP_CSUM = 5,
  BAD_FRAGMENT = 6,     // offset + length beyond 65535
  BAD_L4_HEADER = 7,    // TCP data offset < 5, UDP length inconsistent
  BAD_SRC = 8,          // @policy inside packet not from a LAN subnet nor the router; martian source
  NOT_FOR_US = 9,       // WAN packet to an address that is not the WAN address
  WAN_TO_LAN = 10,      // @policy WAN packet addressed straight to a LAN address
  NO_FLOW = 11,         // @policy unsolicited inbound: no flow, no redirect, no rule
  TABLE_FULL = 12,      // @policy
  POOL_EXHAUSTED = 13,  // @policy
  FRAG_NO_HEAD = 14,    // later fragment whose first fragment was not seen (yet: held briefly when there is room, see C_FRAGS_HELD)
  FRAG_TINY = 15,       // first fragment too short for the L4 header
  FRAG_OVERLAP = 16,    // fragment overlapping the header-bearing first fragment
  FRAG_TABLE_FULL = 17, // @policy
  ICMP_UNSUPPORTED = 18,
  ICMP_BAD_EMBEDDED = 19,
  ICMP_NO_FLOW = 20,
  POLICY_DROP = 21,     // @policy a rule said DROP
  POLICY_REJECT = 22,   // @policy a rule said REJECT
  PROTO_UNSUPPORTED = 23, // @policy
  TCP_NO_FLOW = 24,     // RST without a flow
  OVERSIZE = 25,        // read length beyond the slot
  NO_WAN_ADDRESS = 26,  // @policy
  BAD_PORT = 27,        // port 0
  ESP_SPI_ZERO = 28,    // SPI 0 is reserved (RFC 4303 §2.1)
  ESP_SERIALIZED = 29,  // @policy another LAN host's new SPI to this server is outstanding: wait
  ESP_SQUELCHED = 30,   // @policy the host's new SPI got no answer within the retries: 30 s pause
  ESP_NO_SA = 31,       // @policy inbound SPI unknown and nothing outstanding for that server
  ESP_TABLE_FULL = 32,  // @policy
  ISAKMP_TRUNCATED = 33,
  ISAKMP_ZERO_COOKIE = 34,
  ISAKMP_COOKIE_COLLISION = 35, // @policy a new exchange reuses an outstanding initiator cookie
  IKE_TABLE_FULL = 36,  // @policy
  AH_TRANSLATED = 37,   // @policy AH authenticates the addresses: it cannot be translated
  GRE_BAD_HEADER = 38,  // not enhanced GRE (version 1, protocol 0x880B, key present)
  GRE_NO_CALL = 39,     // @policy
  PPTP_BAD_MAGIC = 40,
  PPTP_BAD_LENGTH = 41,
  PPTP_BAD_TYPE = 42,
  PPTP_TABLE_FULL = 43, // @policy
  PPTP_NO_CALL = 44,    // a message names a Call ID no call has
  ESP_SPI_RESERVED = 45, // SPI 1..255 (RFC 4303 §2.1)
  TCP_OUT_OF_WINDOW = 46, // @policy RST or FIN outside the receiver's window (blind injection)
  SRC_FLOW_LIMIT = 47,  // @policy the LAN host holds its cap of flows (src_max_flows)
  SRC_IKE_LIMIT = 48,   // @policy ... of IKE exchanges (src_max_ike)
  SRC_CALL_LIMIT = 49,  // @policy ... of PPTP calls (src_max_calls)
  SRC_ESP_LIMIT = 50,   // @policy ... of outstanding ESP associations (src_max_esp_pending)
  SRC_FRAG_LIMIT = 51,  // @policy ... of fragmented datagrams in flight (src_max_frags)
  FRAG_ID_COLLISION = 52, // @policy a first fragment (or a later one) of another datagram with a tracked (src, dst, IP ID, proto)
  HAIRPIN = 53,         // @policy LAN packet to the WAN address or a router address that no reflected forward (NAT loopback) or hairpin flow takes
  BAD_DST = 54,         // @policy LAN or router packet to a multicast, broadcast, loopback or 0/8 destination
  LAN_DST = 55,         // @policy a LAN packet addressed to a LAN address: never sent out of the WAN
  VNET_BAD_GSO = 56,    // virtio_net_hdr: GSO type unknown or not the packet's protocol, gso_size 0, hdr_len past the packet, a fragment
  VNET_BAD_CSUM = 57,   // virtio_net_hdr: NEEDS_CSUM with csum_start/csum_offset not at the TCP/UDP checksum, or unknown flags
  VNET_GSO_IKE = 58,    // a UDP GSO super-packet to or from port 500 that could not be cut into datagrams (over 2 KiB each, or the batch's extra ring full)
  COUNT = 59,
}
