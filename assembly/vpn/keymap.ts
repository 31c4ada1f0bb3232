// A fixed open-addressing map from a 64-bit key (two u32 words) to a u32
// value, the keys kept in the slots so removal (backward shift) never has
// to look at the records. Slot: u32 k1, u32 k2, u32 value (0 = empty).
// The VPN tables (ESP SPIs, IKE cookies, PPTP Call IDs) index through it.

import { hash1 } from "../nat/hash";

const SLOT: u32 = 12;

@inline function home(k1: u32, k2: u32, mask: u32): u32 {
  return hash1(<u64>k1 | (<u64>k2 << 32)) & mask; // nat/hash.ts
}

@inline function at(base: usize, i: u32): usize { return base + <usize>i * SLOT; }

// Several entries may share a key (a folded key, or a PPTP Call ID a server
// reuses while the old call lingers): lookups never stop at the first key
// match. Callers walk every slot holding the key with kmFirst/kmNext and
// compare the full key (and liveness) against the record themselves.

/** Slot index of the first slot holding (k1, k2), or -1 when none does. */
@inline export function kmFirst(base: usize, mask: u32, k1: u32, k2: u32): i32 {
  return kmScan(base, mask, k1, k2, home(k1, k2, mask));
}

/** The next slot after `i` holding (k1, k2), or -1 at the end of the probe run. */
@inline export function kmNext(base: usize, mask: u32, k1: u32, k2: u32, i: i32): i32 {
  return kmScan(base, mask, k1, k2, (<u32>i + 1) & mask);
}

/** The value (record + 1 and flags) in slot `i`. */
@inline export function kmValueAt(base: usize, i: i32): u32 { return load<u32>(at(base, <u32>i), 8); }

/** Whether a slot holds key (k1, k2) with value `v` exactly (table checks; several values may share a key). */
export function kmHas(base: usize, mask: u32, k1: u32, k2: u32, v: u32): bool {
  for (let i = kmFirst(base, mask, k1, k2); i >= 0; i = kmNext(base, mask, k1, k2, i)) if (kmValueAt(base, i) == v) return true;
  return false;
}

function kmScan(base: usize, mask: u32, k1: u32, k2: u32, i: u32): i32 {
  while (true) {
    const s = at(base, i);
    if (load<u32>(s, 8) == 0) return -1;
    if (load<u32>(s) == k1 && load<u32>(s, 4) == k2) return <i32>i;
    i = (i + 1) & mask;
  }
  return -1;
}

export function kmInsert(base: usize, mask: u32, k1: u32, k2: u32, v: u32): void {
  let i = home(k1, k2, mask);
  while (load<u32>(at(base, i), 8) != 0) i = (i + 1) & mask;
  const s = at(base, i);
  store<u32>(s, k1); store<u32>(s, k2, 4); store<u32>(s, v, 8);
}

export function kmRemove(base: usize, mask: u32, k1: u32, k2: u32, v: u32): void {
  let i = home(k1, k2, mask);
  while (true) {
    const s = at(base, i);
    const x = load<u32>(s, 8);
    if (x == 0) return;
    if (x == v && load<u32>(s) == k1 && load<u32>(s, 4) == k2) break;
    i = (i + 1) & mask;
  }
  let j = i;
  while (true) {
    j = (j + 1) & mask;
    const sj = at(base, j);
    if (load<u32>(sj, 8) == 0) break;
    const k = home(load<u32>(sj), load<u32>(sj, 4), mask);
    const stays = i <= j ? (i < k && k <= j) : (i < k || k <= j);
    if (stays) continue;
    memory.copy(at(base, i), sj, SLOT);
    i = j;
  }
  store<u32>(at(base, i), 0, 8);
}

export function kmClear(base: usize, mask: u32): void {
  memory.fill(base, 0, (<usize>mask + 1) * SLOT);
}

/** Home slot of the key in slot i, or 0xffffffff when empty (nat/probe.ts). */
export function kmHomeAt(base: usize, mask: u32, i: u32): u32 {
  const s = at(base, i);
  return load<u32>(s, 8) == 0 ? 0xffffffff : home(load<u32>(s), load<u32>(s, 4), mask);
}
