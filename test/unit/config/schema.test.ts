import { describe, it, expect } from 'vitest';
import {
  ConfigError,
  MAIN_DEFAULTS,
  PROTO_ALL,
  PROTO_ESP,
  PROTO_GRE,
  PROTO_ICMP,
  PROTO_TCP,
  PROTO_UDP,
  parseConfig,
  type Config,
  type MainConfig,
} from '../../../src/config/index.js';

const F = '/etc/config/vpnmasq';

const CONTRACT = `config vpnmasq 'main'
	option lan_device 'br-lan'     # LAN-side device
	option wan_device 'wan'        # WAN-side device; its IPv4 address is the masquerade address
	option max_flows '65536'
	option log_level 'info'
config redirect                   # fw4 names: proto, src_dport, dest_ip, dest_port
	option proto 'tcp'
	option src_dport '8080'
	option dest_ip '192.168.1.10'
	option dest_port '80'
config rule                       # fw4 names; no dest = to the router itself
	option src 'wan'
	option proto 'udp'
	option dest_port '500'
	option target 'ACCEPT'
`;

/** A minimal main section (lines 1-3), then `rest`, which starts on line 4. */
function withMain(rest: string[] = [], mainExtra: string[] = []): string {
  return ["config vpnmasq 'main'", "\toption lan_device 'br-lan'", "\toption wan_device 'wan'", ...mainExtra, ...rest].join('\n') + '\n';
}

function parse(text: string): Config {
  return parseConfig(text, F);
}

function main(...opts: string[]): MainConfig {
  return parse(withMain([], opts)).main;
}

function fails(text: string): ConfigError {
  try {
    parse(text);
  } catch (e) {
    expect(e).toBeInstanceOf(ConfigError);
    return e as ConfigError;
  }
  throw new Error(`expected a ConfigError for:\n${text}`);
}

function expectError(text: string, line: number, reason: string): void {
  const e = fails(text);
  expect(e.file).toBe(F);
  expect(e.reason).toContain(reason);
  expect(e.line).toBe(line);
  expect(e.message).toBe(`${F}:${line}: ${e.reason}`);
}

/** A main option (line 4) that must be refused. */
function mainError(opt: string, reason: string): void {
  expectError(withMain([], [opt]), 4, reason);
}

const REDIRECT = ['config redirect', "\toption src_dport '8080'", "\toption dest_ip '192.168.1.10'"];
const RULE = ['config rule', "\toption src 'wan'", "\toption target 'ACCEPT'"];

function redirect(...opts: string[]) {
  return parse(withMain([...REDIRECT, ...opts])).redirects[0]!;
}

/** A redirect option (line 7) that must be refused. */
function redirectError(opt: string, reason: string, line = 7, base = REDIRECT): void {
  expectError(withMain([...base, opt]), line, reason);
}

function rule(...opts: string[]) {
  return parse(withMain([...RULE, ...opts])).rules[0]!;
}

/** A rule option (line 7) that must be refused. */
function ruleError(opt: string, reason: string, line = 7, base = RULE): void {
  expectError(withMain([...base, opt]), line, reason);
}

