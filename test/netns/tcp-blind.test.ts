// Issue 8 item 4 through the real router: a blind attacker who knows a
// connection's addresses and ports but not its sequence numbers sends RSTs
// and FINs "from the server". Before, any RST closed the mapping (CLOSE,
// 10 s) and the connection died at its next idle spell; now they are
// dropped as tcp_out_of_window and the connection lives on.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { resolve } from 'node:path';
import { skipUnless } from '../helpers/prereq.js';
import { RunningRouter } from '../helpers/vpnmasq.js';
import { lineReader } from '../helpers/peerlines.js';
import type { Lab as LabT } from '../../src/lab/lab.js';

const skip = skipUnless({ root: true, tun: true, tools: ['ip', 'hping3', 'python3'] });
const PEER = resolve(__dirname, 'flood-peer.py');

// Each path judges them: the engine (flow_offload '0': the TUN path, counted
// as drops.tcp_out_of_window) and, for an offloaded flow, the kernel's fast
// path (flow_offload '1': counted as flowOffload.outOfWindow). Both are set
// explicitly, so the test means the same whatever the default.
describe.skipIf(skip)('blind TCP injection through the real router (item 4)', () => {
  let lab: LabT;
  const WANHOST = '203.0.113.2';

  beforeAll(async () => {
    const { Lab } = await import('../../src/lab/lab.js');
    lab = Lab.create({ id: `tb${process.pid % 10000}` });
    const srv = lab.spawn(lab.wan[0]!, ['python3', PEER, 'server', '7007']);
    await lineReader(srv)((l) => l === 'ready', 20_000);
  }, 60_000);

  afterAll(() => {
    lab?.destroy();
  });

  for (const [fo, path] of [['0', 'the engine (TUN path)'], ['1', 'the kernel fast path']] as const) {
    describe(`option flow_offload '${fo}': ${path}`, () => {
      let vm: RunningRouter;
      beforeAll(async () => {
        vm = new RunningRouter(lab, '', `\toption flow_offload '${fo}'\n`);
        vm.env = { VPNMASQ_FLOW_OFFLOAD: '' }; // the option above decides, whatever the suite's environment
        await vm.start();
      }, 60_000);
      afterAll(async () => {
        await vm?.stop();
      });
      /** The blind packets dropped by this path's window check so far. */
      const dropped = () => {
        const s = vm.status();
        return fo === '0' ? (s.drops.tcp_out_of_window ?? 0) : s.flowOffload.outOfWindow;
      };

      it(`T01 spoofed RSTs and FINs with wrong sequence numbers neither close nor shorten a LAN host's connection`, async () => {
        const client = lab.spawn(lab.lan[1]!, ['python3', PEER, 'hold', WANHOST, '7007', '12'], { stdio: ['pipe', 'pipe', 'pipe'] });
        const next = lineReader(client);
        const lport = Number((await next((l) => l.startsWith('connected '), 20_000)).split(' ')[1]);
        type Ct = { proto: string; lanPort: number; aliasPort: number; state: string; expiresInS: number };
        const entry = () => (JSON.parse(vm.cli('conntrack', '--json').stdout) as Ct[]).find((f) => f.proto === 'tcp' && f.lanPort === lport)!;
        const flow = entry();
        expect(flow.state).toBe('ESTABLISHED');
        expect(vm.status().flowOffload).toMatchObject(fo === '0' ? { enabled: false } : { enabled: true, flows: 1 });
        const before = dropped();
        const engineBefore = vm.status().drops.tcp_out_of_window ?? 0;
        // The attacker knows both endpoints and ports, not the sequence numbers:
        // RSTs and FIN|ACKs "from the server" at sequence numbers far from it.
        for (const [flag, seq] of [['-R', 0x40000000], ['-R', 0xc0000000], ['-F', 0x20000000]] as const) {
          // hping3 exits 0 when something answered, 1 when nothing did (the point here)
          const r = lab.tryExec(lab.wan[0]!, ['hping3', '-q', '-c', '3', '-i', 'u10000', flag, ...(flag === '-F' ? ['-A'] : []),
            '-s', '7007', '-k', '-p', String(flow.aliasPort), '-M', String(seq), '203.0.113.1'], { timeoutMs: 15_000 });
          expect([0, 1], r.stderr).toContain(r.status);
        }
        expect(dropped() - before).toBe(9);
        // with the fast path none of them reached the engine either
        if (fo === '1') expect(vm.status().drops.tcp_out_of_window ?? 0).toBe(engineBefore);
        const still = entry();
        expect(still.state).toBe('ESTABLISHED');
        expect(still.expiresInS).toBeGreaterThan(7000);
        // idle past the 10 s a closed mapping lives, then the connection still answers
        client.stdin!.write('go\n');
        const res = JSON.parse(await next((l) => l.startsWith('{'), 40_000));
        expect(res.answered).toBe(true);
      }, 90_000);
    });
  }
});
