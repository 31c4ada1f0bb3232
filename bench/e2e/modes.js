// The router modes the bench compares, each with up/down and the router's
// drop counters: the kernel's nftables masquerade and vpnmasq run in the
// router namespace.
import { execFile, execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, rmSync, rmdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { stopChild } from '../../dist/lab/run.js';
import { TUN_PATH_MODE, log, sleep, tail } from './common.js';
import { FWD_PORT } from './tcp.js';

export const NFT_TABLE = 'vpnmasq_bench';

/** rx/tx drops of every device in the router namespace (the TUNs' tx queue, veth backlogs), as `dev:rx_dropped`. */
function deviceDrops(lab) {
  const r = lab.tryExec(lab.router, ['ip', '-s', '-j', 'link', 'show'], { timeoutMs: 5000 });
  const out = {};
  if (!r.ok) return out;
  try {
    for (const d of JSON.parse(r.stdout)) {
      const st = d.stats64 ?? d.stats;
      if (!st || d.ifname === 'lo') continue;
      out[`${d.ifname}:rx_dropped`] = st.rx?.dropped ?? 0;
      out[`${d.ifname}:tx_dropped`] = st.tx?.dropped ?? 0;
    }
  } catch { /* no JSON: no device drops */ }
  return out;
}

export function kernelMode() {
  return {
    name: 'kernel',
    label: 'kernel-nft',
    async up(lab) {
      // After a vpnmasq mode (--rounds): its fail-closed guard outlives it, by design, and would drop every forwarded packet.
      lab.tryExec(lab.router, ['nft', 'delete', 'table', 'ip', 'vpnmasq_guard'], { timeoutMs: 10000 });
      lab.exec(lab.router, ['nft', '-f', '-'], {
        timeoutMs: 10000,
        // The masquerade, and the port forward of the TCP run's server row (tcp.js FWD_PORT) as fw4 writes one.
        input: `table ip ${NFT_TABLE} {\n\tchain prerouting {\n\t\ttype nat hook prerouting priority dstnat; policy accept;\n` +
          `\t\tiifname "wan" tcp dport ${FWD_PORT} dnat to ${lab.addr.lan[0]}:${FWD_PORT}\n\t}\n` +
          `\tchain postrouting {\n\t\ttype nat hook postrouting priority srcnat; policy accept;\n\t\toifname "wan" masquerade\n\t}\n}\n`,
      });
    },
    async down(lab) {
      lab.tryExec(lab.router, ['nft', 'delete', 'table', 'ip', NFT_TABLE], { timeoutMs: 10000 });
    },
    /** conntrack's failed inserts and drops in the router (summed over CPUs) and its devices' drops, or null */
    async routerDrops(lab) {
      const r = lab.tryExec(lab.router, ['cat', '/proc/net/stat/nf_conntrack'], { timeoutMs: 5000 });
      if (!r.ok) return null;
      const [head, ...rows] = r.stdout.trim().split('\n').map((l) => l.trim().split(/\s+/));
      const out = deviceDrops(lab);
      for (const name of ['insert_failed', 'drop', 'early_drop', 'invalid']) {
        const i = head.indexOf(name);
        if (i >= 0) out[`conntrack_${name}`] = rows.reduce((acc, row) => acc + (parseInt(row[i], 16) || 0), 0);
      }
      return out;
    },
  };
}

/**
 * --router-cpu PCT: the daemon (every thread, real-time or not) in a cgroup
 * v1 `cpu` group of its own with PCT % of one CPU (CFS quota for ordinary
 * threads, RT runtime for the SCHED_FIFO data path), to stand for a router
 * slower than the LAN hosts that flood it (a small ARM box against a PC).
 * Returns a function that removes the group (after the daemon exited), or
 * throws when the machine has no such controller.
 */
function limitCpu(pid, pct) {
  const root = '/sys/fs/cgroup/cpu';
  if (!existsSync(join(root, 'cpu.cfs_quota_us'))) throw new Error('--router-cpu needs the cgroup v1 cpu controller at /sys/fs/cgroup/cpu');
  const dir = join(root, `vpnmasq-bench-${process.pid}`);
  mkdirSync(dir, { recursive: true });
  const period = 10000; // 10 ms: the pauses a quota makes stay short (a slow CPU has none)
  const quota = Math.max(1000, Math.round((period * pct) / 100));
  writeFileSync(join(dir, 'cpu.cfs_period_us'), String(period));
  writeFileSync(join(dir, 'cpu.cfs_quota_us'), String(quota));
  if (existsSync(join(dir, 'cpu.rt_runtime_us'))) {
    writeFileSync(join(dir, 'cpu.rt_period_us'), String(period));
    writeFileSync(join(dir, 'cpu.rt_runtime_us'), String(quota));
  }
  for (const tid of readdirSync(`/proc/${pid}/task`)) writeFileSync(join(dir, 'tasks'), tid);
  return () => { try { rmdirSync(dir); } catch { /* still busy: left for the next run's mkdir */ } };
}

/**
 * vpnmasq in the router; offload false writes option offload '0' (one packet per TUN read), labelled apart;
 * flowOffload false writes option flow_offload '0' (every packet through the TUNs: the TUN path), labelled
 * apart; busyPollUs > 0 writes option busy_poll (--busy-poll; the report's header says so); cpuPct: see limitCpu.
 */
export function vpnmasqMode(cliPath, tmp, { offload = true, busyPollUs = 0, cpuPct = 0, flowOffload = true } = {}) {
  let unlimit = null;
  // Each mode its own socket, config and state: never another mode's flows.
  const tag = !flowOffload ? '-tunpath' : offload ? '' : '-nooffload';
  const sock = join(tmp, `vpnmasq${tag}.sock`);
  const cfg = join(tmp, `vpnmasq${tag}.conf`);
  let child = null;
  let output = () => [];
  let exitInfo = null;
  let ready = false;
  return {
    name: 'vpnmasq',
    label: !flowOffload ? TUN_PATH_MODE : offload ? 'vpnmasq' : 'vpnmasq-offload-0',
    /** the daemon's pid (ip netns exec execs it), for its CPU time */
    pid: () => child?.pid,
    /** throws if vpnmasq has gone away since it became ready */
    check() {
      if (ready && exitInfo) throw new Error(`vpnmasq exited during the benchmark (${exitInfo.signal ?? `code ${exitInfo.code}`})${fmtTail(output())}`);
    },
    async up(lab) {
      const leftover = lab.tryExec(lab.router, ['nft', 'list', 'table', 'ip', NFT_TABLE], { timeoutMs: 5000 });
      if (leftover.ok) throw new Error(`kernel masquerade table ${NFT_TABLE} still present in the router`);
      writeFileSync(cfg, [
        "config vpnmasq 'main'",
        "\toption lan_device 'br-lan'",
        "\toption wan_device 'wan'",
        "\toption enabled '1'",
        "\toption max_flows '65536'",
        "\toption log_level 'warn'",
        `\toption control_socket '${sock}'`,
        // A state directory of the bench's own: never restore another run's (or the router's) flows and counters.
        `\toption snapshot_dir '${join(tmp, `state${tag}`)}'`,
        ...(offload ? [] : ["\toption offload '0'"]),
        ...(flowOffload ? [] : ["\toption flow_offload '0'"]),
        ...(busyPollUs > 0 ? [`\toption busy_poll '${busyPollUs}'`] : []),
        '',
        // The TCP run's server behind the router (tcp.js FWD_PORT).
        'config redirect',
        "\toption proto 'tcp'",
        `\toption src_dport '${FWD_PORT}'`,
        `\toption dest_ip '${lab.addr.lan[0]}'`,
        `\toption dest_port '${FWD_PORT}'`,
        '',
      ].join('\n'));
      rmSync(sock, { force: true });
      child = lab.spawn(lab.router, [process.execPath, cliPath, 'run', '--config', cfg], { stdio: ['ignore', 'pipe', 'pipe'] });
      const out = tail(child.stdout, 100);
      const err = tail(child.stderr, 100);
      output = () => [...out(), ...err()].slice(-20);
      child.once('exit', (code, signal) => { exitInfo = { code, signal }; });
      const deadline = Date.now() + 15000;
      while (!existsSync(sock)) {
        if (exitInfo) throw new Error(`vpnmasq exited (${exitInfo.signal ?? `code ${exitInfo.code}`}) before it was ready${fmtTail(output())}`);
        if (Date.now() > deadline) throw new Error(`vpnmasq not ready: control socket ${sock} did not appear within 15 s${fmtTail(output())}`);
        await sleep(100);
      }
      ready = true;
      // The default runs the flow fast path where the kernel has it (tcx, Linux 6.6+): the report says which ran.
      const st = JSON.parse(execFileSync(process.execPath, [cliPath, 'status', '--json', '--socket', sock], { timeout: 5000, encoding: 'utf8' }));
      log(`vpnmasq (${this.label}): flow fast path ${st.flowOffload?.enabled ? 'on' : `off: ${st.flowOffload?.note ?? 'not in status'}`}`);
      if (cpuPct > 0) {
        unlimit = limitCpu(child.pid, cpuPct);
        log(`vpnmasq: limited to ${cpuPct} % of one CPU (cgroup v1 cpu: CFS quota and RT runtime)`);
      }
    },
    /** the engine's drops by reason plus TUN write drops, from `vpnmasq status --json`, or null */
    async routerDrops(lab) {
      const r = await new Promise((resolveP) => {
        execFile(process.execPath, [cliPath, 'status', '--json', '--socket', sock], { timeout: 5000, encoding: 'utf8' },
          (err, stdout) => resolveP(err ? null : stdout));
      });
      try {
        const st = JSON.parse(r);
        return {
          ...st.drops, ...(st.tunWriteDrops ? { tun_write: st.tunWriteDrops } : {}),
          ...(st.tunQueueDrops ? { tun_queue: st.tunQueueDrops } : {}), ...deviceDrops(lab),
        };
      } catch {
        return null;
      }
    },
    async down() {
      if (!child) return;
      const early = ready ? exitInfo : null;
      await stopChild(child, 10000);
      unlimit?.();
      unlimit = null;
      if (!exitInfo || (exitInfo.code === null && exitInfo.signal === 'SIGKILL')) log('vpnmasq: did not exit within 10 s of SIGTERM; killed');
      if (early) throw new Error(`vpnmasq exited during the benchmark (${early.signal ?? `code ${early.code}`})${fmtTail(output())}`);
    },
  };
}

function fmtTail(lines) {
  return lines.length ? `; last output:\n    ${lines.join('\n    ')}` : '';
}
