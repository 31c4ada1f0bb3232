// Issue 8 item 3 through the real router (`vpnmasq run`, real TUNs, the
// kernel around them): the router's own ICMP errors about translated
// inbound packets quote the public address and port; fragments that arrive
// before their first are held and released through the TUN; LAN packets to
// destinations that must never leave on the WAN (hairpin, multicast,
// broadcast, loopback) do not. Raw packets come from small python3 scripts (socket
// module only) inside the namespaces.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { skipUnless } from '../helpers/prereq.js';
import { RunningRouter } from '../helpers/vpnmasq.js';
import type { Lab as LabT } from '../../src/lab/lab.js';

const skip = skipUnless({ root: true, tun: true, tools: ['ip', 'socat', 'tcpdump', 'python3'] });

const PY_COMMON = `
import socket, struct, sys, json, select, time, os
def csum(b):
    if len(b) % 2: b += b'\\0'
    s = sum(struct.unpack('!%dH' % (len(b) // 2), b))
    while s >> 16: s = (s & 0xffff) + (s >> 16)
    return s
def aton(a): return socket.inet_aton(a)
def ipv4(src, dst, proto, payload, ident=0, frag=0, ttl=64):
    h = struct.pack('!BBHHHBBH4s4s', 0x45, 0, 20 + len(payload), ident, frag, ttl, proto, 0, aton(src), aton(dst))
    c = (~csum(h)) & 0xffff
    return h[:10] + struct.pack('!H', c) + h[12:] + payload
def udp(src, sport, dst, dport, data):
    u = struct.pack('!HHHH', sport, dport, 8 + len(data), 0) + data
    c = (~csum(aton(src) + aton(dst) + struct.pack('!BBH', 0, 17, len(u)) + u)) & 0xffff
    return u[:6] + struct.pack('!H', c or 0xffff) + u[8:]
def out(o): print(json.dumps(o), flush=True)
`;

// WAN host: answers the first datagram, then sends a DF datagram of argv[2]
// bytes back and prints the ICMP error that comes back for it (hex).
const PY_WAN_ERR = PY_COMMON + `
port, size = int(sys.argv[1]), int(sys.argv[2])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(('0.0.0.0', port))
s.setsockopt(socket.IPPROTO_IP, 10, 2)  # IP_MTU_DISCOVER = IP_PMTUDISC_DO: DF set
ic = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
out({'ready': True})
data, peer = s.recvfrom(4096)
s.sendto(b'ok', peer)
try: s.sendto(b'x' * size, peer)
except OSError: pass
end = time.time() + 8
while time.time() < end:
    r, _, _ = select.select([ic], [], [], max(0, end - time.time()))
    if not r: break
    pkt = ic.recv(4096)
    hl = (pkt[0] & 15) * 4
    if pkt[hl] == 3:
        out({'peer': peer, 'icmp': pkt.hex()}); sys.exit(0)
out({'peer': peer, 'icmp': None})
`;

// WAN host: on the first datagram, sends back a 3000-byte UDP datagram in
// three fragments, the later ones first (raw socket, IP_HDRINCL).
const PY_WAN_FRAG = PY_COMMON + `
port, me = int(sys.argv[1]), sys.argv[2]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(('0.0.0.0', port))
raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
out({'ready': True})
data, peer = s.recvfrom(4096)
body = bytes((i * 7 + 3) & 0xff for i in range(3000))
u = udp(me, port, peer[0], peer[1], body)
ident = 0x5a5a
# pieces well under any path MTU (the first test lowers one to 1280): the kernel must not split them again
frags = [(0, u[0:1000], 1), (1000, u[1000:2000], 1), (2000, u[2000:], 0)]
for off, part, more in [frags[2], frags[1], frags[0]]:
    raw.sendto(ipv4(me, peer[0], 17, part, ident, (more << 13) | (off >> 3)), (peer[0], 0))
    time.sleep(0.3)
out({'peer': peer, 'sent': 3})
`;

