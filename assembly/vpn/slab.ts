// Fixed record pools for the VPN tables: a free list threaded through the
// free records (next + 1 at offset 0) and a bump pointer for records never
// used. State block (16 bytes): u32 freeHead, u32 bumpNext, u32 capacity, u32 recordSize.

import { hash1 } from "../nat/hash";

@inline export function slabInit(state: usize, capacity: u32, recordSize: u32): void {
  store<u32>(state, 0); store<u32>(state, 0, 4); store<u32>(state, capacity, 8); store<u32>(state, recordSize, 12);
}

/** Returns record index + 1, or 0 when full. */
export function slabAlloc(state: usize, records: usize): u32 {
  const free = load<u32>(state);
  let r: u32;
  if (free != 0) {
    r = free - 1;
    store<u32>(state, load<u32>(records + <usize>r * load<u32>(state, 12)));
  } else {
    const bump = load<u32>(state, 4);
    if (bump >= load<u32>(state, 8)) return 0;
    r = bump;
    store<u32>(state, bump + 1, 4);
  }
  memory.fill(records + <usize>r * load<u32>(state, 12), 0, load<u32>(state, 12));
  return r + 1;
}

export function slabFree(state: usize, records: usize, r: u32): void {
  const rec = records + <usize>r * load<u32>(state, 12);
  memory.fill(rec, 0, load<u32>(state, 12));
  store<u32>(rec, load<u32>(state));
  store<u32>(state, r + 1);
}

@inline export function slabHighWater(state: usize): u32 { return load<u32>(state, 4); }

/** The n-th eviction sample among `hw` records: spread over the pool, not predictable from outside (seeded). */
export function evictSample(n: u32, hw: u32): u32 {
  return hash1(<u64>n) % hw; // nat/hash.ts
}
