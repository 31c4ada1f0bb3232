// Flow accounting (option acct, Linux's nf_conntrack_acct): bytes per flow
// and direction, beside the packet counters of the flow record. Off by
// default, as in Linux: 16 more bytes per flow would take the table past its
// budget of 64 bytes per flow (layout.ts hashSizeFor). When on, the counters
// live in their own region (layout.ts flowAcct, FLOW_ACCT_SIZE per record,
// fields FA_* in abi/records.ts), so the flow record and everything that
// reads it stay as they are, and when off the packet path pays one branch.
//
// A byte is what conntrack counts (skb->len after ip_rcv trimmed it): the IP
// datagram's total length, headers included, and for a GSO super-packet its
// whole length, which is what the kernel hands over as one packet. u64: a
// flow that moves terabytes does not wrap.

import { RESTORE_BAD_COUNT, RESTORE_OK } from "../abi/codes";
import { FA_BYTES_IN, FA_BYTES_OUT, FLOW_ACCT_SIZE, FLOW_SIZE } from "../abi/records";
import { acctOn, flowAcct, flows } from "../layout";

export const ACCT_OUT: usize = FA_BYTES_OUT;
export const ACCT_IN: usize = FA_BYTES_IN;

@inline function at(flow: u32): usize { return flowAcct + <usize>flow * FLOW_ACCT_SIZE; }

/** Counts packet `p` (its IP total length) for flow `flow` in direction `dir` (ACCT_OUT/ACCT_IN). */
@inline export function flowAcctAdd(flow: u32, dir: usize, p: usize): void {
  if (acctOn) {
    const a = at(flow) + dir;
    store<u64>(a, load<u64>(a) + <u64>bswap<u16>(load<u16>(p, 2)));
  }
}

/** The same for the flow whose record is at `r` (where the handler holds the record, not its number). */
@inline export function flowAcctAddRec(r: usize, dir: usize, p: usize): void {
  if (acctOn) flowAcctAdd(<u32>((r - flows) / FLOW_SIZE), dir, p);
}

/** A new flow starts at zero bytes. */
@inline export function flowAcctClear(flow: u32): void {
  if (acctOn) { store<u64>(at(flow), 0, FA_BYTES_OUT); store<u64>(at(flow), 0, FA_BYTES_IN); }
}

// ---- state snapshot (assembly/snapshot.ts) ---------------------------------
// The snapshot saves the counters record for record beside the saved flow
// records; restore packs the live flows into records 0, 1, 2 … and skips
// the free and expired ones, so saved record k may come back as flow j ≤ k.
// While the flows are restored, the region itself holds that map (entry k:
// j + 1, or 0 when record k was skipped); each saved counter record k then
// moves to flow j, which never overwrites a map entry still to be read
// (j ≤ k, and the entries are read in order). Nothing saved is used as an
// index: the map is the engine's own.

/** Saved flow record `saved` was restored as flow `flow` (or skipped: NO_FLOW). */
export const NO_FLOW: u32 = 0xffffffff;
export function acctRestoreNote(saved: u32, flow: u32): void {
  store<u64>(at(saved), flow == NO_FLOW ? 0 : <u64>flow + 1);
}

/** Saved counter record `saved` (FLOW_ACCT_SIZE bytes at `src`) to the flow its flow record became. */
export function acctRestore(saved: u32, src: usize): void {
  const m = load<u64>(at(saved));
  if (m == 0) return;
  const out = load<u64>(src, FA_BYTES_OUT);
  const inb = load<u64>(src, FA_BYTES_IN);
  const d = at(<u32>(m - 1));
  store<u64>(d, out, FA_BYTES_OUT);
  store<u64>(d, inb, FA_BYTES_IN);
}

/**
 * Ends the counters' restore: `savedFlows` flow records were in the file,
 * `savedAcct` counter records (0: the snapshot had none, acct was off when it
 * was taken: every restored flow starts at zero), `restored` flows live now.
 * Clears what is left of the map; a counter region of another length than
 * the flow region is refused (RESTORE_BAD_COUNT).
 */
export function acctRestoreSettle(savedFlows: u32, savedAcct: u32, restored: u32): u32 {
  if (savedAcct == 0) { memory.fill(flowAcct, 0, <usize>savedFlows * FLOW_ACCT_SIZE); return RESTORE_OK; }
  if (savedAcct != savedFlows) return RESTORE_BAD_COUNT;
  if (savedFlows > restored) memory.fill(at(restored), 0, <usize>(savedFlows - restored) * FLOW_ACCT_SIZE);
  return RESTORE_OK;
}
