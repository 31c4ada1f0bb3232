// Record layouts of the engine's tables: the one place that names each
// field's byte offset. The engine's handlers and the supervisor's conntrack
// view (src/engine/engine.ts, through the generated src/engine/abi.gen.ts)
// both read these names; moving a field is an edit here and a rebuild.
// Times are deciseconds (nowDs), addresses raw u32, ports host order.

// @group flow  (nat/table.ts; a free record keeps the next free record + 1 at 0)
export const FLOW_SIZE: u32 = 40;
export const F_LAN_ADDR: u32 = 0;     // u32
export const F_REM_ADDR: u32 = 4;     // u32
export const F_LAN_PORT: u32 = 8;     // u16
export const F_REM_PORT: u32 = 10;    // u16
export const F_ALIAS_PORT: u32 = 12;  // u16
export const F_PROTO: u32 = 14;       // u8
export const F_STATE: u32 = 15;       // u8 TCP_* or UDP_(UN)REPLIED
export const F_EXPIRES: u32 = 16;     // u32
export const F_FLAGS: u32 = 20;       // u16 FL_*
export const F_TCP_OUT: u32 = 22;     // u8 TCP, LAN side: bits 0-4 log2 of its largest window, bit 5 end known
export const F_TCP_IN: u32 = 23;      // u8 TCP, WAN side: the same
export const F_PKTS_OUT: u32 = 24;    // u32
export const F_PKTS_IN: u32 = 28;     // u32
export const F_END_OUT: u32 = 32;     // u32 TCP: highest sequence number + length the LAN side sent
export const F_END_IN: u32 = 36;      // u32 TCP: the same for the WAN side
// A hairpin flow (FL_HAIRPIN, nat/hairpin.ts) keeps no sequence end for its
// server side; that word holds what its replies need instead.
export const F_HAIRPIN_PORT: u32 = 36; // u16 hairpin: the forwarded port the LAN host addressed on the WAN address
export const F_HAIRPIN_SRC: u32 = 38;  // u8 hairpin: REFLECT_INTERNAL or REFLECT_EXTERNAL (the source the server sees)

// @group flowAcct  (nat/acct.ts: flow f's byte counters at flowAcct + f × FLOW_ACCT_SIZE, a region
// beside the records that exists only with option acct '1', as conntrack's acct extension)
export const FLOW_ACCT_SIZE: u32 = 16;
export const FA_BYTES_OUT: u32 = 0;   // u64 IP bytes LAN → WAN (F_PKTS_OUT's packets; a super-packet's whole length)
export const FA_BYTES_IN: u32 = 8;    // u64 IP bytes WAN → LAN (F_PKTS_IN's packets)

// @group flowFlags
export const FL_IN_USE: u32 = 1;
export const FL_REDIRECT: u32 = 2;   // opened by a WAN packet through a redirect
export const FL_REPLIED: u32 = 4;    // traffic seen both ways
export const FL_FIN_OUT: u32 = 8;
export const FL_FIN_IN: u32 = 16;
export const FL_NATT: u32 = 32;      // UDP 4500: natt_timeout
export const FL_CHARGED: u32 = 64;   // counted against its LAN host's cap (nat/limits.ts)
export const FL_HAIRPIN: u32 = 128;  // NAT loopback: a LAN host to a forward through the WAN address; remote = the server, no binding
export const FL_WS_SHIFT: u32 = 8;   // bits 8-11 / 12-15: window scale of the LAN / WAN side's SYN (15 = none)
export const FL_WS_NONE: u32 = 0xff00;

// @group binding  (nat/binding.ts: BIND_PROTOS × 65536 owner entries)
export const BIND_SIZE: u32 = 12;
export const B_LAN_ADDR: u32 = 0;     // u32
export const B_REFS: u32 = 4;         // u32
export const B_LAN_PORT: u32 = 8;     // u16
export const B_FLAGS: u32 = 10;       // u16 BF_*
export const BF_USED: u32 = 1;
export const BF_STATIC: u32 = 2;
// The binding tables, one per protocol class (protoIndex in nat/binding.ts).
export const BIND_TCP: u32 = 0;
export const BIND_UDP: u32 = 1;       // UDP and everything port-like but TCP and ICMP
export const BIND_ICMP: u32 = 2;      // ICMP echo identifiers
export const BIND_PROTOS: u32 = 3;

