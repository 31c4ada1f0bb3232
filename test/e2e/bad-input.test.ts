// Bad VPN input through the real router: each malformed packet from a LAN
// host is dropped and counted under its reason, nothing of it reaches the
// WAN, nothing traps, and a host spraying new ESP SPIs at a server does not
// lock another host out for longer than the INIT limits.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { skipUnless } from '../helpers/prereq.js';
import { RunningRouter } from '../helpers/vpnmasq.js';
import type { Lab as LabT } from '../../src/lab/lab.js';
import { BAD_ESP, BAD_GRE, sendEsp, sendGre, sendIp, startCapture, startTcpSink } from './peers/crafted.js';
import { BAD_CTRL, PYTHON, sendPptpControl } from './peers/pptp.js';
import { espClient, newEspSa, skipUnlessScapy, startEspServer, type EspServer } from './peers/esp.js';

const skip = skipUnless({ root: true, tun: true, tools: ['ip', PYTHON] }) || skipUnlessScapy();

/** UDP header (checksum 0: none) + payload, hex, for sendIp(…, 17, …). */
function udpHex(sport: number, dport: number, payload: Buffer): string {
  const h = Buffer.alloc(8);
  h.writeUInt16BE(sport, 0); h.writeUInt16BE(dport, 2); h.writeUInt16BE(8 + payload.length, 4);
  return Buffer.concat([h, payload]).toString('hex');
}

describe.skipIf(skip)('bad VPN input through the real router', () => {
  let lab: LabT;
  let vm: RunningRouter;
  let WAN1: string;
  const drops = () => vm.status().drops as Record<string, number>;
  const grew = (before: Record<string, number>, reason: string) => (drops()[reason] ?? 0) - (before[reason] ?? 0);

  beforeAll(async () => {
    const { Lab } = await import('../../src/lab/lab.js');
    lab = Lab.create({ id: `bi${process.pid % 10000}`, lanHosts: 2 });
    WAN1 = lab.addr.wan[0]!;
    vm = new RunningRouter(lab);
    await vm.start();
  });

  afterAll(async () => {
    await vm?.stop();
    lab?.destroy();
  });

  it('01 malformed GRE (wrong version, protocol, flags, no key, truncated) is dropped and counted; none reaches the WAN', async () => {
    const before = drops();
    const cap = await startCapture(lab, lab.wan[0]!, 47, 2500);
    const kinds = Object.values(BAD_GRE).filter((k) => !('payloadLen' in k)); // a lying length is still well-formed GRE
    for (const k of kinds) sendGre(lab, lab.lan[0]!, WAN1, k);
    const { packets } = await cap.done();
    expect(packets).toEqual([]);
    expect(grew(before, 'gre_bad_header')).toBe(kinds.length);
  });

  it('02 ESP with SPI 0, a reserved SPI, truncated or header-only is dropped and counted; none reaches the WAN', async () => {
    const before = drops();
    const cap = await startCapture(lab, lab.wan[0]!, 50, 2500);
    for (const k of Object.values(BAD_ESP)) sendEsp(lab, lab.lan[0]!, WAN1, k);
    const { packets } = await cap.done();
    expect(packets).toEqual([]);
    expect(grew(before, 'esp_spi_zero')).toBe(1);
    expect(grew(before, 'esp_spi_reserved')).toBe(1);
    expect(grew(before, 'truncated')).toBe(2);
  });

  it('03 ISAKMP truncated or with a zero cookie is dropped and counted', async () => {
    const before = drops();
    sendIp(lab, lab.lan[0]!, WAN1, 17, udpHex(500, 500, Buffer.alloc(20, 1)));
    sendIp(lab, lab.lan[0]!, WAN1, 17, udpHex(500, 500, Buffer.alloc(40, 0)));
    await new Promise((r) => setTimeout(r, 300));
    expect(grew(before, 'isakmp_truncated')).toBe(1);
    expect(grew(before, 'isakmp_zero_cookie')).toBe(1);
  });

  it('04 malformed PPTP control messages never reach the server and are counted', async () => {
    const sink = await startTcpSink(lab, lab.wan[0]!, 1723, 8000);
    const before = drops();
    const bad = [BAD_CTRL.wrongMagic(), BAD_CTRL.unknownType(), BAD_CTRL.typeZero(), BAD_CTRL.managementMessage(), BAD_CTRL.hugeLength()];
    for (const m of bad) await sendPptpControl(lab, lab.lan[1]!, WAN1, [m], { waitMs: 300 });
    const { connections } = await sink.done();
    // The connections were made (SYN/ACK pass), but not one byte of a bad message got through.
    expect(connections.length).toBe(bad.length);
    for (const c of connections) expect(c.hex).toBe('');
    const total = grew(before, 'pptp_bad_magic') + grew(before, 'pptp_bad_type') + grew(before, 'pptp_bad_length');
    expect(total).toBeGreaterThanOrEqual(bad.length);
    expect(grew(before, 'pptp_bad_magic')).toBeGreaterThanOrEqual(1);
    expect(grew(before, 'pptp_bad_type')).toBeGreaterThanOrEqual(3);
  });

  it('05 a LAN host spraying a new SPI at a server does not lock another host out beyond the INIT limits', async () => {
    const good = newEspSa();
    let server: EspServer | undefined;
    try {
      server = await startEspServer(lab, lab.wan[0]!, [good]);
      const before = drops();
      // Host 1 sprays new SPIs the server never answers, then keeps retrying one.
      for (let n = 0; n < 12; n++) sendEsp(lab, lab.lan[0]!, WAN1, { spi: 0x0bad0000 + n });
      sendEsp(lab, lab.lan[0]!, WAN1, { spi: 0x0bad0001, count: 20, intervalMs: 10 });
      const r = await espClient(lab, lab.lan[1]!, WAN1, good, { timeoutMs: 15_000 });
      expect(r.replies.length, JSON.stringify(r)).toBeGreaterThanOrEqual(5);
      expect(r.foreign_spi).toEqual({});
      // the sprayer was squelched after its retries
      expect(grew(before, 'esp_squelched')).toBeGreaterThan(0);
    } finally {
      await server?.stop().catch(() => undefined);
    }
  });

  it('06 after all of it the router still runs and routes', () => {
    expect(vm.exitCode).toBeNull();
    expect(lab.tryExec(lab.lan[0]!, ['ping', '-c', '1', '-W', '2', WAN1]).stdout).toContain('1 received');
  });
});
