// The flow fast path's kernel part (src/tun/fastpath.cc) on its own, on
// veths between three namespaces: lanhost — router — wanhost.
//
// The router's kernel makes the TCP connection's handshake (forwarding on,
// nftables snat with a fixed mapping: 10.230.1.2:40000 leaves as
// 10.230.2.1:61000), then an nftables forward drop stops the kernel from
// forwarding anything of it: what crosses from then on crossed by the
// program, on the two entries the test writes as the engine would. The
// forwarding sysctl stays on: bpf_fib_lookup itself refuses a device with
// forwarding off (BPF_FIB_LKUP_RET_FWD_DISABLED). The UDP flow
// (10.230.1.2:40001 as 10.230.2.1:61001) and the ICMP echo exchange (ping's
// identifier 0x1234 as 0xcafe) never had the kernel's NAT: under the same
// drop only the program carries them.
//
// A Node child in the router namespace opens the fast path through
// src/tun/fastpath.ts (transpiled on load by the project's typescript) and
// answers one JSON request a line; python3 peers in lanhost and wanhost hold
// the connection's two ends (one command a line) and sniff the TTL of what
// arrives, two more the UDP flow's ends (and sniff its checksums);
// hand-built TCP segments and UDP datagrams go out of an AF_PACKET socket.
//
// ESP (a bound SA pair: SPI_OUT from the LAN host to the server, SPI_IN
// from the server to the router's WAN address) has no kernel NAT either:
// hand-built ESP packets go out of lanhost's and wanhost's AF_PACKET
// sockets, and the same peers capture what arrives, IP header and all. An
// attacker's packet that the program must pass up is followed by one of the
// SA's own each way: once those arrived (and a moment more), nothing else
// may have. PPTP's data channel (enhanced GRE, a call: the LAN host's
// packets carry the server's Call ID, the server's the Call ID the engine
// gave the call outside, which becomes the LAN host's own) is tested the
// same way, with its own peers.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { release, tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { inCI, skipUnless } from '../helpers/prereq.js';
import { sleep } from '../helpers/shell.js';
import { fastPathEspKey, fastPathGreKey, fastPathKey, fastPathValue, parseFastPathKey, parseFastPathValue } from '../../src/tun/fastpath.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const ADDON = path.join(ROOT, 'build', 'Release', 'vpnmasq_tun.node');
const ID = `vmfp${process.pid % 100000}`;
const NS = { lan: `${ID}-lan`, rtr: `${ID}-rtr`, wan: `${ID}-wan` };
const LAN_HOST = '10.230.1.2';
const LAN_GW = '10.230.1.1';
const WAN_ADDR = '10.230.2.1';
const SERVER = '10.230.2.2';
const LAN_PORT = 40000;
const NAT_PORT = 61000;
const SERVER_PORT = 5001;
const LAN_UPORT = 40001;
const NAT_UPORT = 61001;
const SERVER_UPORT = 5002;
const ECHO_ID = 0x1234;
const NAT_ID = 0xcafe;
// A bound IPsec SA pair (no NAT-T): the LAN host's SPI toward the server,
// the server's toward the router's WAN address (the high bit set in one).
const SPI_OUT = 0xc0de0001;
const SPI_IN = 0x5e4a0002;
// A PPTP call (RFC 2637): each end's Call ID, and the one the engine gave
// the call on the WAN side in place of the LAN host's.
const LAN_CALL = 0x0a11;
const SERVER_CALL = 0xc5e1;
const NAT_CALL = 0x7fe2;
const PPP = 0x880b; // GRE's protocol type for PPP
// GRE's first 16 bits: K, S, A and version 1 as PPTP sends them.
const GRE_K = 0x2000, GRE_S = 0x1000, GRE_A = 0x0080, GRE_V1 = 0x0001;
const OTHER_LAN_HOST = '10.230.1.3';
const SPOOFED = '10.230.2.99';
// Each end's own TTL, so that what arrives says how many hops took one off.
const LAN_TTL = 77;
const SERVER_TTL = 55;
const MB = 1 << 20;

// tcx came with Linux 6.6: before it the fast path cannot attach (fastPathOpen throws "needs tcx").
function tcxMissing(): boolean {
  const [major, minor] = release().split('.').map(Number) as [number, number];
  if (major > 6 || (major === 6 && minor >= 6)) return false;
  const why = `needs Linux 6.6+ for tcx, this is ${release()}`;
  if (inCI) throw new Error(`prerequisite missing under CI: ${why}`);
  console.warn(`skipping: ${why}`);
  return true;
}

// One end of the TCP connection: `server LADDR LPORT SRC SPORT` or `client
// LADDR LPORT RADDR RPORT`. SRC:SPORT (RADDR:RPORT) is whom its packets come
// from, for the TTL sniffer. Commands: send N SEED (N pseudo-random bytes;
// prints their sha256), recv N SECONDS (up to N bytes received, within the
// time; their count and sha256), avail, ttls (the TTLs seen since the last
// ttls), csumerrors (TcpInCsumErrors).
const PEER_PY = `
import collections, hashlib, json, random, socket, sys, threading, time

role, laddr, lport, raddr, rport = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], int(sys.argv[5])
lock = threading.Condition()
buf = bytearray()
ttls = collections.Counter()
raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)  # a copy of every TCP packet in

def sniff():
    while True:
        p = raw.recv(1 << 17)
        ihl = (p[0] & 15) * 4
        if socket.inet_ntoa(p[12:16]) == raddr and int.from_bytes(p[ihl:ihl + 2], 'big') == rport:
            with lock:
                ttls[p[8]] += 1
threading.Thread(target=sniff, daemon=True).start()

if role == 'server':
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((laddr, lport))
    ls.listen(1)
    print('listening', flush=True)
    s, _ = ls.accept()
else:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((laddr, lport))
    s.connect((raddr, rport))
print('connected', flush=True)

def reader():
    while True:
        d = s.recv(1 << 20)
        if not d:
            break
        with lock:
            buf.extend(d)
            lock.notify_all()
threading.Thread(target=reader, daemon=True).start()

def csum_errors():
    lines = [l.split() for l in open('/proc/net/snmp') if l.startswith('Tcp:')]
    return int(lines[1][lines[0].index('InCsumErrors')])

for line in sys.stdin:
    c = line.split()
    if c[0] == 'send':
        data = random.Random(int(c[2])).randbytes(int(c[1]))
        s.sendall(data)
        print('sent', len(data), hashlib.sha256(data).hexdigest(), flush=True)
    elif c[0] == 'recv':
        n, deadline = int(c[1]), time.monotonic() + float(c[2])
        with lock:
            while len(buf) < n and time.monotonic() < deadline:
                lock.wait(max(0.0, deadline - time.monotonic()))
            got = bytes(buf[:n])
            del buf[:n]
        print('recv', len(got), hashlib.sha256(got).hexdigest(), flush=True)
    elif c[0] == 'avail':
        with lock:
            print('avail', len(buf), flush=True)
    elif c[0] == 'ttls':
        with lock:
            print('ttls', json.dumps(ttls, separators=(',', ':')), flush=True)
            ttls.clear()
    elif c[0] == 'csumerrors':
        print('csumerrors', csum_errors(), flush=True)
`;

// A hand-built TCP segment or UDP datagram (100 zero bytes) in an Ethernet
// frame, out of an AF_PACKET socket: tcp|udp IFNAME DMAC SMAC SRC DST SPORT
// DPORT TTL, and for tcp SEQ ACK FLAGS.
const RAW_PY = `
import socket, struct, sys
proto, ifname, dmac, smac, src, dst = sys.argv[1:7]
sport, dport, ttl = (int(x, 0) for x in sys.argv[7:10])
def csum(b):
    s = sum(struct.unpack('!%dH' % (len(b) // 2), b))
    while s >> 16:
        s = (s & 0xffff) + (s >> 16)
    return ~s & 0xffff
S, D = socket.inet_aton(src), socket.inet_aton(dst)
if proto == 'tcp':
    seq, ack, flags = (int(x, 0) for x in sys.argv[10:13])
    l4 = struct.pack('!HHIIBBHHH', sport, dport, seq & 0xffffffff, ack & 0xffffffff, 5 << 4, flags, 65535, 0, 0)
    num, at = 6, 16
else:
    l4 = struct.pack('!HHHH', sport, dport, 8 + 100, 0) + bytes(100)
    num, at = 17, 6
l4 = l4[:at] + struct.pack('!H', csum(S + D + struct.pack('!BBH', 0, num, len(l4)) + l4) or 0xffff) + l4[at + 2:]
ip = struct.pack('!BBHHHBBH4s4s', 0x45, 0, 20 + len(l4), 0x1234, 0x4000, ttl, num, 0, S, D)
ip = ip[:10] + struct.pack('!H', csum(ip)) + ip[12:]
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((ifname, 0))
s.send(bytes.fromhex(dmac.replace(':', '')) + bytes.fromhex(smac.replace(':', '')) + b'\\x08\\x00' + ip + l4)
`;

// One end of the UDP flow: a socket bound to LADDR LPORT (the flow's fixed
// port), and a raw socket that sees every UDP datagram in before the
// kernel's checksum check, for the checksums as they arrived. Commands:
// send RADDR RPORT N SIZE SEED (N datagrams of SIZE pseudo-random bytes),
// gso RADDR RPORT N SIZE SEED (the same in one sendmsg with UDP_SEGMENT
// SIZE), raw RADDR RPORT SIZE SEED zero|mangled NADDR NPORT (one datagram
// hand-built on a raw socket: checksum 0; or a right checksum and the
// payload's last word chosen so that the checksum after the rewrite to
// NADDR:NPORT comes out 0), all printing how many and a digest of their
// contents (order aside); recv N SECONDS (up to N datagrams within the
// time: how many, their digest); checks N (the checksums the raw socket saw
// since the last checks, once it saw N).
const UDP_PY = `
import hashlib, json, random, socket, struct, sys, threading, time
laddr, lport = sys.argv[1], int(sys.argv[2])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((laddr, lport))
raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_UDP)
for sock in (s, raw):
    sock.setsockopt(socket.SOL_SOCKET, 33, 1 << 23)  # SO_RCVBUFFORCE (root; past rmem_max): a busy machine drops none
lock = threading.Condition()
got, checks = [], []

def sniff():
    while True:
        p = raw.recv(1 << 17)
        ihl = (p[0] & 15) * 4
        if int.from_bytes(p[ihl + 2:ihl + 4], 'big') == lport:
            with lock:
                checks.append(int.from_bytes(p[ihl + 6:ihl + 8], 'big'))
                lock.notify_all()

def reader():
    while True:
        d = s.recv(1 << 16)
        with lock:
            got.append(hashlib.sha256(d).hexdigest())
            lock.notify_all()
threading.Thread(target=sniff, daemon=True).start()
threading.Thread(target=reader, daemon=True).start()

def digest(hashes):
    return hashlib.sha256(''.join(sorted(hashes)).encode()).hexdigest()

def datagrams(n, size, seed):
    r = random.Random(seed)
    return [r.randbytes(size) for _ in range(n)]

def sent(ds):
    print('sent', len(ds), digest(hashlib.sha256(d).hexdigest() for d in ds), flush=True)

def onesum(b):
    s = sum(struct.unpack('!%dH' % (len(b) // 2), b))
    while s >> 16:
        s = (s & 0xffff) + (s >> 16)
    return s

def header(sport, dport, payload, check):
    return struct.pack('!HHHH', sport, dport, 8 + len(payload), check)

def pseudo(src, dst, payload):
    return socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack('!BBH', 0, 17, 8 + len(payload))

def wait(cond, seconds):
    deadline = time.monotonic() + seconds
    while not cond() and time.monotonic() < deadline:
        lock.wait(max(0.0, deadline - time.monotonic()))

print('ready', flush=True)
for line in sys.stdin:
    c = line.split()
    if c[0] in ('send', 'gso'):
        raddr, rport, n, size, seed = c[1], int(c[2]), int(c[3]), int(c[4]), int(c[5])
        ds = datagrams(n, size, seed)
        if c[0] == 'send':
            for d in ds:
                s.sendto(d, (raddr, rport))
        else:
            s.sendmsg([b''.join(ds)], [(socket.SOL_UDP, 103, struct.pack('=H', size))], 0, (raddr, rport))  # UDP_SEGMENT
        sent(ds)
    elif c[0] == 'raw':
        raddr, rport, size, seed, mode = c[1], int(c[2]), int(c[3]), int(c[4]), c[5]
        payload = datagrams(1, size, seed)[0]
        if mode == 'zero':
            check = 0
        else:
            naddr, nport = c[6], int(c[7])
            payload = payload[:-2] + b'\\0\\0'
            rest = onesum(pseudo(naddr, raddr, payload) + header(nport, rport, payload, 0) + payload)
            payload = payload[:-2] + struct.pack('!H', 0xffff - rest)  # the rewritten datagram's sum: 0xffff, its checksum 0
            check = ~onesum(pseudo(laddr, raddr, payload) + header(lport, rport, payload, 0) + payload) & 0xffff or 0xffff
        r = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_UDP)
        r.sendto(header(lport, rport, payload, check) + payload, (raddr, 0))
        sent([payload])
    elif c[0] == 'recv':
        n = int(c[1])
        with lock:
            wait(lambda: len(got) >= n, float(c[2]))
            took = got[:n]
            del got[:n]
        print('recv', len(took), digest(took), flush=True)
    elif c[0] == 'checks':
        n = int(c[1])
        with lock:
            wait(lambda: len(checks) >= n, 5)
            print('checks', json.dumps(checks, separators=(',', ':')), flush=True)
            checks.clear()
`;

