// Small codes that cross the boundary: packet sides, verdicts, the rule
// encoding of addRule. src/engine/abi.gen.ts is generated from this file.

// @group sides
export const SIDE_INSIDE: u32 = 0;
export const SIDE_OUTSIDE: u32 = 1;

// @group verdicts
export const VERDICT_DROP: u8 = 0;
export const VERDICT_PASS: u8 = 1;

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
