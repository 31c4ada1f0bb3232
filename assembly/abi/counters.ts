// Counter slots and the event ring: numbers the supervisor reads out of the
// engine's memory. The one source: src/engine/abi.gen.ts is generated from
// this file (scripts/gen-abi.mjs; `@group` lines name the groups there).

// @group counters  (u64 slots at countersPtr(); the supervisor's names are camelCase of C_*)
export const C_RX_INSIDE: u32 = 0;
export const C_RX_OUTSIDE: u32 = 1;
export const C_PASS_INSIDE: u32 = 2;
export const C_PASS_OUTSIDE: u32 = 3;
export const C_FLOWS_NEW: u32 = 4;
export const C_FLOWS_EXPIRED: u32 = 5;
export const C_FLOWS_ACTIVE: u32 = 6;
export const C_BINDINGS_ACTIVE: u32 = 7;
export const C_FRAGS_ACTIVE: u32 = 8;
export const C_EVENTS_LOST: u32 = 9;
export const C_LOCAL_ACCEPT: u32 = 10;
export const C_FLOWS_FLUSHED: u32 = 11;
export const C_ESP_ACTIVE: u32 = 12;
export const C_IKE_ACTIVE: u32 = 13;
export const C_CALLS_ACTIVE: u32 = 14;
export const C_ESP_BOUND: u32 = 15;
export const C_EARLY_DROPS: u32 = 16;   // unanswered entries dropped to make room in a full table
export const C_RX_BYTES_INSIDE: u32 = 17;   // IP bytes read from each TUN (the metrics' bytes per side)
export const C_RX_BYTES_OUTSIDE: u32 = 18;
export const C_PASS_BYTES_INSIDE: u32 = 19; // IP bytes of the packets passed on, by the side they came from
export const C_PASS_BYTES_OUTSIDE: u32 = 20;
export const C_FRAGS_HELD: u32 = 21;          // later fragments held for their first (also counted frag_no_head)
export const C_FRAGS_RELEASED: u32 = 22;      // held fragments sent on when their first came
export const C_FRAGS_HOLD_EXPIRED: u32 = 23;  // held fragments whose first never came in time
export const C_FRAGS_HOLD_DISCARDED: u32 = 24; // held fragments their first could not take (overlap, contested ID)
export const C_IP_IDS_REWRITTEN: u32 = 25;    // outbound datagrams given a fresh IP ID
export const C_GSO_RX: u32 = 26;          // GSO super-packets read (virtio_net_hdr gso_type set)
export const C_GSO_BYTES: u32 = 27;       // their IP bytes
export const C_CSUM_PARTIAL: u32 = 28;    // packets whose L4 checksum was a NEEDS_CSUM partial sum
export const C_USO_SPLIT: u32 = 29;       // UDP GSO super-packets to/from port 500 cut into datagrams in software (nat/segment.ts)
export const C_USO_DATAGRAMS: u32 = 30;   // the datagrams they were cut into
export const C_GRO_GROUPS: u32 = 31;      // UDP GSO writes made of several datagrams of one batch (nat/gro.ts)
// Past the drop reasons (C_DROP_BASE + Drop.COUNT ≤ 127): counters added after the drop block was laid out.
export const C_GRO_DATAGRAMS: u32 = 127;  // the datagrams those writes carried (leaders included)

// @group counterLayout
export const C_DROP_BASE: u32 = 32; // + reason (abi/reasons.ts)
export const COUNTER_SLOTS: u32 = 128;

// @group eventTypes
export const EV_FLOW_NEW: u32 = 1;
export const EV_FLOW_EXPIRED: u32 = 2;
export const EV_DROP: u32 = 3;
export const EV_FLUSH: u32 = 4;
export const EV_ESP_BOUND: u32 = 5;      // inbound SPI (extra) associated with a LAN host
export const EV_AH_REFUSED: u32 = 6;     // once per LAN host / server pair
export const EV_IKE_COLLISION: u32 = 7;

// @group event  (ring of EVENT_CAP records after an EVENT_HEADER-byte header:
// u32 head (engine writes) at 0, u32 tail (supervisor writes) at 4)
export const EVENT_CAP: u32 = 4096; // power of two
export const EVENT_HEADER: u32 = 64;
export const EVENT_SIZE: u32 = 32;
export const EVT_TYPE: u32 = 0;       // u8 EV_*
export const EVT_REASON: u32 = 1;     // u8 Drop
export const EVT_PROTO: u32 = 2;      // u8
export const EVT_SIDE: u32 = 3;       // u8
export const EVT_LAN_ADDR: u32 = 4;   // u32 raw
export const EVT_REM_ADDR: u32 = 8;   // u32 raw
export const EVT_WAN_ADDR: u32 = 12;  // u32 raw
export const EVT_LAN_PORT: u32 = 16;  // u16
export const EVT_REM_PORT: u32 = 18;  // u16
export const EVT_ALIAS_PORT: u32 = 20; // u16 (22: u16 spare)
export const EVT_TIME: u32 = 24;      // u32 deciseconds
export const EVT_EXTRA: u32 = 28;     // u32