// Transmit checksum offload off (SIOCETHTOOL's ETHTOOL_STXCSUM; no ethtool
// on the CI machines), which takes TSO with it: the kernel then cuts a GSO
// packet into segments and sums each itself. Prints each device's setting after.
const TXCSUM_OFF_PY = `
import ctypes, fcntl, socket, struct, sys
def ethtool(ifname, cmd, data=0):
    ev = ctypes.create_string_buffer(struct.pack('II', cmd, data))
    fcntl.ioctl(socket.socket(), 0x8946, struct.pack('16sP', ifname.encode(), ctypes.addressof(ev)).ljust(40, b'\\0'))
    return struct.unpack('II', ev.raw[:8])[1]
for name in sys.argv[1:]:
    ethtool(name, 0x17, 0)  # ETHTOOL_STXCSUM
    print(name, ethtool(name, 0x16))  # ETHTOOL_GTXCSUM
`;

// One end of the ESP exchanges or of a PPTP call's data channel, on IFNAME,
// for IP protocol PROTO (50: ESP, 47: GRE): hand-built packets go out of an
// AF_PACKET socket to DMAC, and an AF_PACKET socket keeps every packet of
// PROTO that arrives, as it arrived (IP header and all, before any check of
// the kernel's). A raw socket of PROTO takes them too, so that the kernel,
// which has no SA or tunnel for them, answers none with an ICMP error.
// Commands:
//   ESP: send DMAC SRC DST SPI SEQ N SIZE TTL MODE: N packets of an SPI, a
//        sequence number counting up from SEQ and SIZE pseudo-random bytes
//        standing for the ciphertext and its ICV (no SA anywhere: the
//        program never looks inside); the IP ID is the sequence number.
//   GRE: send DMAC SRC DST FLAGS PTYPE CALLID ID N SIZE TTL MODE: N packets,
//        GRE's first 16 bits FLAGS, protocol type PTYPE, payload length SIZE,
//        the Call ID; a sequence number if FLAGS has S, an ack number if it
//        has A, whatever the version; then SIZE pseudo-random bytes standing
//        for PPP. The IP ID counts up from ID, and so do the sequence and
//        ack numbers, so that each packet is known by its IP ID.
//   MODE: plain; short: the IP length leaves 7 bytes of the header, the
//   frame carries them all; mf: a first fragment, MF set; last: a last
//   fragment, offset 1480 bytes. Prints the IP packets sent as JSON hex.
//   got N SECONDS: waits until N packets arrived or SECONDS passed, prints
//   them (JSON hex) and forgets them.
const IPPROTO_PY = `
import json, random, socket, struct, sys, threading, time
ifname, proto = sys.argv[1], int(sys.argv[2])
smac = bytes.fromhex(open('/sys/class/net/%s/address' % ifname).read().strip().replace(':', ''))
cap = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0800))
cap.bind((ifname, 0))
cap.setsockopt(socket.SOL_SOCKET, 33, 1 << 22)  # SO_RCVBUFFORCE
sink = socket.socket(socket.AF_INET, socket.SOCK_RAW, proto)
out = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
out.bind((ifname, 0))
lock = threading.Condition()
got = []

def capture():
    while True:
        f, addr = cap.recvfrom(1 << 16)
        if addr[2] == socket.PACKET_OUTGOING or len(f) < 14 + 20 or f[14 + 9] != proto:
            continue
        ip = f[14:]
        with lock:
            got.append(ip[:int.from_bytes(ip[2:4], 'big')].hex())  # without the frame's padding
            lock.notify_all()

def drain():
    while True:
        sink.recv(1 << 16)
threading.Thread(target=capture, daemon=True).start()
threading.Thread(target=drain, daemon=True).start()

def csum(b):
    s = sum(struct.unpack('!%dH' % (len(b) // 2), b))
    while s >> 16:
        s = (s & 0xffff) + (s >> 16)
    return ~s & 0xffff

def esp(c):
    spi, seq, n, size, ttl, mode = int(c[4], 0), int(c[5]), int(c[6]), int(c[7]), int(c[8]), c[9]
    return [(seq + i, struct.pack('!II', spi, seq + i) + random.Random(seq + i).randbytes(size)) for i in range(n)], ttl, mode

def gre(c):
    flags, ptype, callid, first, n, size, ttl = (int(x, 0) for x in c[4:11])
    bodies = []
    for i in range(n):
        g = struct.pack('!HHHH', flags, ptype, size, callid)
        if flags & 0x1000:
            g += struct.pack('!I', 0x10000000 + first + i)
        if flags & 0x0080:
            g += struct.pack('!I', 0x20000000 + first + i)
        bodies.append((first + i, g + random.Random(first + i).randbytes(size)))
    return bodies, ttl, c[11]

print('ready', flush=True)
for line in sys.stdin:
    c = line.split()
    if c[0] == 'send':
        dmac, src, dst = bytes.fromhex(c[1].replace(':', '')), socket.inet_aton(c[2]), socket.inet_aton(c[3])
        bodies, ttl, mode = (esp if proto == 50 else gre)(c)
        sent = []
        for ipid, body in bodies:
            length = 20 + (7 if mode == 'short' else len(body))
            frag = {'plain': 0x4000, 'short': 0x4000, 'mf': 0x2000, 'last': 1480 // 8}[mode]
            ip = struct.pack('!BBHHHBBH4s4s', 0x45, 0, length, ipid & 0xffff, frag, ttl, proto, 0, src, dst)
            ip = ip[:10] + struct.pack('!H', csum(ip)) + ip[12:]
            out.send(dmac + smac + b'\\x08\\x00' + ip + body)
            sent.append((ip + body).hex())
        print('sent', json.dumps(sent, separators=(',', ':')), flush=True)
    elif c[0] == 'got':
        n, deadline = int(c[1]), time.monotonic() + float(c[2])
        with lock:
            while len(got) < n and time.monotonic() < deadline:
                lock.wait(max(0.0, deadline - time.monotonic()))
            print('got', json.dumps(got, separators=(',', ':')), flush=True)
            got.clear()
`;

