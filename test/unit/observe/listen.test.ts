// metrics_listen / metrics_file / web_listen: what the parser refuses on its
// own (FILE:LINE: reason) and what is refused against the devices' addresses
// (checkListeners, run by `vpnmasq run` and `check-config`).
import { describe, it, expect } from 'vitest';
import { ConfigError, parseConfig } from '../../../src/config/index.js';
import { checkListeners } from '../../../src/observe/listen.js';

const HEAD = "config vpnmasq 'main'\n\toption lan_device 'br-lan'\n\toption wan_device 'wan'\n";
const parse = (extra: string) => parseConfig(HEAD + extra, 'F');
const refused = (extra: string) => {
  try { parse(extra); } catch (e) { if (e instanceof ConfigError) return e.message; throw e; }
  return 'accepted';
};

describe('observability options', () => {
  it('are off by default', () => {
    const m = parse('').main;
    expect([m.metricsListen, m.metricsFile, m.webListen]).toEqual([null, null, null]);
  });

  it('read ADDRESS:PORT and an absolute file', () => {
    const m = parse("\toption metrics_listen '127.0.0.1:9753'\n\toption metrics_file '/var/prometheus/vpnmasq.prom'\n" +
      "\toption web_listen '192.168.1.1:8080'\n").main;
    expect(m.metricsListen).toEqual({ host: '127.0.0.1', port: 9753 });
    expect(m.metricsFile).toBe('/var/prometheus/vpnmasq.prom');
    expect(m.webListen).toEqual({ host: '192.168.1.1', port: 8080 });
  });

  it('refuse every interface, malformed addresses and ports, relative files', () => {
    expect(refused("\toption metrics_listen '0.0.0.0:9753'\n")).toMatch(/^F:4: option metrics_listen: .*every interface, the WAN too/);
    expect(refused("\toption web_listen '0.0.0.0:80'\n")).toMatch(/^F:4: option web_listen: .*every interface/);
    expect(refused("\toption web_listen ':8080'\n")).toMatch(/^F:4: .*is not ADDRESS:PORT/);
    expect(refused("\toption web_listen '192.168.1.1'\n")).toMatch(/^F:4: .*is not ADDRESS:PORT/);
    expect(refused("\toption web_listen '192.168.1.300:80'\n")).toMatch(/^F:4: .*is not an IPv4 address/);
    expect(refused("\toption metrics_listen '192.168.1.1:0'\n")).toMatch(/^F:4: .*port 0 is not 1\.\.65535/);
    expect(refused("\toption metrics_listen '192.168.1.1:70000'\n")).toMatch(/^F:4: .*port 70000/);
    expect(refused("\toption metrics_listen '224.0.0.1:9753'\n")).toMatch(/^F:4: .*multicast/);
    expect(refused("\toption metrics_listen '255.255.255.255:9753'\n")).toMatch(/^F:4: .*broadcast/);
    expect(refused("\toption metrics_file 'vpnmasq.prom'\n")).toMatch(/^F:4: option metrics_file: .*not an absolute path/);
  });

  it('keep the dashboard on the LAN: not loopback, inside lan_subnet when given, not the metrics socket', () => {
    expect(refused("\toption web_listen '127.0.0.1:8080'\n")).toMatch(/^F:4: option web_listen: .*loopback/);
    expect(refused("\tlist lan_subnet '192.168.1.0/24'\n\toption web_listen '10.0.0.1:8080'\n"))
      .toMatch(/^F:5: option web_listen: 10\.0\.0\.1 is not inside any lan_subnet/);
    expect(refused("\toption metrics_listen '192.168.1.1:8080'\n\toption web_listen '192.168.1.1:8080'\n"))
      .toMatch(/^F:5: option web_listen: .*is also the metrics_listen \(line 4\)/);
  });

  it('are refused at start when they name the WAN or an address that is not the LAN device', () => {
    const cfg = parse("\toption metrics_listen '203.0.113.1:9753'\n\toption web_listen '192.168.1.1:8080'\n");
    const addrs = { lan: ['192.168.1.1'], wan: ['203.0.113.1'] };
    expect(() => checkListeners(cfg, addrs, '203.0.113.1')).toThrow(/option metrics_listen: 203\.0\.113\.1 is an address of the WAN device wan/);
    const web = parse("\toption web_listen '192.168.1.2:8080'\n");
    expect(() => checkListeners(web, addrs, '203.0.113.1')).toThrow(/option web_listen: 192\.168\.1\.2 is not an address of the LAN device br-lan/);
    const current = parse("\toption metrics_listen '198.51.100.4:9753'\n");
    expect(() => checkListeners(current, { lan: ['198.51.100.4'], wan: [] }, '198.51.100.4')).toThrow(/WAN device/);
    const ok = parse("\toption metrics_listen '127.0.0.1:9753'\n\toption web_listen '192.168.1.1:8080'\n");
    expect(() => checkListeners(ok, addrs, '203.0.113.1')).not.toThrow();
  });
});
