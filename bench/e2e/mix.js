// The mixed run: plain UDP (iperf3, lan1), NAT-T (UDP 4500 -> 4500, lan2)
// and ESP (raw IP protocol 50, one SPI per LAN host, lan1 and lan2) at once,
// every packet 64 bytes, the same for every router mode; delivered packets
// counted per class and per SPI by nftables on the WAN host's input hook.
import { join } from 'node:path';
import { runIn, stopChild } from '../../dist/lab/run.js';
import {
  FIRST_PORT, NATT_PORT, PAYLOAD, REPO, fmtInt, iperfError, iperfTotals, log, median, reachable, sleep, tail, waitListening,
} from './common.js';

export const MIX_TABLE = 'vpnmasq_mix'; // counters in the WAN host during the mix
export const ESPGEN = join(REPO, 'bench', 'espgen.py');
export const HANDSHAKE_MS = 1000; // how long an ESP generator waits for the responder's answer
export const REPLY_XOR = 0x80000000; // the responder answers SPI s with SPI s ^ REPLY_XOR

export const hex32 = (n) => `0x${(n >>> 0).toString(16).padStart(8, '0')}`;

/** The two LAN hosts' outbound SPIs for mix repetition `rep` (fresh each rep, so each rep is a new association). */
function mixSpis(rep) {
  return [0, 1].map((h) => (0x10000000 + ((rep + 1) << 8) + h + 1) >>> 0);
}

/** Yields the child's stdout JSON lines one at a time: next(ms) -> object, or null on EOF/timeout. */
function jsonLines(stream) {
  const queue = [];
  const waiters = [];
  let buf = '';
  let ended = false;
  stream.setEncoding('utf8');
  stream.on('data', (d) => {
    buf += d;
    for (let i; (i = buf.indexOf('\n')) >= 0;) {
      const line = buf.slice(0, i).trim();
      buf = buf.slice(i + 1);
      if (!line) continue;
      let v;
      try {
        v = JSON.parse(line);
      } catch {
        v = { event: 'garbage', line };
      }
      if (waiters.length) waiters.shift()(v);
      else queue.push(v);
    }
  });
  stream.on('end', () => {
    ended = true;
    while (waiters.length) waiters.shift()(null);
  });
  return (ms) => {
    if (queue.length) return Promise.resolve(queue.shift());
    if (ended) return Promise.resolve(null);
    return new Promise((resolveP) => {
      const w = (v) => {
        clearTimeout(t);
        resolveP(v);
      };
      const t = setTimeout(() => {
        const k = waiters.indexOf(w);
        if (k >= 0) waiters.splice(k, 1);
        resolveP(null);
      }, ms);
      waiters.push(w);
    });
  };
}

/** Fresh named counters in the WAN host's input hook: plain UDP, NAT-T, each host's SPI, all ESP. */
function mixCountersUp(lab, spis) {
  const ns = lab.wan[0];
  lab.tryExec(ns, ['nft', 'delete', 'table', 'ip', MIX_TABLE], { timeoutMs: 10000 });
  lab.exec(ns, ['nft', '-f', '-'], {
    timeoutMs: 10000,
    input: [
      `table ip ${MIX_TABLE} {`,
      '\tcounter c_udp {}', '\tcounter c_natt {}', '\tcounter c_esp1 {}', '\tcounter c_esp2 {}', '\tcounter c_esp {}',
      '\tchain input {',
      '\t\ttype filter hook input priority filter; policy accept;',
      `\t\tudp dport ${FIRST_PORT} counter name "c_udp"`,
      `\t\tudp dport ${NATT_PORT} counter name "c_natt" drop`, // no listener: drop quietly (no port unreachable)
      `\t\tesp spi ${spis[0]} counter name "c_esp1"`,
      `\t\tesp spi ${spis[1]} counter name "c_esp2"`,
      '\t\tip protocol esp counter name "c_esp"',
      '\t}',
      '}',
      '',
    ].join('\n'),
  });
}

/**
 * Datagrams per counter. Not the counter's packets: with vpnmasq's GRO on
 * write (option gro) a run of one flow's datagrams reaches the WAN host as
 * one UDP GSO packet, cut into datagrams only at the socket, after the
 * input hook; nft counts it once, with its one 28-byte IPv4 + UDP header
 * and every datagram's 36-byte payload. Every datagram of the mix is 64
 * bytes (28 + 36, ESP's SPI and sequence number in the UDP header's place),
 * so (bytes − 28 × packets) / 36 counts datagrams either way.
 */
