// `vpnmasq capture --drops` against the running router: packets the engine
// drops (a WAN host knocking on a closed port of the router, and addressing
// a LAN host directly) are written to a pcap file that tcpdump reads back;
// -c stops after COUNT, --reason keeps one reason, --duration ends it, and
// a bad reason is one line with exit code 2.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { skipUnless } from '../helpers/prereq.js';
import { CLI, RunningRouter } from '../helpers/vpnmasq.js';
import type { Lab as LabT } from '../../src/lab/lab.js';

const skip = skipUnless({ root: true, tun: true, tools: ['ip', 'socat', 'tcpdump'] });

describe.skipIf(skip)('drop capture to pcap', () => {
  let lab: LabT;
  let vm: RunningRouter;

  /** Starts a capture in the router namespace; resolves with its exit code and stderr. */
  const capture = (args: string[]) => {
    const p = lab.spawn(lab.router, ['node', CLI, 'capture', ...args, '--socket', vm.sock]);
    let err = '';
    p.stderr!.on('data', (d) => (err += d));
    const done = new Promise<{ code: number | null; err: string }>((resolve) => p.on('exit', (code) => resolve({ code, err })));
    done.catch(() => undefined);
    const started = new Promise<void>((resolve, reject) => {
      const check = () => (err.includes('capturing') ? resolve() : setTimeout(check, 50));
      check();
      void done.then(() => reject(new Error(`capture ended before it started: ${err}`)));
    });
    started.catch(() => undefined);
    return { started, done, proc: p };
  };
  const knock = (dst: string, port: number, n: number) => {
    for (let i = 0; i < n; i++) lab.tryExec(lab.wan[0]!, ['sh', '-c', `echo knock | socat -u - UDP:${dst}:${port},sourceport=${4000 + i}`]);
  };
  const readPcap = (file: string) => lab.exec(lab.router, ['tcpdump', '-n', '-r', file], { timeoutMs: 20_000 }).trim().split('\n').filter(Boolean);

  beforeAll(async () => {
    const { Lab } = await import('../../src/lab/lab.js');
    lab = Lab.create({ id: `cp${process.pid % 10000}` });
    vm = new RunningRouter(lab);
    await vm.start();
    lab.exec(lab.wan[0]!, ['ip', 'route', 'replace', '192.168.1.0/24', 'via', '203.0.113.1']);
  });

  afterAll(async () => {
    await vm?.stop();
    lab?.destroy();
  });

  it('01 writes dropped packets as pcap that tcpdump reads; -c stops after COUNT', async () => {
    const file = join(vm.dir, 'all.pcap');
    const c = capture(['--drops', '-w', file, '-c', '3', '--duration', '60']);
    await c.started;
    knock('203.0.113.1', 7, 5); // to the router, no rule accepts it
    const r = await c.done;
    expect(r.code).toBe(0);
    expect(r.err).toMatch(/3 packets written/);
    const lines = readPcap(file);
    expect(lines).toHaveLength(3);
    for (const l of lines) expect(l).toMatch(/IP 203\.0\.113\.2\.\d+ > 203\.0\.113\.1\.7: UDP, length 6/);
  });

  it('02 --reason keeps one reason; --duration ends the capture', async () => {
    const file = join(vm.dir, 'wan_to_lan.pcap');
    const c = capture(['--drops', '--reason', 'wan_to_lan', '-w', file, '--duration', '4']);
    await c.started;
    knock('203.0.113.1', 7, 2);      // another reason: not written
    knock('192.168.1.10', 9, 2);     // straight to a LAN host: wan_to_lan
    const r = await c.done;
    expect(r.code).toBe(0);
    expect(r.err).toMatch(/2 packets written \(wan_to_lan 2\)/);
    const lines = readPcap(file);
    expect(lines).toHaveLength(2);
    for (const l of lines) expect(l).toMatch(/IP 203\.0\.113\.2\.\d+ > 192\.168\.1\.10\.9: UDP/);
  });

  it('03 the capture is switched off when it ends: a new one can start', async () => {
    const c = capture(['--drops', '-w', join(vm.dir, 'again.pcap'), '--duration', '1']);
    await c.started;
    expect((await c.done).code).toBe(0);
  });

  it('05 a capture whose CLI was killed (kill -9) is switched off by the daemon within 5 s', async () => {
    const c = capture(['--drops', '-w', join(vm.dir, 'killed.pcap')]);
    await c.started;
    // \`ip netns exec\` execs node, so the spawned pid is the CLI itself
    c.proc.kill('SIGKILL');
    await c.done;
    const busy = lab.tryExec(lab.router, ['node', CLI, 'capture', '--drops', '-w', join(vm.dir, 'busy.pcap'), '--duration', '1', '--socket', vm.sock]);
    expect(busy.stderr).toMatch(/a drop capture is already running/);
    await new Promise((r) => setTimeout(r, 6000));
    const again = capture(['--drops', '-w', join(vm.dir, 'after.pcap'), '--duration', '1']);
    await again.started;
    expect((await again.done).code).toBe(0);
    expect(vm.output).toMatch(/drop capture stopped: its client has not asked for 5 s/);
  });

  it('04 a bad reason or missing -w is one line and exit code 2', () => {
    const r = lab.tryExec(lab.router, ['node', CLI, 'capture', '--drops', '--reason', 'nope', '-w', '/tmp/x.pcap', '--socket', vm.sock]);
    expect(r.status).toBe(2);
    expect(r.stderr.split('\n')[0]).toMatch(/^vpnmasq: capture: unknown drop reason 'nope' \(one of: truncated, /);
    const w = lab.tryExec(lab.router, ['node', CLI, 'capture', '--drops', '--socket', vm.sock]);
    expect(w.status).toBe(2);
    expect(w.stderr).toMatch(/^vpnmasq: capture: -w FILE is required/);
  });
});
