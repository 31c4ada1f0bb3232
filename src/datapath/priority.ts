// The data path's scheduling priority (`option priority`). The kernel's own
// NAT forwards in softirq, which runs ahead of every process on the CPU the
// packet arrived on; vpnmasq's batch loop is an ordinary thread, and on a
// busy machine (the endpoints of a transfer, other daemons) a woken thread
// waits for its turn: milliseconds with two or three runnable processes per
// CPU, during which every packet waits in the TUN ring (README "Latency under
// load": 4–8 ms median ping under load at nice 0, 0.2 ms raised).
//
// Linux schedules threads, not processes: both setpriority(2) with pid 0 and
// sched_setscheduler(2) with pid 0 change the calling thread only, so this
// must run on the thread that runs the batch loop.
import { getPriority, setPriority } from 'node:os';
import { loadNative } from '../tun/tun.js';
import type { Priority } from '../config/options.js';

/** nice value for 'high' (and for 'realtime' when the kernel refuses SCHED_FIFO). */
export const HIGH_NICE = -10;
/** SCHED_FIFO priority for 'realtime': above ordinary threads, below the kernel's IRQ threads (50). */
export const REALTIME_PRIO = 10;

export interface PriorityApplied {
  /** what the thread runs at: 'SCHED_FIFO 10', 'nice -10', 'nice 0' */
  applied: string;
  /** why less than asked (a refusal), or null */
  note: string | null;
}

/** Sets the calling thread's scheduling for `want`; never throws (a refusal is reported and the next level down taken). */
export function applyDataPathPriority(want: Priority): PriorityApplied {
  let note: string | null = null;
  if (want === 'realtime') {
    try {
      loadNative().setRealtime(REALTIME_PRIO);
      return { applied: `SCHED_FIFO ${REALTIME_PRIO}`, note: null };
    } catch (err) {
      note = `SCHED_FIFO refused: ${(err as Error).message}`;
    }
  }
  // Ordinary scheduling, whatever the thread inherited (a parent running realtime).
  try {
    loadNative().setRealtime(0);
  } catch {
    // already SCHED_OTHER, or not ours to change: nice below still says what it runs at
  }
  if (want !== 'normal') {
    try {
      setPriority(0, HIGH_NICE);
      return { applied: `nice ${HIGH_NICE}`, note };
    } catch (err) {
      note = `${note ? `${note}; ` : ''}nice ${HIGH_NICE} refused: ${(err as Error).message}`;
    }
  }
  try {
    setPriority(0, 0);
  } catch {
    // raising one's own nice back to 0 needs CAP_SYS_NICE; it was 0 unless inherited
  }
  return { applied: `nice ${getPriority(0)}`, note };
}