describe('config: the contract', () => {
  it('parses to the expected object', () => {
    expect(parse(CONTRACT)).toEqual({
      file: F,
      main: {
        lanDevice: 'br-lan',
        enabled: false,
        wanDevice: 'wan',
        tunInside: 'tin',
        tunOutside: 'tout',
        offload: true,
        gro: true,
        flowOffload: true,
        hostQueues: 'auto',
        priority: 'realtime',
        busyPoll: 0,
        lanSubnets: [],
        maxFlows: 65536,
        acct: false,
        logLevel: 'info',
        masqPorts: [61000, 65535],
        tcpTimeout: 7440,
        tcpTransitoryTimeout: 240,
        udpTimeout: 300,
        icmpTimeout: 60,
        fragTimeout: 30,
        espTimeout: 1800,
        espInitTimeout: 120,
        espInitRetries: 5,
        ikeTimeout: 3600,
        nattTimeout: 300,
        greTimeout: 7440,
        parallelSessions: false,
        espGuess: false,
        unrepliedTimeout: 30,
        srcMaxFlows: 0,
        srcMaxIke: 256,
        srcMaxCalls: 256,
        srcMaxEspPending: 16,
        srcMaxFrags: 256,
        controlSocket: '/var/run/vpnmasq.sock',
        wanInterface: 'wan',
        metricsListen: null,
        metricsFile: null,
        webListen: null,
        snapshotDir: '/run/vpnmasq',
        snapshotInterval: 1,
      },
      redirects: [
        {
          line: 6,
          name: null,
          src: 'wan',
          dest: 'lan',
          proto: [PROTO_TCP],
          srcDport: [8080, 8080],
          destIp: '192.168.1.10',
          destPort: [80, 80],
          target: 'DNAT',
          family: 'ipv4',
        },
      ],
      rules: [
        {
          line: 11,
          name: null,
          src: 'wan',
          srcIp: [],
          srcPort: [],
          dest: null,
          destIp: [],
          destPort: [[500, 500]],
          proto: [PROTO_UDP],
          icmpType: [],
          target: 'ACCEPT',
          family: 'ipv4',
        },
      ],
    });
  });

  it('is deeply frozen', () => {
    const c = parse(CONTRACT);
    for (const o of [c, c.main, c.main.lanSubnets, c.main.masqPorts, c.redirects, c.redirects[0], c.redirects[0]!.srcDport, c.rules[0]!.destPort[0]]) {
      expect(Object.isFrozen(o)).toBe(true);
    }
    expect(() => {
      (c.main as { maxFlows: number }).maxFlows = 1;
    }).toThrow(TypeError);
    expect(() => c.redirects.push(c.redirects[0]!)).toThrow(TypeError);
  });

  it('reports the example error from the documentation', () => {
    const text = withMain(['config redirect', "\toption proto 'tcp'", "\toption src_dport '80'", "\toption dest_ip '192.168.1.300'"]);
    expect(fails(text).message).toBe("/etc/config/vpnmasq:7: option dest_ip: '192.168.1.300' is not an IPv4 address");
  });
});

