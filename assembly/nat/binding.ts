// Port bindings: which LAN endpoint owns an alias port on the WAN address.
// One binding per (protocol, lanAddr, lanPort) whatever the remote, which is
// endpoint-independent mapping (RFC 4787 REQ-1, RFC 5382 REQ-1): a LAN
// socket keeps one public port toward every server. Flows hold references;
// a binding dies with its last flow unless a redirect made it static.
//
// Owner table: BIND_PROTOS × 65536 entries of BIND_SIZE bytes (B_* in abi/records.ts).
// bindIndex: open addressing over (proto, lanAddr, lanPort) → owner slot + 1.

import { PROTO_ICMP, PROTO_TCP } from "../abi/codes";
import { C_BINDINGS_ACTIVE } from "../abi/counters";
import {
  BF_STATIC, BF_USED, BIND_ICMP, BIND_PROTOS, BIND_SIZE, BIND_TCP, BIND_UDP, B_FLAGS, B_LAN_ADDR, B_LAN_PORT,
  B_REFS,
} from "../abi/records";
import { bindings, bindIndex, BIND_INDEX_SIZE } from "../layout";
import { countAdd, poolHi, poolLo } from "./state";
import { hash1 } from "./hash";

export const NO_PORT: u32 = 0xffffffff;
const INDEX_MASK: u32 = BIND_INDEX_SIZE - 1;

@inline export function protoIndex(proto: u32): u32 {
  return proto == PROTO_TCP ? BIND_TCP : proto == PROTO_ICMP ? BIND_ICMP : BIND_UDP;
}
@inline function slotOf(pi: u32, alias: u32): u32 { return (pi << 16) | alias; }
@inline export function owner(pi: u32, alias: u32): usize {
  return bindings + <usize>slotOf(pi, alias) * BIND_SIZE;
}
@inline function keyHash(pi: u32, lanA: u32, lanP: u32): u32 {
  return hash1(<u64>lanA | (<u64>lanP << 32) | (<u64>pi << 48)); // nat/hash.ts
}

/** Home slot of the entry in index slot i, or 0xffffffff when empty (nat/probe.ts). */
export function bindHomeAt(i: u32): u32 {
  const x = load<u32>(bindIndex + (<usize>i << 2));
  if (x == 0) return 0xffffffff;
  const s = x - 1;
  const o = bindings + <usize>s * BIND_SIZE;
  return keyHash(s >>> 16, load<u32>(o, B_LAN_ADDR), load<u16>(o, B_LAN_PORT)) & INDEX_MASK;
}

/** Alias port of an existing binding, or NO_PORT. */
export function bindFind(pi: u32, lanA: u32, lanP: u32): u32 {
  let i = keyHash(pi, lanA, lanP) & INDEX_MASK;
  while (true) {
    const e = load<u32>(bindIndex + (<usize>i << 2));
    if (e == 0) return NO_PORT;
    const s = e - 1;
    if ((s >>> 16) == pi) {
      const o = bindings + <usize>s * BIND_SIZE;
      if (load<u32>(o, B_LAN_ADDR) == lanA && load<u16>(o, B_LAN_PORT) == lanP) return s & 0xffff;
    }
    i = (i + 1) & INDEX_MASK;
  }
  return NO_PORT;
}

function indexAdd(pi: u32, lanA: u32, lanP: u32, alias: u32): void {
  let i = keyHash(pi, lanA, lanP) & INDEX_MASK;
  while (load<u32>(bindIndex + (<usize>i << 2)) != 0) i = (i + 1) & INDEX_MASK;
  store<u32>(bindIndex + (<usize>i << 2), slotOf(pi, alias) + 1);
}