// The router's child: opens the fast path through src/tun/fastpath.ts, one
// JSON request a line ({id, op, args}), one answer a line. It prints its
// ready line and then only waits: its links live as long as it does.
const ROUTER_MJS = `
import { createInterface } from 'node:readline';
import { readdirSync, readlinkSync, readFileSync } from 'node:fs';
import { FastPath, fastPathCounts, fastPathKey, fastPathValue, parseFastPathKey, parseFastPathValue } from ${JSON.stringify(
  pathToFileURL(path.join(ROOT, 'src', 'tun', 'fastpath.ts')).href,
)};
const out = (o) => process.stdout.write(JSON.stringify(o) + '\\n');
const bpfFds = () => readdirSync('/proc/self/fd').filter((fd) => {
  try { return readlinkSync('/proc/self/fd/' + fd).startsWith('anon_inode:bpf'); } catch { return false; }
}).length;
const err = (e) => ({ message: e.message, code: e.code });
let fp = null;
const ops = {
  open: (lan, wan, max) => { fp = FastPath.open(lan, wan, max); return fp.handle; },
  put: (k, v) => fp.put(fastPathKey(k), fastPathValue(v)),
  get: (k) => { const b = Buffer.alloc(48); return fp.get(fastPathKey(k), b) ? parseFastPathValue(b) : null; },
  remove: (k) => fp.remove(fastPathKey(k)),
  stats: () => fp.stats(),
  fdinfo: (fd) => readFileSync('/proc/self/fdinfo/' + fd, 'utf8'),
  close: () => fp.close(),
  // The API on a table of 2 (attached to the same devices, beside nothing).
  api: (lan, wan) => {
    const r = {};
    const before = bpfFds();
    try { FastPath.open('vmfp-none0', wan, 4); } catch (e) { r.noLan = err(e); }
    try { FastPath.open(lan, 'vmfp-none1', 4); } catch (e) { r.noWan = err(e); }
    try { FastPath.open(lan, wan, 0); } catch (e) { r.zero = err(e); }
    try { FastPath.open('lo', wan, 4); } catch (e) { r.notEther = err(e); }
    // The second attach fails (the program is on lan already): the first link goes too.
    try { FastPath.open(lan, lan, 4); } catch (e) { r.twice = err(e); }
    r.leftAfterFailures = bpfFds() - before;
    const t = FastPath.open(lan, wan, 2);
    r.opened = bpfFds() - before;
    r.linkInfo = readFileSync('/proc/self/fdinfo/' + t.handle.links[0], 'utf8');
    const key = (i) => fastPathKey({ saddr: '192.0.2.' + i, daddr: '198.51.100.7', sport: 1000 + i, dport: 443 });
    const value = fastPathValue({ newSaddr: '203.0.113.1', newDaddr: '198.51.100.7', newSport: 2000, newDport: 443,
      inIfindex: 11, outIfindex: 12, win: 65535, end: 0xfffffff0, endKnown: true });
    t.put(key(1), value);
    t.put(key(2), value);
    try { t.put(key(3), value); } catch (e) { r.full = err(e); }
    t.put(key(2), value);  // replacing one in a full table
    try { t.put(key(1), Buffer.alloc(47)); } catch (e) { r.short = err(e); }
    r.keys = t.keys(8).map(parseFastPathKey).sort((a, b) => a.sport - b.sport);
    r.keysOne = t.keys(1).length;
    const b = Buffer.alloc(48);
    r.got = t.get(key(1), b) ? parseFastPathValue(b) : null;
    r.getMissing = t.get(key(3), b);
    r.removed = [t.remove(key(1)), t.remove(key(1))];
    r.stats = t.stats();
    t.close();
    t.close();
    r.handleAfterClose = t.handle;
    r.leftAfterClose = bpfFds() - before;
    return r;
  },
  // Batch walks of a table of n entries (entry i: packets i, bytes 1000 i,
  // end i): with room for \`room\` entries a call; the second deletes the
  // entries with odd i once its first batch is read.
  walk: (lan, wan, n, room) => {
    const t = FastPath.open(lan, wan, n);
    const key = (i) => fastPathKey({ saddr: '10.' + (i >> 8) + '.' + (i & 255) + '.1', daddr: '198.51.100.7', sport: 1000 + i, dport: 443, proto: 17 });
    try {
      for (let i = 0; i < n; i++) {
        t.put(key(i), fastPathValue({ newSaddr: '203.0.113.1', newDaddr: '198.51.100.7', newSport: 2000, newDport: 443,
          inIfindex: 11, outIfindex: 12, win: 0, end: i, endKnown: i % 2 === 0, packets: i, bytes: 1000 * i + 2 ** 40 }));
      }
      const token = Buffer.alloc(8), keys = Buffer.alloc(16 * room), values = Buffer.alloc(48 * room);
      const c = { packets: 0, bytes: 0, end: 0, endKnown: false };
      const walk = (afterFirst) => {
        const met = [];
        let calls = 0, maxCount = 0;
        for (let first = true; ;) {
          const b = t.readBatch(token, first, keys, values);
          calls++;
          maxCount = Math.max(maxCount, b.count);
          for (let j = 0; j < b.count; j++) {
            const i = parseFastPathKey(keys.subarray(16 * j, 16 * j + 16)).sport - 1000;
            fastPathCounts(values, 48 * j, c);
            met.push({ i, ok: c.packets === i && c.bytes === 1000 * i + 2 ** 40 && c.end === i && c.endKnown === (i % 2 === 0) });
          }
          if (first && afterFirst) afterFirst(met);
          first = false;
          if (b.done) break;
        }
        return { calls, maxCount, met: met.map((m) => m.i), allRight: met.every((m) => m.ok) };
      };
      const whole = walk(null);
      let deleted = [];
      const cut = walk((met) => {
        const seen = new Set(met.map((m) => m.i));
        for (let i = 1; i < n; i += 2) if (!seen.has(i)) { t.remove(key(i)); deleted.push(i); }
      });
      const errors = {};
      try { t.readBatch(Buffer.alloc(4), true, keys, values); } catch (e) { errors.token = err(e); }
      try { t.readBatch(token, true, Buffer.alloc(8), values); } catch (e) { errors.room = err(e); }
      return { whole, cut, deleted, errors };
    } finally { t.close(); }
  },
};
createInterface({ input: process.stdin }).on('line', (line) => {
  const { op, args } = JSON.parse(line);
  try { const result = ops[op](...args); out({ ok: true, result: result ?? null }); }
  catch (e) { out({ ok: false, ...err(e) }); }
});
out({ ready: true, pid: process.pid });
`;

// Loader hooks for the router's child: .ts through typescript.transpileModule,
// and a relative './x.js' that is ./x.ts in the source tree.
const HOOKS_MJS = `
import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
const ts = createRequire(${JSON.stringify(path.join(ROOT, 'package.json'))})('typescript');
export async function resolve(spec, context, next) {
  try {
    return await next(spec, context);
  } catch (e) {
    if (spec.startsWith('.') && spec.endsWith('.js')) return next(spec.slice(0, -3) + '.ts', context);
    throw e;
  }
}
export async function load(url, context, next) {
  if (!url.startsWith('file:') || !url.endsWith('.ts')) return next(url, context);
  const source = ts.transpileModule(await readFile(new URL(url), 'utf8'), {
    fileName: url,
    compilerOptions: { module: ts.ModuleKind.ESNext, target: ts.ScriptTarget.ES2022, esModuleInterop: true },
  }).outputText;
  return { format: 'module', source, shortCircuit: true };
}
`;

let dir = '';
const procs: ChildProcess[] = [];

/** A child's stdout, a line at a time, in order. */
class Lines {
  private buf = '';
  private lines: string[] = [];
  private waiting: ((l: string) => void)[] = [];
  stderr = '';
  readonly exited: Promise<void>;

  constructor(readonly proc: ChildProcess, private readonly what: string) {
    procs.push(proc);
    proc.stderr!.on('data', (d) => (this.stderr += d));
    proc.stdout!.setEncoding('utf8');
    proc.stdout!.on('data', (d: string) => {
      this.buf += d;
      let nl: number;
      while ((nl = this.buf.indexOf('\n')) >= 0) {
        const l = this.buf.slice(0, nl);
        this.buf = this.buf.slice(nl + 1);
        const w = this.waiting.shift();
        if (w) w(l);
        else this.lines.push(l);
      }
    });
    this.exited = new Promise((r) => proc.on('exit', () => r()));
  }

  next(ms = 10_000): Promise<string> {
    const l = this.lines.shift();
    if (l !== undefined) return Promise.resolve(l);
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => {
        this.waiting.splice(this.waiting.indexOf(w), 1);
        reject(new Error(`${this.what}: no line within ${ms} ms; stderr: ${this.stderr}`));
      }, ms);
      const w = (line: string) => { clearTimeout(t); resolve(line); };
      this.waiting.push(w);
      void this.exited.then(() => setTimeout(() => {
        if (this.waiting.includes(w)) { clearTimeout(t); this.waiting.splice(this.waiting.indexOf(w), 1); reject(new Error(`${this.what} exited: ${this.stderr}`)); }
      }, 50));
    });
  }

  /** Sends a command line; its answer's words. */
  async cmd(line: string, ms = 20_000): Promise<string[]> {
    this.proc.stdin!.write(line + '\n');
    return (await this.next(ms)).split(' ');
  }

  kill(): void {
    if (this.proc.exitCode === null && this.proc.signalCode === null) this.proc.kill('SIGKILL');
  }
}

class Router extends Lines {
  pid = 0;
  static async start(): Promise<Router> {
    const register = `data:text/javascript,import{register}from"node:module";register(${JSON.stringify(
      pathToFileURL(path.join(dir, 'hooks.mjs')).href,
    )});`;
    const r = new Router(spawn('ip', ['netns', 'exec', NS.rtr, process.execPath, '--import', register, path.join(dir, 'router.mjs')],
      { stdio: ['pipe', 'pipe', 'pipe'] }), 'router child');
    r.pid = JSON.parse(await r.next(15_000)).pid;
    return r;
  }
  async call(op: string, ...args: unknown[]): Promise<any> {
    this.proc.stdin!.write(JSON.stringify({ op, args }) + '\n');
    const m = JSON.parse(await this.next(10_000));
    if (!m.ok) throw Object.assign(new Error(m.message), { code: m.code });
    return m.result;
  }
}

function inNs(ns: string, cmd: string[], input?: string): string {
  return execFileSync('ip', ['netns', 'exec', ns, ...cmd], { encoding: 'utf8', input, stdio: ['pipe', 'pipe', 'pipe'] });
}

function link(ns: string, dev: string): { ifindex: number; address: string } {
  return JSON.parse(execFileSync('ip', ['-n', ns, '-j', 'link', 'show', 'dev', dev], { encoding: 'utf8' }))[0];
}

/** From wanhost: one hand-built TCP segment, as if it came from SRC:SPORT. */
function segment(src: string, sport: number, dst: string, dport: number, seq: number, flags: number, ttl = 64): void {
  inNs(NS.wan, ['python3', path.join(dir, 'raw.py'), 'tcp', 'eth0', link(NS.rtr, 'wan0').address, link(NS.wan, 'eth0').address,
    src, dst, String(sport), String(dport), String(ttl), String(seq >>> 0), '0', String(flags)]);
}

/** From wanhost: one hand-built UDP datagram, as if it came from SRC:SPORT. */
function datagram(src: string, sport: number, dst: string, dport: number): void {
  inNs(NS.wan, ['python3', path.join(dir, 'raw.py'), 'udp', 'eth0', link(NS.rtr, 'wan0').address, link(NS.wan, 'eth0').address,
    src, dst, String(sport), String(dport), '64']);
}

function addrAt(b: Buffer, off: number): string {
  return `${b[off]}.${b[off + 1]}.${b[off + 2]}.${b[off + 3]}`;
}

/** The ones' complement sum of 16-bit words, folded (0xffff over a header with a right checksum). */
function onesum(b: Buffer): number {
  let s = 0;
  for (let i = 0; i + 1 < b.length; i += 2) s += b.readUInt16BE(i);
  while (s >> 16) s = (s & 0xffff) + (s >> 16);
  return s;
}

/** A counter of the namespace's /proc/net/snmp: snmp(ns, 'Udp', 'InCsumErrors'). */
function snmp(ns: string, proto: string, field: string): number {
  const lines = inNs(ns, ['cat', '/proc/net/snmp']).split('\n').filter((l) => l.startsWith(`${proto}:`)).map((l) => l.split(/\s+/));
  return Number(lines[1]![lines[0]!.indexOf(field)]);
}

const FIN = 0x01, RST = 0x04, ACK = 0x10;
const STAT = { forwarded: 0, outOfWindow: 1, passedClose: 2, passedOther: 3, rewriteFailed: 4 };