// @group esp  (vpn/esp.ts: one association, HOWTO §6.2)
export const ESP_SIZE: u32 = 40;
export const ESP_LAN_ADDR: u32 = 0;   // u32
export const ESP_REM_ADDR: u32 = 4;   // u32
export const ESP_SPI_OUT: u32 = 8;    // u32 raw, LAN → server
export const ESP_SPI_IN: u32 = 12;    // u32 raw, server → LAN; 0 = unknown
export const ESP_EXPIRES: u32 = 16;   // u32
export const ESP_DEADLINE: u32 = 20;  // u32 outstanding: init deadline; squelched: its end
export const ESP_PEER: u32 = 20;      // u32 bound (no deadline then): its vpn/peers.ts record + 1
export const ESP_STATE: u32 = 24;     // u8 ESP_FREE..ESP_SQUELCHED
export const ESP_RETRIES: u32 = 25;   // u8
export const ESP_FLAGS: u32 = 26;     // u16 ESPF_*
export const ESP_PKTS: u32 = 28;      // u32
export const ESP_SPI_IN2: u32 = 32;   // u32 raw: a second inbound SPI a provisional SA took; 0 = none
export const ESP_TIMER: u32 = 36;     // u32 provisional: its end; forward: the last promotion scan; outstanding: the last counted try
export const ESP_FREE: u32 = 0;
export const ESP_OUTSTANDING: u32 = 1;
export const ESP_BOUND: u32 = 2;
export const ESP_SQUELCHED: u32 = 3;
export const ESPF_FORWARD: u32 = 1;   // belongs to a protocol forward (server behind the router)
export const ESPF_UNREPLIED: u32 = 2; // a forward SA a WAN packet opened; the server has not sent to that peer yet
export const ESPF_PROVISIONAL: u32 = 4; // bound from an unknown inbound SPI; may take one more until ESP_TIMER
export const ESPF_CHARGED: u32 = 8;   // outstanding, counted against its host's cap
export const ESPF_OFFLOADED: u32 = 16; // handed to the flow fast path (nat/fastpath.ts) and not withdrawn; never saved

// @group ike  (vpn/isakmp.ts: one exchange, keyed by its initiator cookie)
export const IKE_SIZE: u32 = 48;
export const IKE_LAN_ADDR: u32 = 0;   // u32
export const IKE_REM_ADDR: u32 = 4;   // u32
export const IKE_ICOOKIE: u32 = 8;    // u64 as on the wire
export const IKE_RCOOKIE: u32 = 16;   // u64; 0 = not yet seen
export const IKE_EXPIRES: u32 = 24;   // u32
export const IKE_LAST_SEEN: u32 = 28; // u32
export const IKE_REM_PORT: u32 = 32;  // u16
export const IKE_FLAGS: u32 = 34;     // u16 IKEF_*
export const IKE_PKTS_OUT: u32 = 36;  // u32
export const IKE_PKTS_IN: u32 = 40;   // u32
export const IKE_IN_USE: u32 = 44;    // u8
export const IKEF_INBOUND: u32 = 1;   // opened by the server side (a responder behind the router)
export const IKEF_ANSWERED: u32 = 2;  // a packet came back from the side that did not open it
export const IKEF_CHARGED: u32 = 4;   // counted against its LAN host's cap

// @group call  (vpn/pptp.ts: one PPTP call)
export const CALL_SIZE: u32 = 32;
export const CALL_LAN_ADDR: u32 = 0;  // u32
export const CALL_REM_ADDR: u32 = 4;  // u32
export const CALL_ID_LAN: u32 = 8;    // u16 the LAN host's own Call ID
export const CALL_ID_ALIAS: u32 = 10; // u16 its alias on the WAN side
export const CALL_ID_REMOTE: u32 = 12; // u16 the remote's Call ID (when CF_REMOTE_KNOWN)
export const CALL_FLAGS: u32 = 14;    // u16 CF_*
export const CALL_EXPIRES: u32 = 16;  // u32
export const CALL_PKTS_OUT: u32 = 20; // u32
export const CALL_PKTS_IN: u32 = 24;  // u32
export const CALL_IN_USE: u32 = 28;   // u8
export const CF_REMOTE_KNOWN: u32 = 1;
export const CF_DISCONNECTED: u32 = 2;
export const CF_OFFLOADED: u32 = 4;  // its GRE handed to the flow fast path (nat/fastpath.ts) and not withdrawn; never saved

// @group frag  (nat/fragments.ts: one datagram followed by IP ID)
export const FRAG_SIZE: u32 = 48;
export const FRAG_SRC_ADDR: u32 = 0;  // u32 as received
export const FRAG_DST_ADDR: u32 = 4;  // u32 as received
export const FRAG_IP_ID: u32 = 8;     // u16
export const FRAG_PROTO: u32 = 10;    // u8
export const FRAG_SIDE: u32 = 11;     // u8 side + 1; 0 = free
export const FRAG_NEW_ADDR: u32 = 12; // u32 replaces src (outbound) or dst (inbound)
export const FRAG_EXPIRES: u32 = 16;  // u32
export const FRAG_FIRST_END: u32 = 20; // u32 payload bytes of the first fragment
export const FRAG_SEEN: u32 = 24;     // u32 payload bytes seen
export const FRAG_TOTAL: u32 = 28;    // u32 datagram payload; 0 = unknown yet
export const FRAG_NEW_ID: u32 = 32;   // u16 outbound: the IP ID every fragment leaves with
export const FRAG_FLAGS: u32 = 34;    // u16 FRF_*
export const FRAG_L4_KEY: u32 = 36;   // u32 the first fragment's L4 identity as received (ports, SPI, Call ID, echo id)
export const FRF_CONTESTED: u32 = 1;  // another datagram's first fragment came with this (src, dst, id, proto)
export const FRF_DONE: u32 = 2;       // complete: lingers briefly so a late duplicate is not taken for another datagram's

