// The dashboard's /api/flows with option acct: the view says acct and the
// flows carry bytesOut/bytesIn; without it neither. The page's bytes column
// is hidden unless the view says acct.
import { describe, expect, it } from 'vitest';
import { Engine, nowMs } from '../../../src/engine/engine.js';
import { applyConfig } from '../../../src/engine/apply.js';
import { SIDE_INSIDE, VERDICT_PASS, ipToRaw } from '../../../src/engine/abi.js';
import { parseConfig } from '../../../src/config/index.js';
import { Observer } from '../../../src/observe/index.js';
import { createLogger } from '../../../src/log.js';
import { PAGE_HTML, PAGE_JS } from '../../../src/observe/page.js';
import { udp } from '../../helpers/packet.js';

function flowsView(acct: boolean) {
  const cfg = parseConfig("config vpnmasq 'main'\n\toption lan_device 'br-lan'\n\toption wan_device 'wan'\n\tlist lan_subnet '192.168.1.0/24'\n", 'm');
  const engine = Engine.load({ maxFlows: 2048, acct });
  applyConfig(engine, cfg, [...cfg.main.lanSubnets]);
  engine.x.setWanAddress(ipToRaw('203.0.113.1'), nowMs());
  engine.setPacket(0, udp('192.168.1.10', 5000, '198.51.100.7', 53, [1, 2, 3, 4]));
  engine.process(1, SIDE_INSIDE);
  expect(engine.verdict(0)).toBe(VERDICT_PASS);
  const obs = new Observer({ cfg, engine, log: createLogger('fatal'), lanSubnets: ['192.168.1.0/24'], loop: () => null });
  obs.noteWanAddress('203.0.113.1');
  return JSON.parse((obs as unknown as { flowsJson(): string }).flowsJson());
}

describe('dashboard flows with option acct', () => {
  it('on: acct true, each flow with its bytes', () => {
    const v = flowsView(true);
    expect(v.acct).toBe(true);
    expect(v.flows[0]).toMatchObject({ lan: '192.168.1.10', packetsOut: 1, bytesOut: 32, bytesIn: 0 });
  });
  it('off: acct false, no bytes fields', () => {
    const v = flowsView(false);
    expect(v.acct).toBe(false);
    expect(v.flows[0]).not.toHaveProperty('bytesOut');
  });
  it('the page\'s bytes column is hidden until the view says acct', () => {
    expect(PAGE_HTML).toContain('<th id="fbytes" hidden>bytes out/in</th>');
    expect(PAGE_JS).toContain("$('fbytes').hidden = !d.acct;");
  });
});
