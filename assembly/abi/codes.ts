// Small codes that cross the boundary: packet sides, verdicts, the rule
// encoding of addRule. src/engine/abi.gen.ts is generated from this file.

// @group sides
export const SIDE_INSIDE: u32 = 0;
export const SIDE_OUTSIDE: u32 = 1;

// @group verdicts
export const VERDICT_DROP: u8 = 0;
export const VERDICT_PASS: u8 = 1;
// A datagram written inside an earlier slot's UDP GSO write (nat/gro.ts): never written on its own;
// the slot before it in its group links to it (groLinksPtr()).
export const VERDICT_FOLLOW: u8 = 2;

// @group rules  (addRule's srcZone, destZone, target)
export const ZONE_WAN: u32 = 0;
export const ZONE_LAN: u32 = 1;
export const DEST_ROUTER: u32 = 0;
export const DEST_FORWARD: u32 = 1; // not the router: LAN → WAN, or WAN → a LAN address
export const TARGET_NONE: u32 = 0;
export const TARGET_ACCEPT: u32 = 1;
export const TARGET_DROP: u32 = 2;
export const TARGET_REJECT: u32 = 3;

// @group protocols  (IP protocol numbers the engine handles)
export const PROTO_ICMP: u32 = 1;
export const PROTO_TCP: u32 = 6;
export const PROTO_UDP: u32 = 17;
export const PROTO_GRE: u32 = 47;
export const PROTO_ESP: u32 = 50;
export const PROTO_AH: u32 = 51;

// @group reflection  (setRedirectReflection: fw4 reflection / reflection_src of a port forward, nat/hairpin.ts)
export const REFLECT_OFF: u32 = 0;      // reflection '0': a LAN host reaching the forward through the WAN address gets nothing
export const REFLECT_INTERNAL: u32 = 1; // the server sees the router's LAN address (fw4's default)
export const REFLECT_EXTERNAL: u32 = 2; // the server sees the WAN address

// @group snapshot  (assembly/snapshot.ts: the regions a state snapshot saves, and restore's answers)
export const SNAP_LAYOUT_VERSION: u32 = 1; // bump when a saved record's meaning changes without its size
export const SNAP_COUNTERS: u32 = 1;
export const SNAP_FLOWS: u32 = 2;
export const SNAP_ESP: u32 = 3;
export const SNAP_IKE: u32 = 4;
export const SNAP_CALLS: u32 = 5;
export const SNAP_FLOW_ACCT: u32 = 6;  // with option acct: the flows' byte counters, record for record beside SNAP_FLOWS
export const SNAP_MAX_LIFETIME_DS: u32 = 21474830; // no saved entry has longer left: the largest timeout (2147483 s)
export const RESTORE_OK: u32 = 0;
export const RESTORE_BAD_REGION: u32 = 1;   // a region id this engine does not have
export const RESTORE_BAD_COUNT: u32 = 2;    // more records than the table holds, or outside the staging area
export const RESTORE_BAD_FIELD: u32 = 3;    // a field out of range
export const RESTORE_DUPLICATE: u32 = 4;    // a key twice
export const RESTORE_BAD_BINDING: u32 = 5;  // a flow on another LAN endpoint's port
export const RESTORE_FULL: u32 = 6;         // a table or list overflowed
export const RESTORE_INCONSISTENT: u32 = 7; // restoreVerify: a record its indexes do not find
export const RESTORE_ORDER: u32 = 8;        // not into an empty engine, or regions out of order

// @group probe  (hashProbe(index, stat): probe lengths over one open-addressing index, for tests and benches)
export const INDEX_FLOW_OUT: u32 = 0; // flow table, outbound key (nat/table.ts)
export const INDEX_FLOW_IN: u32 = 1;  // flow table, inbound key
export const INDEX_BIND: u32 = 2;     // port bindings by LAN endpoint (nat/binding.ts)
export const INDEX_SRC: u32 = 3;      // per-source counters (nat/limits.ts)
export const INDEX_ESP: u32 = 4;      // ESP SPIs (vpn/keymap.ts users from here on)
export const INDEX_IKE: u32 = 5;      // IKE cookies
export const INDEX_CALL: u32 = 6;     // PPTP Call IDs
export const INDEX_PEER: u32 = 7;     // (LAN host, server) pairs
export const PROBE_SLOTS: u32 = 0;    // slots in the index
export const PROBE_ENTRIES: u32 = 1;  // occupied slots
export const PROBE_MEAN: u32 = 2;     // mean slots a successful lookup reads (distance from home + 1)
export const PROBE_MAX: u32 = 3;      // the most slots a successful lookup reads
export const PROBE_RUN_MEAN: u32 = 4; // mean length of a run of occupied slots (a cluster)
export const PROBE_RUN_MAX: u32 = 5;  // the longest run