// @group hold  (nat/fragments.ts: a later fragment held until its first fragment comes)
export const HOLD_SIZE: u32 = 16;
export const HOLD_SRC_ADDR: u32 = 0;  // u32 as received
export const HOLD_DST_ADDR: u32 = 4;  // u32 as received
export const HOLD_IP_ID: u32 = 8;     // u16
export const HOLD_PROTO: u32 = 10;    // u8
export const HOLD_SIDE: u32 = 11;     // u8 side + 1; 0 = free
export const HOLD_EXPIRES: u32 = 12;  // u32

// @group peer  (vpn/peers.ts: facts about one LAN host and one server that ESP and IKE share;
// a record with lanAddr 0 holds the server's own facts)
export const PEER_SIZE: u32 = 32;
export const PEER_LAN_ADDR: u32 = 0;      // u32; 0 = the server record
export const PEER_REM_ADDR: u32 = 4;      // u32
export const PEER_IKE_LAST: u32 = 8;      // u32 pair: latest IKE exchange (0 = none live)
export const PEER_IKE_COUNT: u32 = 12;    // u32 pair: live IKE entries
export const PEER_ESP_BOUND: u32 = 16;    // u32 pair: bound ESP associations
export const PEER_ESP_EXPIRES: u32 = 20;  // u32 pair: latest expiry among them
export const PEER_RECENT_HOST: u32 = 24;  // u32 server: LAN host with the latest IKE exchange (0 = none)
export const PEER_REFS: u32 = 28;         // u32 server: pair records of this server

// @group src  (nat/limits.ts: one LAN host's entries, open addressing on its address)
export const SRC_SIZE: u32 = 16;
export const SRC_ADDR: u32 = 0;       // u32; 0 = empty slot
export const SRC_FLOWS: u32 = 4;      // u32
export const SRC_IKE: u32 = 8;        // u16
export const SRC_CALLS: u32 = 10;     // u16
export const SRC_ESP: u32 = 12;       // u16 outstanding ESP associations
export const SRC_FRAGS: u32 = 14;     // u16 fragmented datagrams in flight

// @group capture  (nat/capture.ts: the drop capture ring, off unless a capture runs:
// a CAPTURE_HEADER-byte header, then CAPTURE_SLOTS records of CAPTURE_REC_SIZE bytes)
export const CAPTURE_SLOTS: u32 = 64;      // power of two
export const CAPTURE_HEADER: u32 = 64;
export const CAPH_HEAD: u32 = 0;           // u32 records written (engine)
export const CAPH_TAIL: u32 = 4;           // u32 records read (supervisor)
export const CAPH_LOST: u32 = 8;           // u32 drops not copied: the ring was full
export const CAPTURE_REC_SIZE: u32 = 2064; // CAPR_DATA + SLOT_SIZE
export const CAPR_LEN: u32 = 0;            // u32 the packet's length
export const CAPR_CAPLEN: u32 = 4;         // u16 bytes copied (≤ 2048)
export const CAPR_REASON: u32 = 6;         // u8 drop reason
export const CAPR_SIDE: u32 = 7;           // u8 0 LAN, 1 WAN
export const CAPR_TIME: u32 = 8;           // u32 nowDs when dropped
export const CAPR_DATA: u32 = 16;          // the packet from its IP header

// @group rule  (nat/filter.ts: one fw4 rule, expanded to one protocol, one network pair, one range each)
export const RULE_SIZE: u32 = 40;
export const RULE_SRC_ZONE: u32 = 0;    // u8 ZONE_WAN / ZONE_LAN
export const RULE_TARGET: u32 = 1;      // u8 TARGET_*
export const RULE_DEST_ZONE: u32 = 2;   // u8 DEST_ROUTER / DEST_FORWARD
export const RULE_ANY_PROTO: u32 = 3;   // u8 1 = every protocol
export const RULE_PROTO: u32 = 4;       // u16
export const RULE_ICMP_TYPE: u32 = 6;   // i16; -1 = any
export const RULE_ICMP_CODE: u32 = 8;   // i16; -1 = any
export const RULE_SRC_NET: u32 = 12;    // u32 raw, masked
export const RULE_SRC_MASK: u32 = 16;   // u32 raw
export const RULE_DST_NET: u32 = 20;    // u32 raw, masked
export const RULE_DST_MASK: u32 = 24;   // u32 raw
export const RULE_SPORT_LO: u32 = 28;   // u16 (TCP/UDP; 0..65535 = any)
export const RULE_SPORT_HI: u32 = 30;   // u16
export const RULE_DPORT_LO: u32 = 32;   // u16
export const RULE_DPORT_HI: u32 = 34;   // u16
