// Settings reach the engine as one record (assembly/abi/settings.ts):
// Engine.applySettings writes it by UCI option name and the engine takes
// all of it or none of it.
import { describe, expect, it } from 'vitest';
import { TestRouter } from '../../helpers/harness.js';
import { udp } from '../../helpers/packet.js';
import { SETTINGS_FIELDS } from '../../../src/engine/abi.js';

describe('engine settings record', () => {
  it('names every option the engine takes, each at its own offset', () => {
    expect(Object.keys(SETTINGS_FIELDS).sort()).toEqual([
      'esp_guess', 'esp_init_retries', 'esp_init_timeout', 'esp_timeout', 'frag_timeout', 'gre_timeout', 'icmp_timeout',
      'ike_timeout', 'masq_port_hi', 'masq_port_lo', 'natt_timeout', 'parallel_sessions', 'src_max_calls',
      'src_max_esp_pending', 'src_max_flows', 'src_max_frags', 'src_max_ike', 'tcp_timeout',
      'tcp_transitory_timeout', 'udp_timeout', 'unreplied_timeout',
    ]);
    expect(new Set(Object.values(SETTINGS_FIELDS)).size).toBe(Object.keys(SETTINGS_FIELDS).length);
  });

  it('refuses unknown and missing options and values that are not counts, by name', () => {
    const r = new TestRouter();
    const e = r.engine;
    expect(() => e.applySettings({ ...r.settings, udp_timeuot: 1 } as never)).toThrow("unknown option 'udp_timeuot'");
    const { esp_guess: _, ...missing } = r.settings;
    expect(() => e.applySettings(missing as never)).toThrow("option 'esp_guess' missing");
    expect(() => e.applySettings({ ...r.settings, udp_timeout: -1 })).toThrow('udp_timeout = -1 is not a count');
    expect(() => e.applySettings({ ...r.settings, parallel_sessions: 2 })).toThrow('parallel_sessions = 2 refused');
    expect(() => e.applySettings({ ...r.settings, masq_port_lo: 0 })).toThrow('masq_port_lo = 0 refused by the engine (masq_ports 0-65535)');
    expect(() => e.applySettings({ ...r.settings, masq_port_lo: 62000, masq_port_hi: 61000 })).toThrow('masq_port_lo = 62000 refused');
    expect(() => e.applySettings({ ...r.settings, masq_port_hi: 70000 })).toThrow('masq_port_hi = 70000 refused');
  });

  it('takes a record whole or not at all: a refused pool leaves the running timeouts', () => {
    const r = new TestRouter({ timeouts: { udp: 300 } });
    expect(() => r.engine.applySettings({ ...r.settings, udp_timeout: 5, masq_port_lo: 0 })).toThrow('refused');
    expect(r.out(udp('192.168.1.10', 5000, '198.51.100.7', 53))).not.toBeNull();
    r.advance(10);
    expect(r.engine.x.flowActive()).toBe(1); // 300 s still rules, not the refused 5 s
    r.engine.applySettings({ ...r.settings, udp_timeout: 5 });
    expect(r.out(udp('192.168.1.10', 5001, '198.51.100.7', 53))).not.toBeNull();
    r.advance(301);
    expect(r.engine.x.flowActive()).toBe(0);
  });
});