describe('config: main options', () => {
  it('uses the defaults for every option left out', () => {
    expect(main()).toEqual({ ...MAIN_DEFAULTS, lanDevice: 'br-lan', wanDevice: 'wan' });
  });

  const cases: [string, keyof MainConfig, unknown][] = [
    ["option tun_inside 'vin0'", 'tunInside', 'vin0'],
    ["option tun_outside 'vout0'", 'tunOutside', 'vout0'],
    ["option max_flows '1024'", 'maxFlows', 1024],
    ["option max_flows '4194304'", 'maxFlows', 4194304],
    ["option acct '1'", 'acct', true],
    ["option acct '0'", 'acct', false],
    ["option log_level 'trace'", 'logLevel', 'trace'],
    ["option log_level 'fatal'", 'logLevel', 'fatal'],
    ["option masq_ports '20000-29999'", 'masqPorts', [20000, 29999]],
    ["option masq_ports '40000:40100'", 'masqPorts', [40000, 40100]],
    ["option masq_ports '1024'", 'masqPorts', [1024, 1024]],
    ["option tcp_timeout '86400'", 'tcpTimeout', 86400],
    ["option tcp_transitory_timeout '120'", 'tcpTransitoryTimeout', 120],
    ["option udp_timeout '180'", 'udpTimeout', 180],
    ["option icmp_timeout '30'", 'icmpTimeout', 30],
    ["option frag_timeout '255'", 'fragTimeout', 255],
    ["option esp_timeout '900'", 'espTimeout', 900],
    ["option esp_init_timeout '60'", 'espInitTimeout', 60],
    ["option esp_init_retries '0'", 'espInitRetries', 0],
    ["option ike_timeout '7200'", 'ikeTimeout', 7200],
    ["option natt_timeout '600'", 'nattTimeout', 600],
    ["option gre_timeout '3600'", 'greTimeout', 3600],
    ["option parallel_sessions '1'", 'parallelSessions', true],
    ["option esp_guess 'yes'", 'espGuess', true],
    ["option control_socket '/run/vpnmasq/ctl.sock'", 'controlSocket', '/run/vpnmasq/ctl.sock'],
    ["list lan_subnet '192.168.1.0/24'", 'lanSubnets', ['192.168.1.0/24']],
  ];
  for (const [opt, field, expected] of cases) {
    it(`${opt} -> ${field}`, () => {
      expect(main(opt)[field]).toEqual(expected);
    });
  }

  it('reads lan_device and wan_device', () => {
    const m = parse("config vpnmasq 'main'\n\toption lan_device 'eth0.1'\n\toption wan_device 'pppoe-wan'\n").main;
    expect([m.lanDevice, m.wanDevice]).toEqual(['eth0.1', 'pppoe-wan']);
  });

  it('accepts every uci boolean word', () => {
    for (const w of ['1', 'yes', 'on', 'true', 'enabled']) expect(main(`option esp_guess '${w}'`).espGuess).toBe(true);
    for (const w of ['0', 'no', 'off', 'false', 'disabled']) expect(main(`option esp_guess '${w}'`).espGuess).toBe(false);
  });

  it('reads lan_subnet as a list or a whitespace-separated option, normalised', () => {
    expect(main("list lan_subnet '192.168.1.1/24'", "list lan_subnet '10.0.0.0/255.255.0.0'").lanSubnets).toEqual([
      '192.168.1.0/24',
      '10.0.0.0/16',
    ]);
    expect(main("option lan_subnet '192.168.1.0/24  172.16.0.0/12'").lanSubnets).toEqual(['192.168.1.0/24', '172.16.0.0/12']);
  });

  it('refuses bad values, at the option line', () => {
    mainError("option max_flows 'lots'", "option max_flows: 'lots' is not a whole number");
    mainError("option max_flows '-5'", 'is not a whole number');
    mainError("option max_flows '0x400'", 'is not a whole number');
    mainError("option max_flows '1023'", "option max_flows: '1023' is out of range (1024..4194304)");
    mainError("option max_flows '4194305'", 'is out of range');
    mainError("option acct '2'", "option acct: '2' is not a boolean");
    mainError("option acct 'bytes'", "option acct: 'bytes' is not a boolean");
    mainError("list acct '1'", "list acct: must be a single value; use 'option acct'");
    mainError("option log_level 'verbose'", "option log_level: 'verbose' is not a log level");
    mainError("option log_level 'INFO'", 'is not a log level');
    mainError("option priority 'rt'", "option priority: 'rt' is not a priority (normal, high, realtime)");
    mainError("option priority '10'", 'is not a priority');
    mainError("option busy_poll '100001'", "option busy_poll: '100001' is out of range (0..100000 microseconds)");
    mainError("option busy_poll '-1'", 'is not a whole number');
    mainError("option busy_poll '50us'", 'is not a whole number');
    mainError("option host_queues '3'", "option host_queues: '3' is not auto or one of 1, 2, 4, 8, 16");
    mainError("option host_queues '0'", "option host_queues: '0' is out of range (1..16)");
    mainError("option host_queues '32'", 'is out of range (1..16)');
    mainError("option host_queues 'many'", 'is not a whole number');
    mainError("option host_queues 'AUTO'", 'is not a whole number');
    mainError("option masq_ports '1000-2000'", 'is out of range (ports 1024..65535)');
    mainError("option masq_ports '65535-61000'", 'is an empty range');
    mainError("option masq_ports '61000-70000'", 'is out of range');
    mainError("option masq_ports 'high'", 'is not a port or port range');
    mainError("option tcp_timeout '0'", 'is out of range (1..2147483 seconds)');
    mainError("option udp_timeout '2147484'", 'is out of range');
    mainError("option frag_timeout '256'", 'is out of range (1..255 seconds)');
    mainError("option esp_init_retries '101'", 'is out of range (0..100)');
    mainError("option parallel_sessions 'maybe'", "option parallel_sessions: 'maybe' is not a boolean");
    mainError("option esp_guess 'TRUE'", 'is not a boolean');
    mainError("option control_socket 'vpnmasq.sock'", 'is not an absolute path');
    mainError("option control_socket '/var/run/'", 'names a directory');
    mainError(`option control_socket '/${'x'.repeat(107)}'`, 'too long for a Unix socket path');
  });

  it('applies Linux interface name rules to the devices', () => {
    mainError("option tun_inside 'abcdefghijklmnop'", 'too long for a Linux interface name (16 bytes, at most 15)');
    mainError("option tun_inside 'a/b'", 'is not a valid Linux interface name');
    mainError("option tun_outside 'a b'", 'is not a valid Linux interface name');
    mainError("option tun_outside 'a:1'", 'is not a valid Linux interface name');
    mainError("option tun_outside '..'", 'is not a valid Linux interface name');
    mainError("option tun_inside 'tun%d'", 'name template');
    expect(main("option tun_inside 'abcdefghijklmno'").tunInside).toBe('abcdefghijklmno');
    expectError("config vpnmasq 'main'\n\toption lan_device 'br/lan'\n\toption wan_device 'wan'\n", 2, "option lan_device: 'br/lan'");
  });

  it('refuses a device used twice', () => {
    mainError("option tun_inside 'br-lan'", "option tun_inside: 'br-lan' is also the lan_device");
    mainError("option tun_outside 'tin'", 'is also the tun_inside');
    expectError("config vpnmasq 'main'\n\toption lan_device 'eth0'\n\toption wan_device 'eth0'\n", 3, 'is also the lan_device');
  });

  it('requires lan_device and wan_device', () => {
    expectError("\nconfig vpnmasq 'main'\n\toption wan_device 'wan'\n", 2, 'vpnmasq: option lan_device is required');
    expectError("config vpnmasq 'main'\n\toption lan_device 'br-lan'\n", 1, 'option wan_device is required');
  });

  it('refuses ike_timeout below esp_timeout, with the reason', () => {
    mainError("option ike_timeout '1000'", 'ike_timeout (1000) must be at least esp_timeout (1800)');
    mainError("option esp_timeout '4000'", 'option esp_timeout: ike_timeout (3600) must be at least esp_timeout (4000)');
    expect(main("option ike_timeout '1800'").ikeTimeout).toBe(1800);
  });

  it('refuses bad lan subnets', () => {
    mainError("list lan_subnet '192.168.1.0'", 'needs a prefix length');
    mainError("list lan_subnet '192.168.1.0/33'", 'prefix length above 32');
    mainError("list lan_subnet '192.168.1.0/255.0.255.0'", 'non-contiguous netmask');
    mainError("list lan_subnet '192.168.1.0/x'", 'invalid prefix length or netmask');
    mainError("list lan_subnet '300.1.1.0/24'", 'is not an IPv4 address or network');
    mainError("list lan_subnet '0.0.0.0/0'", 'covers every address');
    mainError("list lan_subnet '224.0.0.0/4'", 'is not a LAN subnet (multicast)');
    mainError("list lan_subnet 'fd00::/64'", 'IPv6');
    expectError(withMain([], ["list lan_subnet '10.0.0.0/8'", "list lan_subnet '10.1.0.0/16'"]), 5, "overlaps lan_subnet '10.0.0.0/8' (line 4)");
  });

  it('refuses a list-type option holding only whitespace', () => {
    mainError("option lan_subnet '  '", 'option lan_subnet: empty value');
    redirectError("option proto ' '", 'option proto: empty value');
  });

  it('refuses a list where a single value belongs', () => {
    mainError("list max_flows '2048'", "list max_flows: must be a single value; use 'option max_flows'");
  });

  it('refuses unknown options, suggesting close names', () => {
    mainError("option max_flow '2048'", "option max_flow: unknown option in a 'vpnmasq' section (did you mean 'max_flows'?)");
    mainError("option udp_timout '60'", "did you mean 'udp_timeout'");
    mainError("option colour 'blue'", 'known options: lan_device, wan_device');
  });
});