function indexDel(pi: u32, lanA: u32, lanP: u32, alias: u32): void {
  const e = slotOf(pi, alias) + 1;
  let i = keyHash(pi, lanA, lanP) & INDEX_MASK;
  while (true) {
    const x = load<u32>(bindIndex + (<usize>i << 2));
    if (x == 0) return;
    if (x == e) break;
    i = (i + 1) & INDEX_MASK;
  }
  let j = i;
  while (true) {
    j = (j + 1) & INDEX_MASK;
    const x = load<u32>(bindIndex + (<usize>j << 2));
    if (x == 0) break;
    const s = x - 1;
    const o = bindings + <usize>s * BIND_SIZE;
    const k = keyHash(s >>> 16, load<u32>(o, B_LAN_ADDR), load<u16>(o, B_LAN_PORT)) & INDEX_MASK;
    const stays = i <= j ? (i < k && k <= j) : (i < k || k <= j);
    if (stays) continue;
    store<u32>(bindIndex + (<usize>i << 2), x);
    i = j;
  }
  store<u32>(bindIndex + (<usize>i << 2), 0);
}

function claim(pi: u32, alias: u32, lanA: u32, lanP: u32, flags: u32): void {
  const o = owner(pi, alias);
  store<u32>(o, lanA, B_LAN_ADDR);
  store<u32>(o, 0, B_REFS);
  store<u16>(o, <u16>lanP, B_LAN_PORT);
  store<u16>(o, <u16>(flags | BF_USED), B_FLAGS);
  indexAdd(pi, lanA, lanP, alias);
  countAdd(C_BINDINGS_ACTIVE, 1);
}

/**
 * Takes a reference on the binding of a LAN endpoint, creating it if needed:
 * the LAN port itself when free (source port preservation), else a port of
 * the masquerade pool. Returns the alias port or NO_PORT when all are taken.
 */
export function bindAcquire(pi: u32, lanA: u32, lanP: u32): u32 {
  let alias = bindFind(pi, lanA, lanP);
  if (alias == NO_PORT) {
    if (lanP != 0 && (load<u16>(owner(pi, lanP), B_FLAGS) & BF_USED) == 0) {
      alias = lanP;
    } else {
      const span = poolHi - poolLo + 1;
      let k = keyHash(pi, lanA, lanP) % span;
      for (let n: u32 = 0; n < span; n++) {
        const cand = poolLo + k;
        if ((load<u16>(owner(pi, cand), B_FLAGS) & BF_USED) == 0) { alias = cand; break; }
        k = k + 1 == span ? 0 : k + 1;
      }
      if (alias == NO_PORT) return NO_PORT;
    }
    claim(pi, alias, lanA, lanP, 0);
  }
  const o = owner(pi, alias);
  store<u32>(o, load<u32>(o, B_REFS) + 1, B_REFS);
  return alias;
}

/** Adds a reference to a binding already found. */
export function bindRef(pi: u32, alias: u32): void {
  const o = owner(pi, alias);
  store<u32>(o, load<u32>(o, B_REFS) + 1, B_REFS);
}

export function bindRelease(pi: u32, alias: u32): void {
  const o = owner(pi, alias);
  const flags = <u32>load<u16>(o, B_FLAGS);
  if ((flags & BF_USED) == 0) return;
  const refs = load<u32>(o, B_REFS);
  if (refs > 1 || (flags & BF_STATIC) != 0) {
    if (refs > 0) store<u32>(o, refs - 1, B_REFS);
    return;
  }
  indexDel(pi, load<u32>(o, B_LAN_ADDR), load<u16>(o, B_LAN_PORT), alias);
  store<u32>(o, 0, B_REFS);
  store<u16>(o, 0, B_FLAGS);
  countAdd(C_BINDINGS_ACTIVE, -1);
}

/**
 * Reserves an alias port for a redirect (port forward) to lanA:lanP. The
 * server's own outbound traffic from lanP then leaves from that same port.
 * A dynamic binding on the port is taken over; its flows age out.
 */