function mixCounters(lab) {
  const j = JSON.parse(lab.exec(lab.wan[0], ['nft', '-j', 'list', 'counters', 'table', 'ip', MIX_TABLE], { timeoutMs: 10000 }));
  const out = {};
  for (const o of j.nftables ?? []) {
    if (o.counter) out[o.counter.name.replace(/^c_/, '')] = Math.round((o.counter.bytes - 28 * o.counter.packets) / PAYLOAD);
  }
  return out;
}

/** Per-key difference of two counter objects, nonzero keys only. */
function deltas(before, after) {
  if (!before || !after) return null;
  const out = {};
  for (const k of new Set([...Object.keys(before), ...Object.keys(after)])) {
    const d = (after[k] ?? 0) - (before[k] ?? 0);
    if (d) out[k] = d;
  }
  return out;
}

/**
 * One mixed repetition of `seconds` through whatever router mode is up.
 * Sequence: counters; ESP responder and iperf3 server in wan1; ESP
 * association lan1 then lan2 (one packet each, wait for the answer); then
 * iperf3 UDP (lan1, mixFlows flows -> :5201) and, once its streams are set
 * up, the NAT-T generator (lan2, 4500 -> :4500, one flow) and both ESP
 * generators' blasts, all for `seconds`.
 */
async function mixGenerator(lab, mode, { seconds, mixFlows }, rep) {
  const wan = lab.wan[0];
  const dstAddr = lab.addr.wan[0];
  const spis = mixSpis(rep);
  const kids = [];
  const py = (ns, args) => {
    const child = lab.spawn(ns, ['python3', ESPGEN, ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
    child.stdin.on('error', () => { /* it may exit before reading */ });
    const k = { child, next: jsonLines(child.stdout), err: tail(child.stderr, 20) };
    kids.push(k);
    return k;
  };
  const why = (k) => {
    const e = k.err().filter(Boolean);
    return e.length ? `: ${e[e.length - 1]}` : k.child.exitCode !== null ? ` (exit ${k.child.exitCode})` : '';
  };
  try {
    mixCountersUp(lab, spis);
    const responder = py(wan, ['recv', '--expect', '2', '--reply-xor', hex32(REPLY_XOR)]);
    if ((await responder.next(10000))?.event !== 'ready') throw new Error(`ESP responder in ${wan} did not start${why(responder)}`);
    {
      const child = lab.spawn(wan, ['iperf3', '-s', '-1', '-J', '-p', String(FIRST_PORT)], { stdio: ['ignore', 'pipe', 'pipe'] });
      tail(child.stdout, 10);
      tail(child.stderr, 10);
      kids.push({ child });
      if (!(await waitListening(lab, wan, FIRST_PORT, 5000))) throw new Error(`iperf3 server on port ${FIRST_PORT} did not start`);
    }

    // ESP association: lan1 first; lan2 only once lan1 is answered (or given up on)
    const esp = [];
    for (let h = 0; h < 2; h++) {
      const gen = py(lab.lan[h], [
        'send', '--dst', dstAddr, '--spi', hex32(spis[h]), '--reply-spi', hex32(spis[h] ^ REPLY_XOR), '--handshake-ms', String(HANDSHAKE_MS),
      ]);
      const hs = await gen.next(HANDSHAKE_MS + 10000);
      if (hs?.event !== 'handshake') throw new Error(`ESP generator in ${lab.lan[h]} failed${why(gen)}`);
      esp.push({ gen, handshake: hs });
    }
    responder.child.stdin.end();
    const answered = [];
    for (let v; (v = await responder.next(1000)) !== null;) if (v.event === 'spi') answered.push(v);
    await stopChild(responder.child, 1000);
    // from now on wan1 drops ESP after counting it (no raw socket, no ICMP protocol-unreachable)
    lab.exec(wan, ['nft', 'add', 'rule', 'ip', MIX_TABLE, 'input', 'ip', 'protocol', 'esp', 'drop'], { timeoutMs: 10000 });

    const natt = py(lab.lan[1], ['udp', '--dst', dstAddr, '--dport', String(NATT_PORT), '--sport', String(NATT_PORT)]);
    if ((await natt.next(10000))?.event !== 'ready') throw new Error(`NAT-T generator in ${lab.lan[1]} did not start${why(natt)}`);

    const routerBefore = await mode.routerDrops?.(lab);
    const before = mixCounters(lab);
    // iperf3 first, alone: its UDP set-up (one datagram each way per stream, no
    // retry in iperf3 3.12) must not meet a saturated router, or it hangs.
    const client = runIn(lab, lab.lan[0], [
      'iperf3', '-c', dstAddr, '-p', String(FIRST_PORT),
      '-u', '-l', String(PAYLOAD), '-P', String(mixFlows), '-b', '0', '-t', String(seconds),
      '-J', '--get-server-output', '--connect-timeout', '3000',
    ], (seconds + 25) * 1000, { onSpawn: (child) => kids.push({ child }) });
    let clientDone = false;
    client.then(() => { clientDone = true; });
    const deadline = Date.now() + 5000;
    for (;;) {
      // the server connect()s one UDP socket per stream as it accepts it
      const r = lab.tryExec(wan, ['ss', '-Hun', 'state', 'established', `sport = :${FIRST_PORT}`], { timeoutMs: 5000 });
      if (r.ok && r.stdout.split('\n').filter((l) => l.trim()).length >= mixFlows) break;
      if (clientDone) throw new Error(`iperf3 UDP: ${iperfError(await client)}`);
      if (Date.now() > deadline) throw new Error(`iperf3 UDP: ${mixFlows} streams not set up within 5 s (set-up datagram lost?)`);
      await sleep(20);
    }
    const gens = [natt, ...esp.map((e) => e.gen)];
    for (const g of gens) g.child.stdin.write(`go ${seconds}\n`);
    const blasts = gens.map((g) => g.next((seconds + 15) * 1000));
    const udpR = await client;
    const [nattDone, ...done] = await Promise.all(blasts);
    const after = mixCounters(lab);
    const routerAfter = await mode.routerDrops?.(lab);

    const udp = iperfTotals(udpR, 'iperf3 UDP');
    if (nattDone?.event !== 'done') throw new Error(`NAT-T generator in ${lab.lan[1]} did not finish${why(natt)}`);
    const d = (k) => (after[k] ?? 0) - (before[k] ?? 0);
    const cls = (sent, secs, delivered, extra = {}) => ({
      sent, seconds: secs, sentPps: sent / secs, delivered, deliveredPps: delivered / secs,
      lossPct: sent > 0 ? Math.max(0, 100 * (1 - delivered / sent)) : NaN, ...extra,
    });
    const classes = {
      udp: cls(udp.sent, udp.seconds, d('udp'), { flows: mixFlows, appDelivered: udp.delivered }),
      natt: cls(nattDone.sent, nattDone.seconds, d('natt'), { flows: 1, sendErrors: nattDone.errors }),
    };
    for (let h = 0; h < 2; h++) {
      const r = done[h];
      if (r?.event !== 'done') throw new Error(`ESP generator in ${lab.lan[h]} did not finish${why(esp[h].gen)}`);
      classes[`espLan${h + 1}`] = cls(r.sent, r.seconds, d(`esp${h + 1}`), {
        spi: hex32(spis[h]),
        replySpi: hex32(spis[h] ^ REPLY_XOR),
        answered: esp[h].handshake.replied,
        handshakeMs: esp[h].handshake.ms,
        receivedBySpi: r.received, // ESP that reached this LAN host after its handshake, by SPI
        sendErrors: r.errors,
      });
    }
    const all = Object.values(classes);
    const sent = all.reduce((acc, c) => acc + c.sent, 0);
    const delivered = all.reduce((acc, c) => acc + c.delivered, 0);
    return {
      seconds,
      classes,
      total: {
        sent,
        delivered,
        sentPps: all.reduce((acc, c) => acc + c.sentPps, 0),
        deliveredPps: all.reduce((acc, c) => acc + c.deliveredPps, 0),
        lossPct: sent > 0 ? Math.max(0, 100 * (1 - delivered / sent)) : NaN,
      },
      espOtherSpi: d('esp') - d('esp1') - d('esp2'), // ESP with neither SPI: should be 0
      responderSaw: answered, // SPIs the responder saw first packets of, with the source address
      routerDrops: deltas(routerBefore, routerAfter),
    };
  } finally {
    for (const k of kids) await stopChild(k.child, 2000);
    lab.tryExec(wan, ['nft', 'delete', 'table', 'ip', MIX_TABLE], { timeoutMs: 10000 });
  }
}

export const MIX_CLASSES = [
  ['udp', 'UDP'],
  ['natt', 'NAT-T'],
  ['espLan1', 'ESP lan1'],
  ['espLan2', 'ESP lan2'],
];

/** The mixed repetitions of one router mode (already up). Never throws. */
export async function benchMix(lab, mode, a) {
  const mix = { ok: false, error: null, reps: [], median: null, esp: null };
  try {
    for (let i = 0; i < a.mixReps; i++) {
      try {
        const r = await mixGenerator(lab, mode, { seconds: a.seconds, mixFlows: a.mixFlows }, i);
        mix.reps.push(r);
        const c = r.classes;
        const espNote = (x) => `${fmtInt(x.deliveredPps)}${x.answered ? '' : ' (unanswered)'}`;
        log(`${mode.label} mix rep ${i + 1}/${a.mixReps}: UDP ${fmtInt(c.udp.deliveredPps)}, NAT-T ${fmtInt(c.natt.deliveredPps)}, ` +
          `ESP lan1 ${espNote(c.espLan1)}, lan2 ${espNote(c.espLan2)}, total ${fmtInt(r.total.deliveredPps)} pps delivered ` +
          `of ${fmtInt(r.total.sentPps)} sent${r.routerDrops && Object.keys(r.routerDrops).length ? `; router drops ${JSON.stringify(r.routerDrops)}` : ''}`);
      } catch (e) {
        mix.reps.push({ error: e.message });
        log(`${mode.label} mix rep ${i + 1}/${a.mixReps}: FAILED: ${e.message}`);
      }
      mode.check?.();
      if (!(await reachable(lab, 3000))) throw new Error(`${mode.label}: path LAN->WAN broke after mix rep ${i + 1}`);
    }
    const good = mix.reps.filter((r) => !r.error);
    if (good.length === 0) throw new Error('every mixed repetition failed');
    mix.median = { goodReps: good.length, total: {} };
    for (const [k] of MIX_CLASSES) {
      mix.median[k] = {
        deliveredPps: median(good.map((r) => r.classes[k].deliveredPps)),
        sentPps: median(good.map((r) => r.classes[k].sentPps)),
        lossPct: median(good.map((r) => r.classes[k].lossPct)),
      };
    }
    for (const f of ['deliveredPps', 'sentPps', 'lossPct']) mix.median.total[f] = median(good.map((r) => r.total[f]));
    // what happened to the ESP associations, over the good reps
    const stray = (h) => good.reduce((acc, r) => {
      const other = r.classes[`espLan${2 - h}`].replySpi; // the other host's answer SPI
      return acc + (r.classes[`espLan${h + 1}`].receivedBySpi?.[other] ?? 0);
    }, 0);
    mix.esp = {
      lan1Answered: good.filter((r) => r.classes.espLan1.answered).length,
      lan2Answered: good.filter((r) => r.classes.espLan2.answered).length,
      // answers meant for the other LAN host's SPI that reached this one
      lan1GotLan2Answers: stray(0),
      lan2GotLan1Answers: stray(1),
      espOtherSpi: good.reduce((acc, r) => acc + r.espOtherSpi, 0),
      routerDrops: good.reduce((acc, r) => {
        for (const [k, v] of Object.entries(r.routerDrops ?? {})) acc[k] = (acc[k] ?? 0) + v;
        return acc;
      }, {}),
    };
    mix.ok = true;
  } catch (e) {
    mix.error = e.message;
    log(`${mode.label} mix: FAILED: ${e.message}`);
  }
  return mix;
}

export function mixComparison(k, v) {
  if (!k?.median || !v?.median) return null;
  const ratio = (x, y) => (Number.isFinite(x) && Number.isFinite(y) && y > 0 ? x / y : NaN);
  const cmp = { deliveredRatio: {}, sentRatio: {} };
  for (const [c] of [...MIX_CLASSES, ['total']]) {
    cmp.deliveredRatio[c] = ratio(v.median[c].deliveredPps, k.median[c].deliveredPps);
    cmp.sentRatio[c] = ratio(v.median[c].sentPps, k.median[c].sentPps);
  }
  return cmp;
}
