// Record layouts of the engine's tables: the one place that names each
// field's byte offset. The engine's handlers and the supervisor's conntrack
// view (src/engine/engine.ts, through the generated src/engine/abi.gen.ts)
// both read these names; moving a field is an edit here and a rebuild.
// Times are deciseconds (nowDs), addresses raw u32, ports host order.

// @group flow  (nat/table.ts; a free record keeps the next free record + 1 at 0)
export const FLOW_SIZE: u32 = 32;
export const F_LAN_ADDR: u32 = 0;     // u32
export const F_REM_ADDR: u32 = 4;     // u32
export const F_LAN_PORT: u32 = 8;     // u16
export const F_REM_PORT: u32 = 10;    // u16
export const F_ALIAS_PORT: u32 = 12;  // u16
export const F_PROTO: u32 = 14;       // u8
export const F_STATE: u32 = 15;       // u8 TCP_* or UDP_(UN)REPLIED
export const F_EXPIRES: u32 = 16;     // u32
export const F_FLAGS: u32 = 20;       // u16 FL_*
export const F_SPARE: u32 = 22;       // u16
export const F_PKTS_OUT: u32 = 24;    // u32
export const F_PKTS_IN: u32 = 28;     // u32

// @group flowFlags
export const FL_IN_USE: u32 = 1;
export const FL_REDIRECT: u32 = 2;   // opened by a WAN packet through a redirect
export const FL_REPLIED: u32 = 4;    // traffic seen both ways
export const FL_FIN_OUT: u32 = 8;
export const FL_FIN_IN: u32 = 16;
export const FL_NATT: u32 = 32;      // UDP 4500: natt_timeout

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
export const ESP_SIZE: u32 = 32;
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
export const ESP_FREE: u32 = 0;
export const ESP_OUTSTANDING: u32 = 1;
export const ESP_BOUND: u32 = 2;
export const ESP_SQUELCHED: u32 = 3;
export const ESPF_FORWARD: u32 = 1;   // belongs to a protocol forward (server behind the router)

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

// @group frag  (nat/fragments.ts: one datagram followed by IP ID)
export const FRAG_SIZE: u32 = 32;
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