describe.skipIf(skipUnless({ root: true, tools: ['ip', 'nft', 'python3', 'ping'] }) || tcxMissing())('flow fast path: eBPF on tcx ingress forwards an established TCP flow, a UDP flow, an ICMP echo exchange, an IPsec SA\'s ESP, a PPTP call\'s GRE (netns)', () => {
  let router: Router;
  let server: Lines;
  let client: Lines;
  let lanIdx = 0;
  let wanIdx = 0;
  let handle: { flowsFd: number; statsFd: number; progFd: number; links: number[] };
  const outKey = { saddr: LAN_HOST, daddr: SERVER, sport: LAN_PORT, dport: SERVER_PORT };
  const inKey = { saddr: SERVER, daddr: WAN_ADDR, sport: SERVER_PORT, dport: NAT_PORT };
  const entries = () => ({
    out: { newSaddr: WAN_ADDR, newDaddr: SERVER, newSport: NAT_PORT, newDport: SERVER_PORT, inIfindex: lanIdx, outIfindex: wanIdx, win: 1 << 20 },
    in: { newSaddr: SERVER, newDaddr: LAN_HOST, newSport: SERVER_PORT, newDport: LAN_PORT, inIfindex: wanIdx, outIfindex: lanIdx, win: 1 << 20 },
  });
  const udpOutKey = { saddr: LAN_HOST, daddr: SERVER, sport: LAN_UPORT, dport: SERVER_UPORT, proto: 17 };
  const udpInKey = { saddr: SERVER, daddr: WAN_ADDR, sport: SERVER_UPORT, dport: NAT_UPORT, proto: 17 };
  const udpEntries = () => ({
    out: { newSaddr: WAN_ADDR, newDaddr: SERVER, newSport: NAT_UPORT, newDport: SERVER_UPORT, inIfindex: lanIdx, outIfindex: wanIdx, win: 0 },
    in: { newSaddr: SERVER, newDaddr: LAN_HOST, newSport: SERVER_UPORT, newDport: LAN_UPORT, inIfindex: wanIdx, outIfindex: lanIdx, win: 0 },
  });
  let lanUdp: Lines;
  let wanUdp: Lines;
  const espKey = (saddr: string, daddr: string, spi: number) => parseFastPathKey(fastPathEspKey(saddr, daddr, spi));
  const espOutKey = espKey(LAN_HOST, SERVER, SPI_OUT);
  const espInKey = espKey(SERVER, WAN_ADDR, SPI_IN);
  // The SPI is never rewritten: the value's ports are the key's.
  const espEntries = () => ({
    out: { newSaddr: WAN_ADDR, newDaddr: SERVER, newSport: SPI_OUT >>> 16, newDport: SPI_OUT & 0xffff, inIfindex: lanIdx, outIfindex: wanIdx, win: 0 },
    in: { newSaddr: SERVER, newDaddr: LAN_HOST, newSport: SPI_IN >>> 16, newDport: SPI_IN & 0xffff, inIfindex: wanIdx, outIfindex: lanIdx, win: 0 },
  });
  let lanEsp: Lines;
  let wanEsp: Lines;
  /**
   * ESP packets out of lanhost's eth0 to the router's lan0, or of wanhost's
   * to wan0 (any source address: the frames are hand-built); the IP packets
   * sent, SEQ counting up from seq.
   */
  async function esp(from: 'lan' | 'wan', src: string, dst: string, spi: number, seq: number, n: number, size: number, mode = 'plain'): Promise<Buffer[]> {
    const [peer, mac, ttl] = from === 'lan' ? [lanEsp, link(NS.rtr, 'lan0').address, LAN_TTL] : [wanEsp, link(NS.rtr, 'wan0').address, SERVER_TTL];
    const r = await peer.cmd(`send ${mac} ${src} ${dst} ${spi} ${seq} ${n} ${size} ${ttl} ${mode}`);
    expect(r[0]).toBe('sent');
    return (JSON.parse(r[1]!) as string[]).map((h) => Buffer.from(h, 'hex'));
  }
  /** The ESP packets that arrived at the peer since the last call, once there are n (or seconds passed). */
  async function arrived(peer: Lines, n: number, seconds: number): Promise<Buffer[]> {
    const r = await peer.cmd(`got ${n} ${seconds}`);
    expect(r[0]).toBe('got');
    return (JSON.parse(r[1]!) as string[]).map((h) => Buffer.from(h, 'hex'));
  }
  const espSeq = (ip: Buffer) => ip.readUInt32BE(24);
  /**
   * Each packet sent arrived once, rewritten as the program rewrites ESP:
   * the addresses, TTL - 1 and a valid header checksum; the rest of the IP
   * header and every ESP byte (SPI, sequence number, payload) as sent.
   */
  function expectRewritten(sent: Buffer[], got: Buffer[], saddr: string, daddr: string): void {
    expect(got.map(espSeq).sort((a, b) => a - b)).toEqual(sent.map(espSeq).sort((a, b) => a - b));
    const bySeq = new Map(got.map((g) => [espSeq(g), g]));
    for (const s of sent) {
      const g = bySeq.get(espSeq(s))!;
      expect(g.length).toBe(s.length);
      expect(g.subarray(20).toString('hex')).toBe(s.subarray(20).toString('hex'));
      expect(g.subarray(0, 8).toString('hex')).toBe(s.subarray(0, 8).toString('hex')); // version, length, id, fragment bits
      expect([g[8], g[9]]).toEqual([s[8]! - 1, 50]);
      expect([addrAt(g, 12), addrAt(g, 16)]).toEqual([saddr, daddr]);
      expect(onesum(g.subarray(0, 20))).toBe(0xffff); // the header's checksum holds
    }
  }
  /**
   * After an attacker's packets: one of the SA's own packets each way (seq),
   * which the program carries. Once both arrived, and a moment more for
   * anything that came out of order, what arrived is exactly those two: the
   * attacker's went up, and the kernel's forward drop took them.
   */
  async function onlyOwnArrive(seq: number): Promise<void> {
    const up = await esp('lan', LAN_HOST, SERVER, SPI_OUT, seq, 1, 64);
    const down = await esp('wan', SERVER, WAN_ADDR, SPI_IN, seq, 1, 64);
    const atWan = await arrived(wanEsp, 1, 10);
    const atLan = await arrived(lanEsp, 1, 10);
    await sleep(300);
    atWan.push(...(await arrived(wanEsp, 0, 0)));
    atLan.push(...(await arrived(lanEsp, 0, 0)));
    expectRewritten(up, atWan, WAN_ADDR, SERVER);
    expectRewritten(down, atLan, SERVER, LAN_HOST);
  }
  const greKey = (saddr: string, daddr: string, callId: number) => parseFastPathKey(fastPathGreKey(saddr, daddr, callId));
  const greOutKey = greKey(LAN_HOST, SERVER, SERVER_CALL);
  const greInKey = greKey(SERVER, WAN_ADDR, NAT_CALL);
  // Outbound the Call ID stays the server's (newDport the key's); inbound
  // the engine's becomes the LAN host's own. newSport is unread: 0.
  const greEntries = () => ({
    out: { newSaddr: WAN_ADDR, newDaddr: SERVER, newSport: 0, newDport: SERVER_CALL, inIfindex: lanIdx, outIfindex: wanIdx, win: 0 },
    in: { newSaddr: SERVER, newDaddr: LAN_HOST, newSport: 0, newDport: LAN_CALL, inIfindex: wanIdx, outIfindex: lanIdx, win: 0 },
  });
  let lanGre: Lines;
  let wanGre: Lines;
  /**
   * GRE packets out of lanhost's eth0 to the router's lan0, or of wanhost's
   * to wan0; the IP packets sent, their IP IDs counting up from id.
   */
  async function gre(from: 'lan' | 'wan', src: string, dst: string, callId: number, id: number, n: number, size: number,
    o: { flags?: number; ptype?: number; mode?: string } = {}): Promise<Buffer[]> {
    const [peer, mac, ttl] = from === 'lan' ? [lanGre, link(NS.rtr, 'lan0').address, LAN_TTL] : [wanGre, link(NS.rtr, 'wan0').address, SERVER_TTL];
    const flags = o.flags ?? (GRE_K | GRE_S | GRE_A | GRE_V1);
    const r = await peer.cmd(`send ${mac} ${src} ${dst} ${flags} ${o.ptype ?? PPP} ${callId} ${id} ${n} ${size} ${ttl} ${o.mode ?? 'plain'}`);
    expect(r[0]).toBe('sent');
    return (JSON.parse(r[1]!) as string[]).map((h) => Buffer.from(h, 'hex'));
  }
  const ipId = (ip: Buffer) => ip.readUInt16BE(4);
  /**
   * Each packet sent arrived once, rewritten as the program rewrites GRE:
   * the addresses, TTL - 1 and a valid header checksum, the Call ID
   * callId; the rest of the IP header and every other GRE byte (flags and
   * version, protocol type, payload length, sequence and ack numbers, the
   * PPP payload) as sent.
   */
  function expectGre(sent: Buffer[], got: Buffer[], saddr: string, daddr: string, callId: number): void {
    expect(got.map(ipId).sort((a, b) => a - b)).toEqual(sent.map(ipId).sort((a, b) => a - b));
    const byId = new Map(got.map((g) => [ipId(g), g]));
    for (const s of sent) {
      const g = byId.get(ipId(s))!;
      expect(g.length).toBe(s.length);
      expect(g.subarray(0, 8).toString('hex')).toBe(s.subarray(0, 8).toString('hex')); // version, length, id, fragment bits
      expect([g[8], g[9]]).toEqual([s[8]! - 1, 47]);
      expect([addrAt(g, 12), addrAt(g, 16)]).toEqual([saddr, daddr]);
      expect(onesum(g.subarray(0, 20))).toBe(0xffff); // the header's checksum holds
      expect(g.subarray(20, 26).toString('hex')).toBe(s.subarray(20, 26).toString('hex')); // flags, version, protocol, length
      expect(g.readUInt16BE(26)).toBe(callId);
      expect(g.subarray(28).toString('hex')).toBe(s.subarray(28).toString('hex')); // sequence, ack, PPP
    }
  }
  /**
   * After an attacker's GRE packets: one of the call's own each way (IP ID
   * id), which the program carries. Once both arrived, and a moment more,
   * what arrived is exactly those two.
   */
  async function greOnlyOwnArrive(id: number): Promise<void> {
    const up = await gre('lan', LAN_HOST, SERVER, SERVER_CALL, id, 1, 64);
    const down = await gre('wan', SERVER, WAN_ADDR, NAT_CALL, id, 1, 64);
    const atWan = await arrived(wanGre, 1, 10);
    const atLan = await arrived(lanGre, 1, 10);
    await sleep(300);
    atWan.push(...(await arrived(wanGre, 0, 0)));
    atLan.push(...(await arrived(lanGre, 0, 0)));
    expectGre(up, atWan, WAN_ADDR, SERVER, SERVER_CALL);
    expectGre(down, atLan, SERVER, LAN_HOST, LAN_CALL);
  }
  async function install(r: Router): Promise<void> {
    await r.call('put', outKey, entries().out);
    await r.call('put', inKey, entries().in);
  }
  /** `bytes` from one end to the other, whole: the sender's and the receiver's sha256. */
  async function transfer(from: Lines, to: Lines, bytes: number, seed: number): Promise<void> {
    const sent = await from.cmd(`send ${bytes} ${seed}`);
    const got = await to.cmd(`recv ${bytes} 15`);
    expect(got).toEqual(['recv', String(bytes), sent[2]]);
  }

  beforeAll(async () => {
    if (!existsSync(ADDON)) throw new Error(`${ADDON} is missing: run \`npm run build:addon\` first`);
    dir = mkdtempSync(path.join(tmpdir(), 'vpnmasq-fastpath-'));
    writeFileSync(path.join(dir, 'peer.py'), PEER_PY);
    writeFileSync(path.join(dir, 'raw.py'), RAW_PY);
    writeFileSync(path.join(dir, 'udp.py'), UDP_PY);
    writeFileSync(path.join(dir, 'txcsum.py'), TXCSUM_OFF_PY);
    writeFileSync(path.join(dir, 'ipproto.py'), IPPROTO_PY);
    writeFileSync(path.join(dir, 'router.mjs'), ROUTER_MJS);
    writeFileSync(path.join(dir, 'hooks.mjs'), HOOKS_MJS);
    for (const ns of Object.values(NS)) {
      execFileSync('ip', ['netns', 'add', ns]);
      execFileSync('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
    }
    const ip = (ns: string, ...a: string[]) => execFileSync('ip', ['-n', ns, ...a]);
    ip(NS.rtr, 'link', 'add', 'lan0', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', NS.lan);
    ip(NS.rtr, 'link', 'add', 'wan0', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', NS.wan);
    ip(NS.rtr, 'addr', 'add', `${LAN_GW}/24`, 'dev', 'lan0');
    ip(NS.rtr, 'addr', 'add', `${WAN_ADDR}/24`, 'dev', 'wan0');
    ip(NS.lan, 'addr', 'add', `${LAN_HOST}/24`, 'dev', 'eth0');
    ip(NS.wan, 'addr', 'add', `${SERVER}/24`, 'dev', 'eth0');
    for (const [ns, dev] of [[NS.rtr, 'lan0'], [NS.rtr, 'wan0'], [NS.lan, 'eth0'], [NS.wan, 'eth0']] as const) ip(ns, 'link', 'set', dev, 'up');
    ip(NS.lan, 'route', 'add', 'default', 'via', LAN_GW);
    // wanhost has no route to the LAN: a packet reaches it only NATed.
    inNs(NS.rtr, ['sysctl', '-qw', 'net.ipv4.ip_forward=1']);
    inNs(NS.lan, ['sysctl', '-qw', `net.ipv4.ip_default_ttl=${LAN_TTL}`]);
    inNs(NS.wan, ['sysctl', '-qw', `net.ipv4.ip_default_ttl=${SERVER_TTL}`]);
    // The handshake's NAT, fixed; the fast path's entries say the same. The
    // input drop: a packet passed up that conntrack does not take back to
    // the LAN host (its state went stale while the fast path carried the
    // flow) must not reach the router's own TCP, which would reset the
    // server's end.
    inNs(NS.rtr, ['nft', '-f', '-'], `
      table ip ${ID} {
        chain fp_post {
          type nat hook postrouting priority srcnat; policy accept;
          ip saddr ${LAN_HOST} tcp sport ${LAN_PORT} oifname "wan0" snat to ${WAN_ADDR}:${NAT_PORT};
        }
        chain fp_fwd { type filter hook forward priority filter; policy accept; }
        chain fp_in {
          type filter hook input priority filter; policy accept;
          tcp dport ${NAT_PORT} drop;
        }
      }`);
    lanIdx = link(NS.rtr, 'lan0').ifindex;
    wanIdx = link(NS.rtr, 'wan0').ifindex;
    router = await Router.start();
  });

  afterAll(async () => {
    for (const p of procs) if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL');
    await sleep(100);
    for (const ns of Object.values(NS)) {
      try {
        execFileSync('ip', ['netns', 'del', ns], { stdio: 'ignore' });
      } catch {
        // never made
      }
    }
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('01 keys and values: network-order tuple, host-order numbers; UDP\'s, ICMP echo\'s, ESP\'s and GRE\'s keys, the echo reply flag', () => {
    const k = fastPathKey({ saddr: '10.1.2.3', daddr: '192.0.2.200', sport: 40000, dport: 443 });
    expect(k.toString('hex')).toBe('0a010203' + 'c00002c8' + '9c40' + '01bb' + '06000000');
    expect(parseFastPathKey(k)).toEqual({ saddr: '10.1.2.3', daddr: '192.0.2.200', sport: 40000, dport: 443, proto: 6 });
    expect(fastPathKey({ saddr: '10.1.2.3', daddr: '192.0.2.200', sport: 40000, dport: 53, proto: 17 }).subarray(8).toString('hex')).toBe('9c40' + '0035' + '11000000');
    const echo = fastPathKey({ saddr: '10.1.2.3', daddr: '192.0.2.200', sport: 0x1234, dport: 0, proto: 1 });
    expect(echo.subarray(8).toString('hex')).toBe('1234' + '0000' + '01000000');
    expect(parseFastPathKey(echo)).toMatchObject({ sport: 0x1234, dport: 0, proto: 1 });
    const esp = fastPathEspKey('10.1.2.3', '192.0.2.200', 0xc0de0001);
    expect(esp.subarray(8).toString('hex')).toBe('c0de0001' + '32000000'); // the SPI as in the packet
    expect(parseFastPathKey(esp)).toMatchObject({ sport: 0xc0de, dport: 0x0001, proto: 50 });
    const pptp = fastPathGreKey('10.1.2.3', '192.0.2.200', 0xc5e1);
    expect(pptp.subarray(8).toString('hex')).toBe('0000' + 'c5e1' + '2f000000'); // the Call ID as in the packet
    const v = { newSaddr: '203.0.113.9', newDaddr: '10.1.2.3', newSport: 61000, newDport: 40000, inIfindex: 7, outIfindex: 3,
      win: 2 ** 31 - 1, end: 0xdeadbeef, endKnown: true, closed: true, echoReply: false, packets: 5, bytes: 2 ** 40 };
    const b = fastPathValue(v);
    expect(b.length).toBe(48);
    expect(b.subarray(0, 12).toString('hex')).toBe('cb007109' + '0a010203' + 'ee48' + '9c40');
    expect(b.readUInt32LE(28)).toBe(3); // end known, closed (host order: this machine's)
    expect(parseFastPathValue(b)).toEqual(v);
    const reply = { ...v, win: 0, end: 0, endKnown: false, closed: false, echoReply: true };
    expect(fastPathValue(reply).readUInt32LE(28)).toBe(4);
    expect(parseFastPathValue(fastPathValue(reply))).toEqual(reply);
    for (const bad of ['10.1.2', '256.0.0.1', '010.0.0.1']) expect(() => fastPathKey({ saddr: bad, daddr: '10.0.0.1', sport: 1, dport: 2 })).toThrow(/not a dotted-quad/);
    expect(() => fastPathValue({ ...v, win: 2 ** 31 })).toThrow(/win/);
  });

  it('02 the addon: a missing or non-Ethernet device, or a failed second attach, fails cleanly with nothing left open; a full table says so; keys, get, remove; close detaches and is idempotent', async () => {
    const r = await router.call('api', 'lan0', 'wan0');
    expect(r.noLan).toEqual({ message: 'flow fast path: no device vmfp-none0: No such device (ENODEV)', code: 'ENODEV' });
    expect(r.noWan.code).toBe('ENODEV');
    expect(r.zero.message).toMatch(/maxFlows must be at least 1/);
    expect(r.notEther).toEqual({ message: 'flow fast path: lo is not an Ethernet device (link type 772): Invalid argument (EINVAL)', code: 'EINVAL' });
    expect(r.twice).toEqual({ message: 'flow fast path: tcx ingress of lan0 (bpf link): File exists (EEXIST)', code: 'EEXIST' });
    expect(r.leftAfterFailures).toBe(0);
    expect(r.opened).toBe(5); // two maps, the program, two links
    expect(r.linkInfo).toMatch(/link_type:\s+tcx/);
    expect(r.linkInfo).toMatch(new RegExp(`ifindex:\\s+${lanIdx}\\b`));
    expect(r.full).toEqual({ message: 'flow fast path table full: Argument list too long (E2BIG)', code: 'E2BIG' });
    expect(r.short.message).toMatch(/value must be 48 bytes, not 47/);
    expect(r.keys).toEqual([1, 2].map((i) => ({ saddr: `192.0.2.${i}`, daddr: '198.51.100.7', sport: 1000 + i, dport: 443, proto: 6 })));
    expect(r.keysOne).toBe(1);
    expect(r.got).toEqual({ newSaddr: '203.0.113.1', newDaddr: '198.51.100.7', newSport: 2000, newDport: 443, inIfindex: 11,
      outIfindex: 12, win: 65535, end: 0xfffffff0, endKnown: true, closed: false, echoReply: false, packets: 0, bytes: 0 });
    expect(r.getMissing).toBe(false);
    expect(r.removed).toEqual([true, false]);
    expect(r.stats).toHaveLength(8);
    expect(r.handleAfterClose).toEqual({ flowsFd: -1, statsFd: -1, progFd: -1, links: [-1, -1] });
    expect(r.leftAfterClose).toBe(0);
  });

  it('02b a sync walks the table in batches (BPF_MAP_LOOKUP_BATCH): every entry once, its counts and end read right; entries deleted during the walk are not met, the rest still are', async () => {
    const n = 700, room = 7;
    const r = await router.call('walk', 'lan0', 'wan0', n, room);
    const range = (k: number) => Array.from({ length: k }, (_, i) => i);
    expect([...r.whole.met].sort((a: number, b: number) => a - b)).toEqual(range(n));
    expect(r.whole.allRight).toBe(true);
    // Many entries a call (the kernel's buckets: whole ones, up to the room), not one.
    expect(r.whole.maxCount).toBeGreaterThan(1);
    expect(r.whole.maxCount).toBeLessThanOrEqual(room);
    expect(r.whole.calls).toBeLessThan(n / 2);
    // Deleted after the first batch: none of those met, every other entry met once.
    expect(r.deleted.length).toBeGreaterThan(n / 3);
    const met = r.cut.met as number[];
    expect(new Set(met).size).toBe(met.length);
    expect(met.filter((i) => r.deleted.includes(i))).toEqual([]);
    expect([...met].sort((a, b) => a - b)).toEqual(range(n).filter((i) => !r.deleted.includes(i)));
    expect(r.cut.allRight).toBe(true);
    expect(r.errors.token.message).toMatch(/token must be 8 bytes, not 4/);
    expect(r.errors.room.message).toMatch(/at least one entry/);
  });

  it('03 carries the established flow both ways once its two entries are in: NAT rewritten, TTL - 1, GSO super-packets, counted', async () => {
    handle = await router.call('open', 'lan0', 'wan0', 64);
    server = new Lines(spawn('ip', ['netns', 'exec', NS.wan, 'python3', path.join(dir, 'peer.py'), 'server', SERVER, String(SERVER_PORT), WAN_ADDR, String(NAT_PORT)]), 'server');
    expect(await server.next()).toBe('listening');
    client = new Lines(spawn('ip', ['netns', 'exec', NS.lan, 'python3', path.join(dir, 'peer.py'), 'client', LAN_HOST, String(LAN_PORT), SERVER, String(SERVER_PORT)]), 'client');
    expect(await client.next()).toBe('connected');
    expect(await server.next()).toBe('connected');
    // The kernel forwards nothing more of it.
    inNs(NS.rtr, ['nft', 'add', 'rule', 'ip', ID, 'fp_fwd', 'drop']);
    const s0 = await router.call('stats');
    const first = await client.cmd('send 1000 1');
    await sleep(600);
    expect(await server.cmd('avail')).toEqual(['avail', '0']);

    await install(router);
    expect(await server.cmd('recv 1000 10')).toEqual(['recv', '1000', first[2]]); // the retransmission crossed
    await client.cmd('ttls');
    await server.cmd('ttls');
    await transfer(client, server, 4 * MB, 2);
    await transfer(server, client, 4 * MB, 3);
    // Exactly one hop took one off, both ways: each end's sniffer saw only that.
    const tS = (await server.cmd('ttls'))[1], tC = (await client.cmd('ttls'))[1];
    expect(JSON.parse(tS!)).toEqual({ [LAN_TTL - 1]: expect.any(Number) });
    expect(JSON.parse(tC!)).toEqual({ [SERVER_TTL - 1]: expect.any(Number) });

    await sleep(300); // the last ACKs: the connection is quiet while the counts are read
    const out = await router.call('get', outKey);
    const back = await router.call('get', inKey);
    const s1 = await router.call('stats');
    for (const e of [out, back]) {
      expect(e.endKnown).toBe(true);
      expect(e.bytes).toBeGreaterThan(4 * MB);
    }
    // A super-packet counts once: more bytes a packet than the MTU holds.
    expect(out.bytes / out.packets).toBeGreaterThan(1500);
    expect(back.bytes / back.packets).toBeGreaterThan(1500);
    expect(s1[STAT.forwarded] - s0[STAT.forwarded]).toBe(out.packets + back.packets);
    expect(s1[STAT.passedOther]).toBe(s0[STAT.passedOther]);
    expect(s1[STAT.rewriteFailed]).toBe(0);
  });

  it('04 checksums hold where the kernel sums each segment itself (transmit offload off on the router): the ends verify every one', async () => {
    expect(inNs(NS.rtr, ['python3', path.join(dir, 'txcsum.py'), 'lan0', 'wan0'])).toBe('lan0 0\nwan0 0\n');
    const before = [await client.cmd('csumerrors'), await server.cmd('csumerrors')];
    const out0 = await router.call('get', outKey);
    await transfer(client, server, 2 * MB, 4);
    await transfer(server, client, 2 * MB, 5);
    expect([await client.cmd('csumerrors'), await server.cmd('csumerrors')]).toEqual(before);
    const out1 = await router.call('get', outKey);
    // Carried by the program. (Not asserted: that they came as super-packets; a sender starved of CPU on a loaded
    // machine sends mostly single segments, 1 run in 4 beside two busy loops, before and after UDP was added.)
    expect(out1.bytes - out0.bytes).toBeGreaterThan(2 * MB);
  });

  it('05 a packet (or a super-packet\'s segment) larger than the route\'s MTU (here the WAN device\'s) goes up: the kernel answers "fragmentation needed", and the sender\'s smaller segments cross', async () => {
    // (A device's MTU, or a route's locked one: bpf_fib_lookup does not see a route's unlocked `mtu`.)
    inNs(NS.rtr, ['ip', 'link', 'set', 'wan0', 'mtu', '1400']);
    const s0 = await router.call('stats');
    const out0 = await router.call('get', outKey);
    await transfer(client, server, 2 * MB, 13);
    const s1 = await router.call('stats');
    const out1 = await router.call('get', outKey);
    expect(s1[STAT.passedOther] - s0[STAT.passedOther]).toBeGreaterThan(0);
    expect(out1.bytes - out0.bytes).toBeGreaterThan(2 * MB);
    expect((out1.bytes - out0.bytes) / (out1.packets - out0.packets)).toBeGreaterThan(1400); // super-packets still, of smaller segments
    expect(inNs(NS.lan, ['ip', 'route', 'get', SERVER])).toMatch(/mtu 1400/); // the client learnt it
    inNs(NS.rtr, ['ip', 'link', 'set', 'wan0', 'mtu', '1500']);
  });

  it('06 drops a FIN or RST far outside the window (the entry and the connection live on); passes up a packet on the wrong device and one with TTL 1', async () => {
    const s0 = await router.call('stats');
    const back = await router.call('get', inKey);
    segment(SERVER, SERVER_PORT, WAN_ADDR, NAT_PORT, back.end + 2 ** 30, RST);
    segment(SERVER, SERVER_PORT, WAN_ADDR, NAT_PORT, back.end - 2 ** 30, FIN | ACK);
    // The LAN host's packet arriving from the WAN side: its entry says lan0.
    const out0 = await router.call('get', outKey);
    segment(LAN_HOST, LAN_PORT, SERVER, SERVER_PORT, out0.end, ACK);
    // The server's with TTL 1: the kernel's (time exceeded).
    segment(SERVER, SERVER_PORT, WAN_ADDR, NAT_PORT, back.end, ACK, 1);
    await sleep(200);
    const s1 = await router.call('stats');
    expect(s1[STAT.outOfWindow] - s0[STAT.outOfWindow]).toBe(2);
    expect(s1[STAT.passedOther] - s0[STAT.passedOther]).toBe(2);
    expect(s1[STAT.passedClose]).toBe(s0[STAT.passedClose]);
    expect(s1[STAT.forwarded]).toBe(s0[STAT.forwarded]);
    expect((await router.call('get', outKey)).packets).toBe(out0.packets);
    expect((await router.call('get', inKey)).packets).toBe(back.packets);
    await transfer(client, server, 100_000, 6);
    await transfer(server, client, 100_000, 7);
  });

  it('07 an in-window FIN marks its direction closed: its packets go up from then on, the entry kept with its counts; the other direction is not', async () => {
    const s0 = await router.call('stats');
    const back = await router.call('get', inKey);
    segment(SERVER, SERVER_PORT, WAN_ADDR, NAT_PORT, back.end, FIN | ACK);
    await sleep(200);
    const s1 = await router.call('stats');
    expect(s1[STAT.passedClose] - s0[STAT.passedClose]).toBe(1);
    expect(await router.call('get', inKey)).toMatchObject({ closed: true, packets: back.packets, bytes: back.bytes });
    expect((await router.call('get', outKey)).closed).toBe(false);
    // The server's data goes up now (the kernel's path drops it), counted there, not in the entry.
    const sent = await server.cmd('send 100000 8');
    await sleep(500);
    expect(await client.cmd('avail')).toEqual(['avail', '0']);
    expect((await router.call('stats'))[STAT.passedClose]).toBeGreaterThan(s1[STAT.passedClose]);
    expect((await router.call('get', inKey)).packets).toBe(back.packets);
    // The forged FIN reached neither end: with the entry written anew the connection goes on.
    await router.call('put', inKey, entries().in);
    expect(await client.cmd('recv 100000 10')).toEqual(['recv', '100000', sent[2]]);
    await transfer(client, server, 100_000, 9);
  });

  // From here on the router's transmit checksum offload is off (04): the
  // kernel sums each datagram (and each segment of a GSO one) leaving the
  // router from the checksum field the program rewrote, and the receiving
  // kernel verifies it (a CHECKSUM_PARTIAL skb arriving over a veth would be
  // trusted unverified).
  it('08 UDP both ways by the program alone (nothing before its entries): datagrams arrive whole, the receivers verify every checksum; a checksum of 0 stays 0, one that the rewrite makes 0 leaves as 0xffff; counted', async () => {
    lanUdp = new Lines(spawn('ip', ['netns', 'exec', NS.lan, 'python3', path.join(dir, 'udp.py'), LAN_HOST, String(LAN_UPORT)]), 'LAN UDP');
    wanUdp = new Lines(spawn('ip', ['netns', 'exec', NS.wan, 'python3', path.join(dir, 'udp.py'), SERVER, String(SERVER_UPORT)]), 'WAN UDP');
    expect(await lanUdp.next()).toBe('ready');
    expect(await wanUdp.next()).toBe('ready');
    await lanUdp.cmd(`send ${SERVER} ${SERVER_UPORT} 1 100 20`);
    await sleep(300);
    expect((await wanUdp.cmd('recv 1 0'))[1]).toBe('0'); // the forward drop: the kernel forwards none

    await router.call('put', udpOutKey, udpEntries().out);
    await router.call('put', udpInKey, udpEntries().in);
    const errors0 = [snmp(NS.lan, 'Udp', 'InCsumErrors'), snmp(NS.wan, 'Udp', 'InCsumErrors')];
    const s0 = await router.call('stats');
    const up = await lanUdp.cmd(`send ${SERVER} ${SERVER_UPORT} 200 1200 21`);
    expect(await wanUdp.cmd('recv 200 10')).toEqual(['recv', '200', up[2]]);
    const down = await wanUdp.cmd(`send ${WAN_ADDR} ${NAT_UPORT} 200 1200 22`);
    expect(await lanUdp.cmd('recv 200 10')).toEqual(['recv', '200', down[2]]);
    const checks: number[] = JSON.parse((await wanUdp.cmd('checks 200'))[1]!); // as they arrived, good or bad
    expect(checks).toHaveLength(200);
    expect(checks.filter((c) => c === 0)).toEqual([]); // every one summed

    // Hand-built on a raw socket (no offload: the full checksum, updated in place).
    const zero = await lanUdp.cmd(`raw ${SERVER} ${SERVER_UPORT} 100 23 zero`);
    expect(await wanUdp.cmd('recv 1 10')).toEqual(['recv', '1', zero[2]]);
    expect(await wanUdp.cmd('checks 1')).toEqual(['checks', '[0]']);
    const mangled = await lanUdp.cmd(`raw ${SERVER} ${SERVER_UPORT} 100 24 mangled ${WAN_ADDR} ${NAT_UPORT}`);
    expect(await wanUdp.cmd('recv 1 10')).toEqual(['recv', '1', mangled[2]]);
    expect(await wanUdp.cmd('checks 1')).toEqual(['checks', '[65535]']); // not 0, which would mean "no checksum"

    expect([snmp(NS.lan, 'Udp', 'InCsumErrors'), snmp(NS.wan, 'Udp', 'InCsumErrors')]).toEqual(errors0);
    const s1 = await router.call('stats');
    const out = await router.call('get', udpOutKey);
    const back = await router.call('get', udpInKey);
    expect(out).toMatchObject({ packets: 202, bytes: 200 * 1228 + 2 * 128, endKnown: false, closed: false });
    expect(back).toMatchObject({ packets: 200, bytes: 200 * 1228, endKnown: false, closed: false });
    expect(s1[STAT.forwarded] - s0[STAT.forwarded]).toBe(402);
    expect(s1[STAT.passedOther]).toBe(s0[STAT.passedOther]);
    expect(s1[STAT.rewriteFailed]).toBe(0);
  });

  it('09 UDP GSO: one sendmsg of 8 segments (UDP_SEGMENT) each way crosses as one super-packet, the MTU judged by one segment; every datagram arrives, its checksum verified', async () => {
    const errors0 = [snmp(NS.lan, 'Udp', 'InCsumErrors'), snmp(NS.wan, 'Udp', 'InCsumErrors')];
    const out0 = await router.call('get', udpOutKey);
    const back0 = await router.call('get', udpInKey);
    // 8028 bytes of IP: whole, far over the WAN device's MTU (1500).
    const up = await lanUdp.cmd(`gso ${SERVER} ${SERVER_UPORT} 8 1000 25`);
    expect(await wanUdp.cmd('recv 8 10')).toEqual(['recv', '8', up[2]]);
    const down = await wanUdp.cmd(`gso ${WAN_ADDR} ${NAT_UPORT} 8 1000 26`);
    expect(await lanUdp.cmd('recv 8 10')).toEqual(['recv', '8', down[2]]);
    const out1 = await router.call('get', udpOutKey);
    const back1 = await router.call('get', udpInKey);
    expect([out1.packets - out0.packets, out1.bytes - out0.bytes]).toEqual([1, 28 + 8 * 1000]);
    expect([back1.packets - back0.packets, back1.bytes - back0.bytes]).toEqual([1, 28 + 8 * 1000]);
    expect([snmp(NS.lan, 'Udp', 'InCsumErrors'), snmp(NS.wan, 'Udp', 'InCsumErrors')]).toEqual(errors0);
  });

  it('10 ICMP echo: ping\'s requests and the replies cross by the program, the identifier rewritten there and back; a request from outside with the reply entry\'s key is the router\'s to answer (passed up)', async () => {
    const outKey = { saddr: LAN_HOST, daddr: SERVER, sport: ECHO_ID, dport: 0, proto: 1 };
    const inKey = { saddr: SERVER, daddr: WAN_ADDR, sport: NAT_ID, dport: 0, proto: 1 };
    await router.call('put', outKey, { newSaddr: WAN_ADDR, newDaddr: SERVER, newSport: NAT_ID, newDport: 0, inIfindex: lanIdx, outIfindex: wanIdx, win: 0 });
    await router.call('put', inKey, { newSaddr: SERVER, newDaddr: LAN_HOST, newSport: ECHO_ID, newDport: 0, inIfindex: wanIdx, outIfindex: lanIdx, win: 0, echoReply: true });
    const errors0 = [snmp(NS.lan, 'Icmp', 'InCsumErrors'), snmp(NS.wan, 'Icmp', 'InCsumErrors')];
    const echos0 = snmp(NS.wan, 'Icmp', 'InEchos');
    const s0 = await router.call('stats');
    // Under the forward drop only the entries carry them, and the reply's
    // matches only if the request left with NAT_ID; ping takes only replies
    // with its own identifier (a raw socket's: it is root).
    const ping = inNs(NS.lan, ['ping', '-n', '-c', '3', '-i', '0.2', '-W', '2', '-e', String(ECHO_ID), SERVER]);
    expect(ping).toMatch(/3 packets transmitted, 3 received/);
    expect(ping).not.toMatch(/BAD CHECKSUM|DUP/);
    expect(snmp(NS.wan, 'Icmp', 'InEchos') - echos0).toBe(3);
    expect([snmp(NS.lan, 'Icmp', 'InCsumErrors'), snmp(NS.wan, 'Icmp', 'InCsumErrors')]).toEqual(errors0);
    const s1 = await router.call('stats');
    expect(s1[STAT.forwarded] - s0[STAT.forwarded]).toBe(6);
    expect(await router.call('get', outKey)).toMatchObject({ packets: 3, bytes: 3 * 84 });
    expect(await router.call('get', inKey)).toMatchObject({ packets: 3, bytes: 3 * 84, echoReply: true });

    // wanhost pings the router's address with NAT_ID: the reply entry's key, but a request.
    const own = inNs(NS.wan, ['ping', '-n', '-c', '1', '-W', '2', '-e', String(NAT_ID), WAN_ADDR]);
    expect(own).toMatch(/1 packets transmitted, 1 received/); // answered by the router itself
    const s2 = await router.call('stats');
    expect(s2[STAT.passedOther] - s1[STAT.passedOther]).toBe(1);
    expect(s2[STAT.forwarded]).toBe(s1[STAT.forwarded]);
    expect((await router.call('get', inKey)).packets).toBe(3);
  });

  it('11 UDP: the LAN host\'s datagram arriving on the WAN device goes up (wrong ingress); so does every datagram of a direction marked closed, until its entry is written open again', async () => {
    const s0 = await router.call('stats');
    const out0 = await router.call('get', udpOutKey);
    datagram(LAN_HOST, LAN_UPORT, SERVER, SERVER_UPORT); // its route is wan0, as the entry's: only the ingress tells
    await sleep(200);
    const s1 = await router.call('stats');
    expect(s1[STAT.passedOther] - s0[STAT.passedOther]).toBe(1);
    expect(s1[STAT.forwarded]).toBe(s0[STAT.forwarded]);
    expect((await router.call('get', udpOutKey)).packets).toBe(out0.packets);
    expect((await wanUdp.cmd('recv 1 0'))[1]).toBe('0');

    await router.call('put', udpInKey, { ...udpEntries().in, closed: true });
    await wanUdp.cmd(`send ${WAN_ADDR} ${NAT_UPORT} 1 100 27`);
    expect((await lanUdp.cmd('recv 1 0.5'))[1]).toBe('0');
    const s2 = await router.call('stats');
    expect(s2[STAT.passedClose] - s1[STAT.passedClose]).toBe(1);
    expect(await router.call('get', udpInKey)).toMatchObject({ closed: true, packets: 0 });
    await router.call('put', udpInKey, udpEntries().in);
    const again = await wanUdp.cmd(`send ${WAN_ADDR} ${NAT_UPORT} 1 100 28`);
    expect(await lanUdp.cmd('recv 1 10')).toEqual(['recv', '1', again[2]]);
  });

  it('12 ESP both ways by the program alone (nothing before its entries): the addresses rewritten, SPI, sequence number and payload byte for byte, TTL - 1, a right header checksum; counted', async () => {
    lanEsp = new Lines(spawn('ip', ['netns', 'exec', NS.lan, 'python3', path.join(dir, 'ipproto.py'), 'eth0', '50']), 'LAN ESP');
    wanEsp = new Lines(spawn('ip', ['netns', 'exec', NS.wan, 'python3', path.join(dir, 'ipproto.py'), 'eth0', '50']), 'WAN ESP');
    expect(await lanEsp.next()).toBe('ready');
    expect(await wanEsp.next()).toBe('ready');
    // Both neighbours known (bpf_fib_lookup passes a packet up without one).
    inNs(NS.rtr, ['ping', '-n', '-c', '1', '-W', '2', LAN_HOST]);
    inNs(NS.rtr, ['ping', '-n', '-c', '1', '-W', '2', SERVER]);
    await esp('lan', LAN_HOST, SERVER, SPI_OUT, 1, 1, 100);
    expect(await arrived(wanEsp, 1, 0.5)).toEqual([]); // the forward drop: the kernel forwards none

    await router.call('put', espOutKey, espEntries().out);
    await router.call('put', espInKey, espEntries().in);
    const s0 = await router.call('stats');
    const up = await esp('lan', LAN_HOST, SERVER, SPI_OUT, 100, 20, 1200);
    expectRewritten(up, await arrived(wanEsp, 20, 10), WAN_ADDR, SERVER);
    const down = await esp('wan', SERVER, WAN_ADDR, SPI_IN, 200, 20, 100);
    expectRewritten(down, await arrived(lanEsp, 20, 10), SERVER, LAN_HOST);
    const s1 = await router.call('stats');
    expect(await router.call('get', espOutKey)).toMatchObject({ packets: 20, bytes: 20 * (20 + 8 + 1200), closed: false,
      newSport: SPI_OUT >>> 16, newDport: SPI_OUT & 0xffff });
    expect(await router.call('get', espInKey)).toMatchObject({ packets: 20, bytes: 20 * (20 + 8 + 100), closed: false });
    expect(s1[STAT.forwarded] - s0[STAT.forwarded]).toBe(40);
    expect(s1[STAT.passedOther]).toBe(s0[STAT.passedOther]);
    expect(s1[STAT.rewriteFailed]).toBe(0);

    // The value's ports are not read for ESP: the SPI leaves as it came, whatever they say.
    await router.call('put', espOutKey, { ...espEntries().out, newSport: 0xdead, newDport: 0xbeef });
    const again = await esp('lan', LAN_HOST, SERVER, SPI_OUT, 150, 1, 100);
    expectRewritten(again, await arrived(wanEsp, 1, 10), WAN_ADDR, SERVER);
    await router.call('put', espOutKey, espEntries().out);
  });

  it('13 ESP with the SA\'s SPI from another source goes up: another LAN host, a spoofed internet source, the LAN host\'s own arriving on the WAN device', async () => {
    const s0 = await router.call('stats');
    const out0 = await router.call('get', espOutKey);
    const in0 = await router.call('get', espInKey);
    await esp('lan', OTHER_LAN_HOST, SERVER, SPI_OUT, 300, 3, 100);
    await esp('wan', SPOOFED, WAN_ADDR, SPI_IN, 310, 3, 100);
    await esp('wan', LAN_HOST, SERVER, SPI_OUT, 320, 3, 100); // its route is wan0, as the entry's: only the ingress tells
    await onlyOwnArrive(330);
    const s1 = await router.call('stats');
    expect(s1[STAT.forwarded] - s0[STAT.forwarded]).toBe(2);
    expect(s1[STAT.passedOther] - s0[STAT.passedOther]).toBe(3); // the wrong device's (the others have no entry)
    expect((await router.call('get', espOutKey)).packets).toBe(out0.packets + 1);
    expect((await router.call('get', espInKey)).packets).toBe(in0.packets + 1);
  });

  it('14 ESP with another SPI between the same addresses goes up: either half of it changed, either way', async () => {
    const s0 = await router.call('stats');
    await esp('lan', LAN_HOST, SERVER, (SPI_OUT ^ 1) >>> 0, 400, 2, 100);
    await esp('lan', LAN_HOST, SERVER, (SPI_OUT ^ 0x10000) >>> 0, 410, 2, 100);
    await esp('wan', SERVER, WAN_ADDR, SPI_IN ^ 1, 420, 2, 100);
    await esp('wan', SERVER, WAN_ADDR, SPI_IN ^ 0x10000, 430, 2, 100);
    await esp('wan', SERVER, WAN_ADDR, SPI_OUT, 440, 2, 100); // the other direction's SPI
    await onlyOwnArrive(450);
    const s1 = await router.call('stats');
    expect(s1[STAT.forwarded] - s0[STAT.forwarded]).toBe(2);
  });

  it('15 a truncated ESP packet (its IP length leaves 7 bytes of ESP, though the frame carries the rest) goes up, either way', async () => {
    const s0 = await router.call('stats');
    await esp('lan', LAN_HOST, SERVER, SPI_OUT, 500, 2, 100, 'short');
    await esp('wan', SERVER, WAN_ADDR, SPI_IN, 510, 2, 100, 'short');
    await onlyOwnArrive(520);
    const s1 = await router.call('stats');
    expect(s1[STAT.forwarded] - s0[STAT.forwarded]).toBe(2);
  });

  it('16 an ESP fragment goes up, the first (MF, its SPI the SA\'s) and a last one (an offset, bytes like the SPI where the header would be), either way', async () => {
    const s0 = await router.call('stats');
    await esp('lan', LAN_HOST, SERVER, SPI_OUT, 600, 2, 100, 'mf');
    await esp('lan', LAN_HOST, SERVER, SPI_OUT, 610, 2, 100, 'last');
    await esp('wan', SERVER, WAN_ADDR, SPI_IN, 620, 2, 100, 'mf');
    await esp('wan', SERVER, WAN_ADDR, SPI_IN, 630, 2, 100, 'last');
    await onlyOwnArrive(640);
    const s1 = await router.call('stats');
    expect(s1[STAT.forwarded] - s0[STAT.forwarded]).toBe(2);
  });

  it('17 ESP: every packet of a direction marked closed goes up, counted there and not in the entry, until its entry is written open again', async () => {
    await router.call('put', espInKey, { ...espEntries().in, closed: true });
    const s0 = await router.call('stats');
    await esp('wan', SERVER, WAN_ADDR, SPI_IN, 700, 3, 100);
    const up = await esp('lan', LAN_HOST, SERVER, SPI_OUT, 710, 1, 100); // the other direction is not closed
    expectRewritten(up, await arrived(wanEsp, 1, 10), WAN_ADDR, SERVER);
    await sleep(300);
    expect(await arrived(lanEsp, 0, 0)).toEqual([]);
    const s1 = await router.call('stats');
    expect(s1[STAT.passedClose] - s0[STAT.passedClose]).toBe(3);
    expect(s1[STAT.forwarded] - s0[STAT.forwarded]).toBe(1);
    expect(await router.call('get', espInKey)).toMatchObject({ closed: true, packets: 0, bytes: 0 });
    await router.call('put', espInKey, espEntries().in);
    await onlyOwnArrive(720);
    expect(await router.call('get', espInKey)).toMatchObject({ closed: false, packets: 1 });
  });

  it('18 PPTP\'s GRE both ways by the program alone (nothing before its entries), with and without the sequence and ack numbers: the addresses rewritten, the Call ID the server\'s outbound and the LAN host\'s inbound, every other byte as sent, TTL - 1, a right header checksum; counted', async () => {
    lanGre = new Lines(spawn('ip', ['netns', 'exec', NS.lan, 'python3', path.join(dir, 'ipproto.py'), 'eth0', '47']), 'LAN GRE');
    wanGre = new Lines(spawn('ip', ['netns', 'exec', NS.wan, 'python3', path.join(dir, 'ipproto.py'), 'eth0', '47']), 'WAN GRE');
    expect(await lanGre.next()).toBe('ready');
    expect(await wanGre.next()).toBe('ready');
    inNs(NS.rtr, ['ping', '-n', '-c', '1', '-W', '2', LAN_HOST]);
    inNs(NS.rtr, ['ping', '-n', '-c', '1', '-W', '2', SERVER]);
    await gre('lan', LAN_HOST, SERVER, SERVER_CALL, 1, 1, 100);
    await gre('wan', SERVER, WAN_ADDR, NAT_CALL, 1, 1, 100);
    expect(await arrived(wanGre, 1, 0.5)).toEqual([]); // the forward drop: the kernel forwards none
    expect(await arrived(lanGre, 0, 0)).toEqual([]);

    await router.call('put', greOutKey, greEntries().out);
    await router.call('put', greInKey, greEntries().in);
    const s0 = await router.call('stats');
    let id = 100;
    let upBytes = 0, downBytes = 0;
    for (const flags of [GRE_K | GRE_S | GRE_A | GRE_V1, GRE_K | GRE_S | GRE_V1, GRE_K | GRE_A | GRE_V1, GRE_K | GRE_V1]) {
      const up = await gre('lan', LAN_HOST, SERVER, SERVER_CALL, id, 5, 1200, { flags });
      expectGre(up, await arrived(wanGre, 5, 10), WAN_ADDR, SERVER, SERVER_CALL);
      const down = await gre('wan', SERVER, WAN_ADDR, NAT_CALL, id + 50, 5, 100, { flags });
      expectGre(down, await arrived(lanGre, 5, 10), SERVER, LAN_HOST, LAN_CALL);
      upBytes += up.reduce((n, b) => n + b.length, 0);
      downBytes += down.reduce((n, b) => n + b.length, 0);
      id += 10;
    }
    expect(upBytes).toBe(5 * (20 + 8 + 1200) * 4 + 5 * 4 * 4); // 4 bytes for each S and each A
    const s1 = await router.call('stats');
    expect(await router.call('get', greOutKey)).toMatchObject({ packets: 20, bytes: upBytes, closed: false, newSport: 0, newDport: SERVER_CALL });
    expect(await router.call('get', greInKey)).toMatchObject({ packets: 20, bytes: downBytes, closed: false, newDport: LAN_CALL });
    expect(s1[STAT.forwarded] - s0[STAT.forwarded]).toBe(40);
    expect(s1[STAT.passedOther]).toBe(s0[STAT.passedOther]);
    expect(s1[STAT.rewriteFailed]).toBe(0);

    // newSport is not read for GRE: nothing else changes, whatever it says.
    await router.call('put', greOutKey, { ...greEntries().out, newSport: 0xdead });
    const again = await gre('lan', LAN_HOST, SERVER, SERVER_CALL, 190, 1, 100);
    expectGre(again, await arrived(wanGre, 1, 10), WAN_ADDR, SERVER, SERVER_CALL);
    await router.call('put', greOutKey, greEntries().out);
  });

  it('19 GRE with the call\'s Call ID from another source goes up: another LAN host, a spoofed internet source, the LAN host\'s own arriving on the WAN device', async () => {
    const s0 = await router.call('stats');
    const out0 = await router.call('get', greOutKey);
    const in0 = await router.call('get', greInKey);
    await gre('lan', OTHER_LAN_HOST, SERVER, SERVER_CALL, 300, 3, 100);
    await gre('wan', SPOOFED, WAN_ADDR, NAT_CALL, 310, 3, 100);
    await gre('wan', LAN_HOST, SERVER, SERVER_CALL, 320, 3, 100); // its route is wan0, as the entry's: only the ingress tells
    await greOnlyOwnArrive(330);
    const s1 = await router.call('stats');
    expect(s1[STAT.forwarded] - s0[STAT.forwarded]).toBe(2);
    expect(s1[STAT.passedOther] - s0[STAT.passedOther]).toBe(3); // the wrong device's (the others have no entry)
    expect((await router.call('get', greOutKey)).packets).toBe(out0.packets + 1);
    expect((await router.call('get', greInKey)).packets).toBe(in0.packets + 1);
  });

  it('20 GRE with another Call ID between the same addresses goes up: either byte of it changed, either way; the LAN host\'s own Call ID from outside', async () => {
    const s0 = await router.call('stats');
    await gre('lan', LAN_HOST, SERVER, SERVER_CALL ^ 1, 400, 2, 100);
    await gre('lan', LAN_HOST, SERVER, SERVER_CALL ^ 0x100, 410, 2, 100);
    await gre('wan', SERVER, WAN_ADDR, NAT_CALL ^ 1, 420, 2, 100);
    await gre('wan', SERVER, WAN_ADDR, NAT_CALL ^ 0x100, 430, 2, 100);
    await gre('wan', SERVER, WAN_ADDR, LAN_CALL, 440, 2, 100); // the call's inside Call ID
    await gre('wan', SERVER, WAN_ADDR, SERVER_CALL, 450, 2, 100); // the other direction's
    await greOnlyOwnArrive(460);
    const s1 = await router.call('stats');
    expect(s1[STAT.forwarded] - s0[STAT.forwarded]).toBe(2);
  });

  it('21 GRE that is not PPTP\'s goes up, its Call ID bytes the call\'s: version 0 with a key (plain GRE), version 2, K clear, C, R, s, a recursion count or a reserved flag set; either way', async () => {
    const s0 = await router.call('stats');
    const out0 = await router.call('get', greOutKey);
    let id = 500;
    for (const flags of [GRE_K, GRE_K | 0x0002, GRE_S | GRE_A | GRE_V1, 0x8000 | GRE_K | GRE_V1, 0x4000 | GRE_K | GRE_V1,
      0x0800 | GRE_K | GRE_V1, 0x0100 | GRE_K | GRE_V1, 0x0700 | GRE_K | GRE_V1, 0x0040 | GRE_K | GRE_V1, 0x0008 | GRE_K | GRE_V1]) {
      await gre('lan', LAN_HOST, SERVER, SERVER_CALL, id, 1, 100, { flags });
      await gre('wan', SERVER, WAN_ADDR, NAT_CALL, id + 1, 1, 100, { flags });
      id += 2;
    }
    await greOnlyOwnArrive(540);
    const s1 = await router.call('stats');
    expect(s1[STAT.forwarded] - s0[STAT.forwarded]).toBe(2);
    expect((await router.call('get', greOutKey)).packets).toBe(out0.packets + 1);
  });

  it('22 GRE whose protocol type is not PPP (0x880B) goes up: IPv4, a neighbour of it, 0x880B\'s bytes swapped; either way', async () => {
    const s0 = await router.call('stats');
    let id = 600;
    for (const ptype of [0x0800, 0x880a, 0x0b88, 0x0000]) {
      await gre('lan', LAN_HOST, SERVER, SERVER_CALL, id, 1, 100, { ptype });
      await gre('wan', SERVER, WAN_ADDR, NAT_CALL, id + 1, 1, 100, { ptype });
      id += 2;
    }
    await greOnlyOwnArrive(620);
    const s1 = await router.call('stats');
    expect(s1[STAT.forwarded] - s0[STAT.forwarded]).toBe(2);
  });

  it('23 a truncated GRE packet (its IP length leaves 7 bytes of GRE, though the frame carries the rest) goes up, either way', async () => {
    const s0 = await router.call('stats');
    await gre('lan', LAN_HOST, SERVER, SERVER_CALL, 700, 2, 100, { mode: 'short' });
    await gre('wan', SERVER, WAN_ADDR, NAT_CALL, 710, 2, 100, { mode: 'short' });
    await greOnlyOwnArrive(720);
    const s1 = await router.call('stats');
    expect(s1[STAT.forwarded] - s0[STAT.forwarded]).toBe(2);
  });

  it('24 a GRE fragment goes up, the first (MF, its header the call\'s) and a last one (an offset, bytes like the header where it would be), either way', async () => {
    const s0 = await router.call('stats');
    await gre('lan', LAN_HOST, SERVER, SERVER_CALL, 800, 2, 100, { mode: 'mf' });
    await gre('lan', LAN_HOST, SERVER, SERVER_CALL, 810, 2, 100, { mode: 'last' });
    await gre('wan', SERVER, WAN_ADDR, NAT_CALL, 820, 2, 100, { mode: 'mf' });
    await gre('wan', SERVER, WAN_ADDR, NAT_CALL, 830, 2, 100, { mode: 'last' });
    await greOnlyOwnArrive(840);
    const s1 = await router.call('stats');
    expect(s1[STAT.forwarded] - s0[STAT.forwarded]).toBe(2);
  });

  it('25 GRE: every packet of a direction marked closed goes up, counted there and not in the entry, until its entry is written open again', async () => {
    await router.call('put', greInKey, { ...greEntries().in, closed: true });
    const s0 = await router.call('stats');
    await gre('wan', SERVER, WAN_ADDR, NAT_CALL, 900, 3, 100);
    const up = await gre('lan', LAN_HOST, SERVER, SERVER_CALL, 910, 1, 100); // the other direction is not closed
    expectGre(up, await arrived(wanGre, 1, 10), WAN_ADDR, SERVER, SERVER_CALL);
    await sleep(300);
    expect(await arrived(lanGre, 0, 0)).toEqual([]);
    const s1 = await router.call('stats');
    expect(s1[STAT.passedClose] - s0[STAT.passedClose]).toBe(3);
    expect(s1[STAT.forwarded] - s0[STAT.forwarded]).toBe(1);
    expect(await router.call('get', greInKey)).toMatchObject({ closed: true, packets: 0, bytes: 0 });
    await router.call('put', greInKey, greEntries().in);
    await greOnlyOwnArrive(920);
    expect(await router.call('get', greInKey)).toMatchObject({ closed: false, packets: 1 });
  });

  it('26 dies with its process: after kill -9 nothing crosses; a new process\'s entries carry the same connection on; close() detaches too', async () => {
    // The links are the process's fds: tcx links on both devices.
    const info = handle.links.map((fd) => readFileSync(`/proc/${router.pid}/fdinfo/${fd}`, 'utf8'));
    expect(info[0]).toMatch(/link_type:\s+tcx/);
    expect(info[0]).toMatch(new RegExp(`ifindex:\\s+${lanIdx}\\b`));
    expect(info[1]).toMatch(new RegExp(`ifindex:\\s+${wanIdx}\\b`));
    router.kill();
    await router.exited;
    const sent = await client.cmd('send 1000 10');
    await sleep(1000);
    expect(await server.cmd('avail')).toEqual(['avail', '0']);
    expect(await client.cmd('avail')).toEqual(['avail', '0']);

    // The connection itself lived: another process's fast path with the same entries carries it on.
    router = await Router.start();
    await router.call('open', 'lan0', 'wan0', 64);
    await install(router);
    expect(await server.cmd('recv 1000 10')).toEqual(['recv', '1000', sent[2]]);
    await transfer(server, client, 100_000, 11);
    await router.call('close');
    await client.cmd('send 1000 12');
    await sleep(1000);
    expect(await server.cmd('avail')).toEqual(['avail', '0']);
  });
});
