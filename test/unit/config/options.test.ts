// The option table (MAIN_TABLE, src/config/options.ts) is the one place an
// option of `config vpnmasq` is defined. These tests hold the places that
// cannot be generated from it to what it says: the default
// /etc/config/vpnmasq and the README's option list. And they check what it
// drives: the known names, the defaults, and the one settings record the
// engine gets.
import { describe, it, expect } from 'vitest';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { MAIN_DEFAULTS, MAIN_OPTIONS, MAIN_TABLE, optionsMarkdown, parseConfig } from '../../../src/config/index.js';
import { engineSettings } from '../../../src/engine/apply.js';

const FIRMWARE_FILE = fileURLToPath(new URL('../../../firmware/files/etc/config/vpnmasq', import.meta.url));
const README = fileURLToPath(new URL('../../../README.md', import.meta.url));

/** The lines of the main section (up to the next `config`). */
function mainSection(text: string): string[] {
  const lines = text.split('\n');
  const start = lines.findIndex((l) => l.startsWith('config vpnmasq'));
  const end = lines.findIndex((l, i) => i > start && l.startsWith('config '));
  return lines.slice(start + 1, end < 0 ? undefined : end);
}

const quote = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

describe('the option table', () => {
  it('knows exactly the options of config vpnmasq, in file order', () => {
    expect(MAIN_OPTIONS).toEqual([
      'lan_device', 'wan_device', 'enabled', 'tun_inside', 'tun_outside', 'offload', 'gro', 'flow_offload', 'host_queues', 'priority', 'busy_poll', 'lan_subnet', 'max_flows', 'acct', 'log_level',
      'masq_ports', 'tcp_timeout', 'tcp_transitory_timeout', 'udp_timeout', 'icmp_timeout', 'frag_timeout',
      'esp_timeout', 'esp_init_timeout', 'esp_init_retries', 'ike_timeout', 'natt_timeout', 'gre_timeout',
      'parallel_sessions', 'esp_guess', 'unreplied_timeout', 'src_max_flows', 'src_max_ike', 'src_max_calls',
      'src_max_esp_pending', 'src_max_frags', 'control_socket', 'wan_interface', 'metrics_listen', 'metrics_file', 'web_listen', 'snapshot_dir', 'snapshot_interval',
    ]);
  });

  it('gives a default to every option but lan_device and wan_device, and a field to each', () => {
    const m = parseConfig("config vpnmasq 'main'\n\toption lan_device 'br-lan'\n\toption wan_device 'wan'\n", 'f').main;
    expect(Object.keys(m)).toEqual(MAIN_TABLE.map((r) => r.key));
    expect(Object.keys(MAIN_DEFAULTS)).toEqual(MAIN_TABLE.filter((r) => !r.required).map((r) => r.key));
    expect(MAIN_TABLE.filter((r) => r.required).map((r) => r.name)).toEqual(['lan_device', 'wan_device']);
    for (const r of MAIN_TABLE) expect(r.doc, r.name).toMatch(/^[^\n|]{3,}$/);
  });

  it('builds the engine settings record: the engine-bound options by UCI name, numbers only', () => {
    const m = parseConfig(
      "config vpnmasq 'main'\n\toption lan_device 'br-lan'\n\toption wan_device 'wan'\n\toption masq_ports '40000-40999'\n" +
        "\toption udp_timeout '77'\n\toption parallel_sessions 'yes'\n\toption frag_timeout '9'\n",
      'f',
    ).main;
    expect(engineSettings(m)).toEqual({
      masq_port_lo: 40000,
      masq_port_hi: 40999,
      tcp_timeout: 7440,
      tcp_transitory_timeout: 240,
      udp_timeout: 77,
      icmp_timeout: 60,
      frag_timeout: 9,
      esp_timeout: 1800,
      esp_init_timeout: 120,
      esp_init_retries: 5,
      ike_timeout: 3600,
      natt_timeout: 300,
      gre_timeout: 7440,
      parallel_sessions: 1,
      esp_guess: 0,
      unreplied_timeout: 30,
      src_max_flows: 0,
      src_max_ike: 256,
      src_max_calls: 256,
      src_max_esp_pending: 16,
      src_max_frags: 256,
    });
  });
});

describe('the default /etc/config/vpnmasq lists every option with its real default', () => {
  // (default.test.ts checks that src/config/default.ts holds the same text)
  const text = readFileSync(FIRMWARE_FILE, 'utf8');
  const main = mainSection(text);

  for (const r of MAIN_TABLE) {
    it(r.name, () => {
      let want: RegExp;
      if (r.required) {
        want = new RegExp(`^\\toption ${r.name} '[^']+'(\\t#|$)`);
      } else {
        const vals = r.type.text(r.default as never);
        // A list without a default is shown commented out, as an example.
        want = vals.length === 0
          ? new RegExp(`^\\t# ${r.type.list ? 'list' : 'option'} ${r.name} '[^']+'`)
          : new RegExp(`^\\toption ${r.name} '${quote(vals.join(' '))}'(\\t#|$)`);
      }
      expect(main.filter((l) => want.test(l)), `${want}`).toHaveLength(1);
    });
  }

  it('has no option the table does not know', () => {
    const names = main.map((l) => /^\t(?:# )?(?:option|list) ([a-z_]+) /.exec(l)?.[1]).filter((n) => n !== undefined);
    expect(names).toEqual(MAIN_OPTIONS);
  });
});

describe("README's option list", () => {
  it('is the one generated from the table', () => {
    const readme = readFileSync(README, 'utf8');
    const m = /<!-- options:begin[^>]*-->\n([\s\S]*?)\n<!-- options:end -->/.exec(readme);
    expect(m, 'README.md has no <!-- options:begin --> ... <!-- options:end --> block').not.toBeNull();
    // On a mismatch, the expected text is what belongs between the markers.
    expect(m![1]).toBe(optionsMarkdown());
  });
});