describe('config: sections', () => {
  it('requires exactly one main section', () => {
    expectError(["config redirect", "\toption dest_ip '192.168.1.1'", "\toption src_dport '80'"].join('\n'), 0, 'missing the main section');
    expectError('', 0, "config vpnmasq 'main'");
    expectError(withMain(["config vpnmasq 'other'", "\toption lan_device 'a'", "\toption wan_device 'b'"]), 4, 'a second main section (the first is at line 1)');
  });

  it('refuses unknown section types', () => {
    expectError(withMain(['config redirct']), 4, "config redirct: unknown section type (did you mean 'redirect'?)");
    expectError(withMain(['config zone']), 4, 'fw4 section type is not supported');
    expectError(withMain(['config thing']), 4, 'known: vpnmasq, redirect, rule');
  });
});

describe('config: redirect', () => {
  it('defaults: src wan, dest lan, proto tcp udp, dest_port = src_dport, target DNAT', () => {
    expect(redirect()).toEqual({
      line: 4,
      name: null,
      src: 'wan',
      dest: 'lan',
      proto: [PROTO_TCP, PROTO_UDP],
      srcDport: [8080, 8080],
      destIp: '192.168.1.10',
      destPort: [8080, 8080],
      target: 'DNAT',
      family: 'ipv4',
    });
  });

  it('reads every option', () => {
    const r = redirect(
      "option name 'Web server'",
      "option enabled '1'",
      "option family 'ipv4'",
      "option src 'wan'",
      "option proto 'tcp'",
      "option dest 'lan'",
      "option dest_port '80'",
      "option target 'dnat'",
    );
    expect(r).toMatchObject({ name: 'Web server', proto: [PROTO_TCP], srcDport: [8080, 8080], destPort: [80, 80], target: 'DNAT' });
  });

  it('reads proto the way fw4 does', () => {
    expect(redirect("option proto 'tcpudp'").proto).toEqual([PROTO_TCP, PROTO_UDP]);
    expect(redirect("option proto 'udp tcp'").proto).toEqual([PROTO_TCP, PROTO_UDP]);
    expect(redirect("list proto 'udp'", "list proto 'TCP'").proto).toEqual([PROTO_TCP, PROTO_UDP]);
    expect(redirect("option proto '17'").proto).toEqual([PROTO_UDP]);
  });

  it('takes the uci section name as the name when there is no option name', () => {
    const c = parse(withMain(["config redirect 'web'", "\toption src_dport '80'", "\toption dest_ip '192.168.1.2'"]));
    expect(c.redirects[0]!.name).toBe('web');
  });

  it('reads port ranges, mapping to a range of the same length', () => {
    const c = parse(withMain(['config redirect', "\toption src_dport '8000-8010'", "\toption dest_port '9000:9010'", "\toption dest_ip '192.168.1.10'"]));
    expect(c.redirects[0]).toMatchObject({ srcDport: [8000, 8010], destPort: [9000, 9010] });
  });

  it('forwards portless protocols without ports', () => {
    const base = ['config redirect', "\toption dest_ip '192.168.1.20'"];
    const c = parse(withMain([...base, "\toption proto 'esp'", ...base, "\toption proto '47'", ...base, "\toption proto 'ah sctp'"]));
    expect(c.redirects.map((r) => [r.proto, r.srcDport, r.destPort])).toEqual([
      [[PROTO_ESP], null, null],
      [[PROTO_GRE], null, null],
      [[51, 132], null, null],
    ]);
  });

  it('drops disabled redirects after validating them', () => {
    expect(parse(withMain([...REDIRECT, "\toption enabled '0'"])).redirects).toEqual([]);
    redirectError("option enabled 'nope'", "option enabled: 'nope' is not a boolean");
    expectError(withMain([...REDIRECT, "\toption enabled '0'", "\toption dest_port '1-2'"]), 8, 'same length');
  });

  it('refuses what vpnmasq cannot do, saying why', () => {
    redirectError("option src 'lan'", "option src: 'lan' is not a valid zone here; redirects forward traffic arriving on 'wan'");
    redirectError("option src '*'", '(any zone) is not supported');
    redirectError("option dest 'wan'", "redirects forward to a host on 'lan'");
    redirectError("option target 'SNAT'", 'vpnmasq masquerades outbound traffic itself');
    redirectError("option target 'ACCEPT'", "is not a redirect target (only 'DNAT')");
    redirectError("option family 'ipv6'", "option family: 'ipv6' is refused: vpnmasq is IPv4-only");
    redirectError("option family 'inet9'", 'is not a family');
    redirectError("option proto 'all'", "'all' is not supported for redirects");
    redirectError("option proto 'icmp'", 'icmp cannot be redirected');
    redirectError("option proto 'tcp esp'", 'mixes tcp/udp (which need src_dport) with portless protocols');
    redirectError("option proto '!tcp'", "negation ('!')");
    redirectError("option proto 'tcp bogus'", "option proto: 'bogus' is not a known protocol name or number");
    redirectError("option proto '256'", 'is not a protocol number (0..255)');
    redirectError("option proto 'ip'", 'ambiguous');
    redirectError("option proto 'icmpv6'", 'IPv6 protocol');
    redirectError("option src_mac '02:00:00:00:00:01'", 'option src_mac: this fw4 option is not supported by vpnmasq');
    redirectError("option reflection_zone 'lan'", 'fw4 option is not supported');
    redirectError("option dest_prot '80'", "option dest_prot: unknown option in a 'redirect' section (did you mean 'dest_port'?)");
  });

  it('requires src_dport for tcp/udp and forbids ports for other protocols', () => {
    expectError(withMain(['config redirect', "\toption proto 'tcp'", "\toption dest_ip '192.168.1.10'"]), 4, 'redirect: option src_dport is required for proto tcp');
    expectError(withMain(['config redirect', "\toption proto 'esp'", "\toption src_dport '500'", "\toption dest_ip '192.168.1.10'"]), 6, "option src_dport: '500' is not allowed: proto esp has no ports");
    expectError(withMain(['config redirect', "\toption proto 'gre'", "\toption dest_port '500'", "\toption dest_ip '192.168.1.10'"]), 6, 'proto gre has no ports');
  });

  it('checks ports', () => {
    redirectError("option dest_port '0'", 'is out of range (ports 1..65535)');
    redirectError("option dest_port '65536'", 'is out of range');
    redirectError("option dest_port '80-81'", "does not have the same length as src_dport '8080' (1 vs 2 ports)");
    redirectError("option dest_port 'http'", 'is not a port or port range');
    expectError(withMain(['config redirect', "\toption src_dport '90-80'", "\toption dest_ip '192.168.1.10'"]), 5, 'is an empty range');
  });

  it('checks dest_ip', () => {
    const base = ['config redirect', "\toption src_dport '8080'"];
    redirectError("option dest_ip '192.168.1.300'", "option dest_ip: '192.168.1.300' is not an IPv4 address", 6, base);
    redirectError("option dest_ip '192.168.1.0/24'", 'is not an IPv4 address', 6, base);
    redirectError("option dest_ip '0300.0250.1.1'", 'is not an IPv4 address', 6, base);
    redirectError("option dest_ip 'fd00::1'", 'is an IPv6 address; vpnmasq is IPv4-only', 6, base);
    redirectError("option dest_ip '255.255.255.255'", 'is not a LAN host address (broadcast)', 6, base);
    redirectError("option dest_ip '127.0.0.1'", 'is not a LAN host address (loopback)', 6, base);
    redirectError("option dest_ip '224.0.0.1'", 'is not a LAN host address (multicast)', 6, base);
    redirectError("option dest_ip '0.0.0.0'", 'is not a LAN host address (unspecified)', 6, base);
    redirectError("option dest_ip '250.1.2.3'", 'is not a LAN host address (reserved, 240.0.0.0/4)', 6, base);
    // documentation ranges are fine (labs use them)
    expect(parse(withMain([...base, "\toption dest_ip '198.51.100.7'"])).redirects[0]!.destIp).toBe('198.51.100.7');
    redirectError("list dest_ip '192.168.1.2'", "list dest_ip: must be a single value", 6, base);
    expectError(withMain(base), 4, 'redirect: option dest_ip is required');
  });

  it('keeps dest_ip inside the configured lan subnets', () => {
    const sub = ["list lan_subnet '192.168.1.0/24'"];
    expect(parse(withMain(REDIRECT, sub)).redirects).toHaveLength(1);
    const at = (ip: string) => withMain(['config redirect', "\toption src_dport '8080'", `\toption dest_ip '${ip}'`], sub);
    expectError(at('10.0.0.5'), 7, 'option dest_ip: 10.0.0.5 is not inside any lan_subnet (192.168.1.0/24)');
    expectError(at('192.168.1.0'), 7, 'is the network address of lan_subnet 192.168.1.0/24');
    expectError(at('192.168.1.255'), 7, 'is the broadcast address of lan_subnet 192.168.1.0/24');
  });

  it('refuses a redirect inside the masquerade port pool', () => {
    expectError(
      withMain(['config redirect', "\toption src_dport '60990-61000'", "\toption dest_ip '192.168.1.10'"]),
      5,
      'option src_dport: 60990-61000 overlaps masq_ports 61000-65535 (the default)',
    );
    const e = fails(withMain(['config redirect', "\toption src_dport '30000'", "\toption dest_ip '192.168.1.10'"], ["option masq_ports '20000-40000'"]));
    expect(e.line).toBe(6);
    expect(e.reason).toContain('overlaps masq_ports 20000-40000 (line 4)');
    expect(e.reason).toContain('stolen');
    // fine once the pool is moved
    expect(parse(withMain(['config redirect', "\toption src_dport '62000'", "\toption dest_ip '192.168.1.10'"], ["option masq_ports '20000-40000'"])).redirects).toHaveLength(1);
    // a disabled redirect does not count
    expect(parse(withMain(['config redirect', "\toption enabled '0'", "\toption src_dport '62000'", "\toption dest_ip '192.168.1.10'"])).redirects).toEqual([]);
  });

  it('refuses conflicting redirects', () => {
    const r = (proto: string, port: string | null, ip = '192.168.1.10') =>
      ['config redirect', `\toption proto '${proto}'`, ...(port ? [`\toption src_dport '${port}'`] : []), `\toption dest_ip '${ip}'`];
    expectError(withMain([...r('tcp', '8000-8100'), ...r('tcp', '8080', '192.168.1.11')]), 10, 'option src_dport: tcp 8080 conflicts with the redirect at line 4 (tcp 8000-8100)');
    expectError(withMain([...r('tcp udp', '53'), ...r('udp', '53')]), 10, 'udp 53 conflicts with the redirect at line 4');
    expectError(withMain([...r('esp', null), ...r('esp', null, '192.168.1.11')]), 8, 'option proto: esp is already redirected by the redirect at line 4');
    // same port on different protocols is fine; so is a disabled duplicate
    expect(parse(withMain([...r('tcp', '53'), ...r('udp', '53')])).redirects).toHaveLength(2);
    expect(parse(withMain([...r('tcp', '53'), ...r('tcp', '53'), "\toption enabled 'off'"])).redirects).toHaveLength(1);
  });
});