// LAN host: sends one datagram from argv[1] to argv[2]:argv[3], waits for
// the 3000-byte answer, prints its length and whether its bytes are right.
const PY_LAN_RECV = PY_COMMON + `
sport, dst, dport = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(('0.0.0.0', sport))
s.sendto(b'hi', (dst, dport))
s.settimeout(8)
try:
    data = s.recv(65535)
    out({'len': len(data), 'right': data == bytes((i * 7 + 3) & 0xff for i in range(3000))})
except socket.timeout:
    out({'len': 0, 'right': False})
`;

// LAN host: raw Ethernet frames to the router's MAC with destinations that
// must never be forwarded to the WAN.
const PY_LAN_BAD = PY_COMMON + `
me, mac_router, mac_me = sys.argv[1], bytes.fromhex(sys.argv[2].replace(':', '')), bytes.fromhex(sys.argv[3].replace(':', ''))
p = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
p.bind(('eth0', 0))
n = 0
for dst, dport in json.loads(sys.argv[4]):
    pkt = ipv4(me, dst, 17, udp(me, 40000 + n, dst, dport, b'must not leave'), 0x100 + n)
    p.send(mac_router + mac_me + b'\\x08\\x00' + pkt); n += 1
out({'sent': n})
`;

function ipStr(b: Buffer, o: number): string { return `${b[o]}.${b[o + 1]}.${b[o + 2]}.${b[o + 3]}`; }
function sum16(b: Buffer): number {
  let s = 0;
  for (let i = 0; i + 1 < b.length; i += 2) s += (b[i] << 8) | b[i + 1];
  if (b.length & 1) s += b[b.length - 1] << 8;
  while (s >> 16) s = (s & 0xffff) + (s >>> 16);
  return s;
}