export function bindReserve(pi: u32, alias: u32, lanA: u32, lanP: u32): void {
  const o = owner(pi, alias);
  const flags = <u32>load<u16>(o, B_FLAGS);
  if ((flags & BF_USED) != 0) {
    indexDel(pi, load<u32>(o, B_LAN_ADDR), load<u16>(o, B_LAN_PORT), alias);
    countAdd(C_BINDINGS_ACTIVE, -1);
  }
  // The endpoint might hold another dynamic binding; leave it, lookups find
  // whichever the index returns first, and both are valid for that endpoint.
  const refs = (flags & BF_USED) != 0 ? load<u32>(o, B_REFS) : 0;
  claim(pi, alias, lanA, lanP, BF_STATIC);
  store<u32>(o, refs, B_REFS);
}

/** Clears the static mark of every binding (before redirects are re-added). */
export function bindUnreserveAll(): void {
  for (let pi: u32 = 0; pi < BIND_PROTOS; pi++) {
    for (let a: u32 = 0; a < 65536; a++) {
      const o = owner(pi, a);
      const flags = <u32>load<u16>(o, B_FLAGS);
      if ((flags & BF_STATIC) == 0) continue;
      store<u16>(o, <u16>(flags & ~BF_STATIC), B_FLAGS);
      if (load<u32>(o, B_REFS) == 0) {
        indexDel(pi, load<u32>(o, B_LAN_ADDR), load<u16>(o, B_LAN_PORT), a);
        store<u16>(o, 0, B_FLAGS);
        countAdd(C_BINDINGS_ACTIVE, -1);
      }
    }
  }
}

/** After a flush of all flows: dynamic bindings go, static ones lose their refs. */
export function bindResetDynamic(): void {
  for (let pi: u32 = 0; pi < BIND_PROTOS; pi++) {
    for (let a: u32 = 0; a < 65536; a++) {
      const o = owner(pi, a);
      const flags = <u32>load<u16>(o, B_FLAGS);
      if ((flags & BF_USED) == 0) continue;
      if ((flags & BF_STATIC) != 0) { store<u32>(o, 0, B_REFS); continue; }
      indexDel(pi, load<u32>(o, B_LAN_ADDR), load<u16>(o, B_LAN_PORT), a);
      store<u32>(o, 0, B_REFS);
      store<u16>(o, 0, B_FLAGS);
      countAdd(C_BINDINGS_ACTIVE, -1);
    }
  }
}

// ---- state snapshot restore -------------------------------------------------

/**
 * A restored flow's reference on port `alias` for (lanA, lanP): takes the
 * binding when free, adds a reference when it is that endpoint's. 0 ok;
 * 1 a redirect reserves the port for another endpoint now (the config
 * changed: the flow is dropped); 2 another endpoint's dynamic binding (an
 * inconsistent snapshot).
 */
export function bindRestore(pi: u32, alias: u32, lanA: u32, lanP: u32): u32 {
  const o = owner(pi, alias);
  const flags = <u32>load<u16>(o, B_FLAGS);
  if ((flags & BF_USED) == 0) {
    claim(pi, alias, lanA, lanP, 0);
  } else if (load<u32>(o, B_LAN_ADDR) != lanA || <u32>load<u16>(o, B_LAN_PORT) != lanP) {
    return (flags & BF_STATIC) != 0 ? 1 : 2;
  }
  store<u32>(o, load<u32>(o, B_REFS) + 1, B_REFS);
  return 0;
}

/** The binding of `alias` belongs to (lanA, lanP) and has a reference. */
export function bindOwns(pi: u32, alias: u32, lanA: u32, lanP: u32): bool {
  const o = owner(pi, alias);
  return (load<u16>(o, B_FLAGS) & <u16>BF_USED) != 0 && load<u32>(o, B_LAN_ADDR) == lanA &&
    <u32>load<u16>(o, B_LAN_PORT) == lanP && load<u32>(o, B_REFS) > 0;
}