describe('config: rule', () => {
  it('defaults: proto tcp udp, any address and port, dest = router', () => {
    expect(rule()).toEqual({
      line: 4,
      name: null,
      src: 'wan',
      srcIp: [],
      srcPort: [],
      dest: null,
      destIp: [],
      destPort: [],
      proto: [PROTO_TCP, PROTO_UDP],
      icmpType: [],
      target: 'ACCEPT',
      family: 'ipv4',
    });
  });

  it('reads every option', () => {
    const c = parse(
      withMain([
        "config rule 'fwd'",
        "\toption name 'Allow-VPN'",
        "\toption enabled 'yes'",
        "\toption family 'ipv4'",
        "\toption src 'wan'",
        "\toption src_ip '203.0.113.7 198.51.100.0/24'",
        "\toption src_port '1024-65535 500'",
        "\toption dest 'lan'",
        "\tlist dest_ip '192.168.1.10'",
        "\tlist dest_ip '192.168.1.128/255.255.255.128'",
        "\toption dest_port '500 4500 10000-10010'",
        "\toption proto 'udp'",
        "\toption target 'accept'",
      ]),
    );
    expect(c.rules[0]).toEqual({
      line: 4,
      name: 'Allow-VPN',
      src: 'wan',
      srcIp: ['203.0.113.7/32', '198.51.100.0/24'],
      srcPort: [
        [1024, 65535],
        [500, 500],
      ],
      dest: 'lan',
      destIp: ['192.168.1.10/32', '192.168.1.128/25'],
      destPort: [
        [500, 500],
        [4500, 4500],
        [10000, 10010],
      ],
      proto: [PROTO_UDP],
      icmpType: [],
      target: 'ACCEPT',
      family: 'ipv4',
    });
  });

  it('reads icmp types by fw4 name, number and type/code', () => {
    const r = rule("option proto 'icmp'", "list icmp_type 'echo-request'", "list icmp_type 'port-unreachable'", "list icmp_type '11'", "list icmp_type '3/4'");
    expect(r.proto).toEqual([PROTO_ICMP]);
    expect(r.icmpType).toEqual([
      { type: 8, code: null },
      { type: 3, code: 3 },
      { type: 11, code: null },
      { type: 3, code: 4 },
    ]);
    expect(rule("option proto '1'", "option icmp_type 'any'").icmpType).toEqual([]);
  });

  it('reads proto all, lan source and every target', () => {
    expect(rule("option proto 'all'").proto).toEqual([PROTO_ALL]);
    expect(rule("option proto 'any'").proto).toEqual([PROTO_ALL]);
    expect(rule("option proto 'esp ah gre'").proto).toEqual([47, 50, 51]);
    // issue 8 item 2: a LAN source needs dest 'wan' (forward); without dest it is refused below
    expect(parse(withMain(['config rule', "\toption src 'lan'", "\toption dest 'wan'", "\toption target 'REJECT'"])).rules[0]).toMatchObject({ src: 'lan', dest: 'wan', target: 'REJECT' });
    expect(parse(withMain(['config rule', "\toption src 'wan'", "\toption target 'drop'"])).rules[0]!.target).toBe('DROP');
  });

  it('drops disabled rules', () => {
    expect(parse(withMain([...RULE, "\toption enabled 'false'"])).rules).toEqual([]);
  });

  it('refuses bad rules, saying why', () => {
    expectError(withMain(['config rule', "\toption target 'ACCEPT'"]), 4, "rule: option src is required ('wan' or 'lan')");
    expectError(withMain(['config rule', "\toption src 'wan'"]), 4, 'rule: option target is required');
    ruleError("option dest 'wan'", "leave dest out for traffic to the router itself");
    expectError(withMain(['config rule', "\toption src 'lan'", "\toption dest 'lan'", "\toption target 'DROP'"]), 6, 'never passes through the router');
    expectError(withMain(['config rule', "\toption src '*'", "\toption target 'DROP'"]), 5, "option src: '*' (any zone) is not supported");
    ruleError("option target 'MARK'", "option target: 'MARK' is not a supported rule target", 6, ['config rule', "\toption src 'wan'"]);
    ruleError("option proto 'icmp'\n\toption dest_port '80'", "option dest_port: only valid with proto tcp and/or udp (proto is 'icmp')", 8);
    ruleError("option proto 'all'\n\toption dest_port '80'", 'only valid with proto tcp and/or udp', 8);
    ruleError("option icmp_type 'echo-request'", "option icmp_type: only valid with proto icmp alone (proto is 'tcp udp')");
    ruleError("option proto 'icmp'\n\toption icmp_type 'echo-requests'", "'echo-requests' is not an ICMP type", 8);
    ruleError("option proto 'icmp'\n\toption icmp_type '256'", 'is out of range', 8);
    ruleError("option proto 'icmp'\n\toption icmp_type 'any ping'", "'any' already covers every type", 8);
    ruleError("option proto 'all tcp'", "'all' already covers every protocol");
    ruleError("option src_ip '10.0.0.1-10.0.0.9'", "option src_ip: '10.0.0.1-10.0.0.9' is not an IPv4 address");
    ruleError("option src_ip '!10.0.0.0/8'", "negation ('!')");
    ruleError("option dest_ip '2001:db8::1'", 'IPv6');
    ruleError("option dest_port '0'", 'is out of range');
    // issue 8 item 2: every rule shape is enforced or refused (src_port is now enforced)
    expectError(withMain(['config rule', "\toption src 'lan'", "\toption target 'REJECT'"]), 5,
      "option src: 'lan' without dest is an input rule (LAN → the router itself); that traffic never passes through vpnmasq");
    expectError(withMain(['config rule', "\toption src 'lan'", "\toption dest 'wan'", "\toption src_port '53'", "\toption proto 'icmp'", "\toption target 'DROP'"]), 7,
      "option src_port: only valid with proto tcp and/or udp (proto is 'icmp')");
    ruleError("option src_port '0'", 'is out of range');
    ruleError("option srcip '1.2.3.4'", "did you mean 'src_ip'?");
  });
});