describe.skipIf(skip)('misdelivery through the real router (issue 8 item 3)', () => {
  let lab: LabT;
  let vm: RunningRouter;
  let dir: string;
  const WANHOST = '203.0.113.2';
  const sh = (ns: string, cmd: string, timeoutMs = 20_000) => lab.tryExec(ns, ['sh', '-c', cmd], { timeoutMs });

  /** Runs a python script in the background and resolves with its first JSON line after `ready`, or on exit. */
  function background(ns: string, script: string, args: string[]): { ready: Promise<void>; result: Promise<any> } {
    const child = lab.spawn(ns, ['python3', join(dir, script), ...args]);
    let buf = '';
    let onReady!: () => void;
    const ready = new Promise<void>((r) => (onReady = r));
    const result = new Promise<any>((resolve) => {
      child.stdout!.on('data', (d) => {
        buf += d;
        for (const line of buf.split('\n').slice(0, -1)) {
          const m = JSON.parse(line);
          if (m.ready) onReady(); else resolve(m);
        }
        buf = buf.slice(buf.lastIndexOf('\n') + 1);
      });
      child.on('exit', () => { onReady(); resolve(null); });
    });
    return { ready, result };
  }
  const runPy = (ns: string, script: string, args: string[]) => {
    const r = lab.tryExec(ns, ['python3', join(dir, script), ...args], { timeoutMs: 20_000 });
    const line = r.stdout.trim().split('\n').pop() ?? '';
    return line ? JSON.parse(line) : { error: r.stderr };
  };

  beforeAll(async () => {
    const { Lab } = await import('../../src/lab/lab.js');
    dir = mkdtempSync(join(tmpdir(), 'vpnmasq-misdelivery-'));
    writeFileSync(join(dir, 'wan_err.py'), PY_WAN_ERR);
    writeFileSync(join(dir, 'wan_frag.py'), PY_WAN_FRAG);
    writeFileSync(join(dir, 'lan_recv.py'), PY_LAN_RECV);
    writeFileSync(join(dir, 'lan_bad.py'), PY_LAN_BAD);
    lab = Lab.create({ id: `md${process.pid % 10000}` });
    vm = new RunningRouter(lab);
    await vm.start();
  });

  afterAll(async () => {
    await vm?.stop();
    lab?.destroy();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('N1 the router\'s own "fragmentation needed" about a translated reply quotes the WAN address and port', async () => {
    // lan1 takes UDP port 4000 toward the WAN host, so lan2's 4000 is translated to a pool port
    sh(lab.lan[0]!, `echo x | socat -u - UDP:${WANHOST}:9,sourceport=4000`);
    sh(lab.router, 'ip link set dev br-lan mtu 1280');
    try {
      const w = background(lab.wan[0]!, 'wan_err.py', ['9996', '1400']);
      await w.ready;
      sh(lab.lan[1]!, `echo hi | socat -t3 - UDP:${WANHOST}:9996,sourceport=4000`);
      const m = await w.result;
      expect(m?.icmp, 'an ICMP error came back').toBeTruthy();
      const [peerAddr, alias] = m.peer as [string, number];
      expect(peerAddr).toBe('203.0.113.1');
      expect(alias).toBeGreaterThanOrEqual(61000);
      const pkt = Buffer.from(m.icmp, 'hex');
      const hl = (pkt[0] & 15) * 4;
      expect(ipStr(pkt, 12)).toBe('203.0.113.1'); // from the router's WAN address
      expect([pkt[hl], pkt[hl + 1]]).toEqual([3, 4]);
      const q = hl + 8;
      const qhl = (pkt[q] & 15) * 4;
      expect(ipStr(pkt, q + 12)).toBe(WANHOST);
      expect(ipStr(pkt, q + 16)).toBe('203.0.113.1'); // not lan2's 192.168.1.11
      expect(pkt.readUInt16BE(q + qhl + 2)).toBe(alias); // not lan2's port 4000
      expect(sum16(pkt.subarray(q, q + qhl))).toBe(0xffff); // quoted header checksum
      expect(sum16(pkt.subarray(hl, (pkt[2] << 8) | pkt[3]))).toBe(0xffff); // ICMP checksum
      expect(pkt.includes(Buffer.from([192, 168, 1]))).toBe(false);
    } finally {
      sh(lab.router, 'ip link set dev br-lan mtu 1500');
    }
  });

  it('N2 later fragments arriving before their first are held and released through the TUN: the LAN host gets the datagram', async () => {
    const before = vm.status().counters ?? {};
    const w = background(lab.wan[0]!, 'wan_frag.py', ['9995', WANHOST]);
    await w.ready;
    const got = runPy(lab.lan[1]!, 'lan_recv.py', ['4100', WANHOST, '9995']);
    const sent = await w.result;
    expect(sent?.sent).toBe(3);
    expect(got).toEqual({ len: 3000, right: true });
    const after = vm.status().counters ?? {};
    expect((after.fragsReleased ?? 0) - (before.fragsReleased ?? 0)).toBe(2);
  });

  it('N3 LAN packets to the WAN address, multicast, broadcast or loopback never leave on the WAN', async () => {
    // The kernel in front of the engine already refuses to forward these (local
    // delivery, martian destination, no multicast routing), and since the
    // fwmark diversion (issue 8 item 7) only WAN-bound traffic reaches the
    // engine at all: this guards the whole router; the engine's own refusal
    // (hairpin, bad_dst) is scenario M16.
    const macOf = (ns: string, dev: string) => /link\/ether ([0-9a-f:]+)/.exec(sh(ns, `ip link show dev ${dev}`).stdout)![1]!;
    const dump = lab.spawn(lab.wan[0]!, ['timeout', '6', 'tcpdump', '-i', 'eth0', '-n', '-l', '(udp and src host 192.168.1.10) or (udp and src host 203.0.113.1 and (port 1900 or port 8080 or port 5353))']);
    let seen = '';
    dump.stdout!.on('data', (d) => (seen += d));
    const dumpDone = new Promise((r) => dump.on('exit', r));
    await new Promise((r) => setTimeout(r, 1500));
    // from a LAN host, straight at the router's MAC
    const bad = [['203.0.113.1', 8080], ['239.1.2.3', 1900], ['224.0.0.251', 5353], ['255.255.255.255', 1900], ['127.0.0.1', 1900]];
    const r = runPy(lab.lan[0]!, 'lan_bad.py', ['192.168.1.10', macOf(lab.router, 'br-lan'), macOf(lab.lan[0]!, 'eth0'), JSON.stringify(bad)]);
    expect(r.sent).toBe(bad.length);
    await dumpDone;
    expect(seen.trim()).toBe('');
    // ordinary traffic still passes
    const ok = sh(lab.lan[0]!, `ping -c 1 -W 2 ${WANHOST}`);
    expect(ok.stdout).toContain('1 received');
  });
});