describe('config: wan_interface', () => {
  it('is read, and refused when it is not a netifd name', async () => {
    const { parseConfig } = await import('../../../src/config/index.js');
    const base = "config vpnmasq 'main'\n\toption lan_device 'br-lan'\n\toption wan_device 'wan'\n";
    expect(parseConfig(base + "\toption wan_interface 'wan6x'\n", 'f').main.wanInterface).toBe('wan6x');
    expect(() => parseConfig(base + "\toption wan_interface 'bad name'\n", 'f')).toThrow(/f:4: .*wan_interface.*netifd/);
  });
});

describe('config: snapshot_dir and snapshot_interval (issue 9)', () => {
  it('are read with their defaults, and refused when wrong', () => {
    expect(main().snapshotDir).toBe('/run/vpnmasq');
    expect(main().snapshotInterval).toBe(1);
    expect(main("option snapshot_dir '/tmp/x/'", "option snapshot_interval '0'")).toMatchObject({ snapshotDir: '/tmp/x', snapshotInterval: 0 });
    mainError("option snapshot_dir 'run/vpnmasq'", 'option snapshot_dir: \'run/vpnmasq\' is not an absolute path');
    mainError("option snapshot_interval '3601'", 'is out of range');
    mainError("option snapshot_interval 'often'", 'option snapshot_interval');
  });
});
