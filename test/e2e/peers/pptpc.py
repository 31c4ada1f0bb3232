#!/usr/bin/python3
"""A minimal PPTP client (PNS) in Python: control connection on TCP 1723 and
enhanced GRE over a raw IP-protocol-47 socket, with a Call ID of our choice,
so tests can make several LAN hosts use the *same* Call ID (which pptp-linux,
choosing its own, cannot be told to do). RFC 2637.

  pptpc.py call --server IP --call-id N --tag T [--frames N] [--timeout S]
                [--resend-ms MS] [--no-clear] [--linger-ms MS] [--pushes N]
      Start-Control-Connection, Outgoing-Call (our Call ID N), PPP frames
      ff 03 00 21 "T:i" in GRE keyed with the server's Call ID, resends the
      unanswered ones with fresh sequence numbers, then Call-Clear-Request /
      Stop-Control-Connection (unless --no-clear: then it just closes).
      Prints one JSON line:
      {"tag", "call_id", "peer_call_id", "sent", "echoed", "foreign",
       "wrong_key": [keys], "lcp", "bad_gre", "first_echo_ms", "elapsed_ms",
       "cdn": bool, "error", "icmp_errors", "last_icmp", "pushes": [payload...]}
      With --linger-ms it keeps receiving GRE that long once every frame came
      back (until N frames pushed by the server, payload 'push:T:...', arrived,
      with --pushes N); pushes of another call ('push:...' without our tag)
      count as foreign.

  pptpc.py raw --server IP [--handshake] [--wait-ms MS] HEX...
      Opens a control connection, optionally does the Start-Control-
      Connection exchange first, sends every HEX blob as is (each in its own
      TCP segment: TCP_NODELAY and 50 ms apart, so one message split in two
      blobs crosses the NAT in two segments), then reads for MS ms and
      prints {"connected", "replies": [hex...], "closed": bool}.
"""
import json
import select
import socket
import struct
import sys
import time

MAGIC = 0x1A2B3C4D
GRE_PROTO_PPP = 0x880B

SCCRQ, SCCRP, STOPCCRQ, STOPCCRP, ECHORQ, ECHORP = 1, 2, 3, 4, 5, 6
OCRQ, OCRP, ICRQ, ICRP, ICCN, CCRQ, CDN, WEN, SLI = 7, 8, 9, 10, 11, 12, 13, 14, 15

# Control message lengths (RFC 2637 section 2)
LENGTHS = {SCCRQ: 156, SCCRP: 156, STOPCCRQ: 16, STOPCCRP: 16, ECHORQ: 16, ECHORP: 20,
           OCRQ: 168, OCRP: 32, ICRQ: 220, ICRP: 24, ICCN: 28, CCRQ: 16, CDN: 148, WEN: 40, SLI: 24}


def ctrl(mtype, body, magic=MAGIC, length=None, msg_type=1):
    """A control message: header (length, message type 1, magic, control type, reserved) + body."""
    n = 12 + len(body) if length is None else length
    return struct.pack('!HHIHH', n, msg_type, magic, mtype, 0) + body


def sccrq():
    return ctrl(SCCRQ, struct.pack('!HHIIHH64s64s', 0x0100, 0, 1, 1, 0, 1, b'e2e', b'vpnmasq-e2e'))


def ocrq(call_id, serial=0):
    return ctrl(OCRQ, struct.pack('!HHIIIIHHHH64s64s', call_id, serial, 2400, 10_000_000, 3, 3, 64, 0, 0, 0, b'', b''))


def ccrq(call_id):
    return ctrl(CCRQ, struct.pack('!HH', call_id, 0))


def stopccrq():
    return ctrl(STOPCCRQ, struct.pack('!BBH', 1, 0, 0))


def gre(call_id, payload, seq=None, ack=None, version=1, proto=GRE_PROTO_PPP, key=True):
    """Enhanced GRE header (RFC 2637 4.1) + payload."""
    flags = (0x20 if key else 0) | (0x10 if seq is not None else 0)
    ver = (0x80 if ack is not None else 0) | (version & 7)
    h = struct.pack('!BBHHH', flags, ver, proto, len(payload), call_id)
    if seq is not None:
        h += struct.pack('!I', seq)
    if ack is not None:
        h += struct.pack('!I', ack)
    return h + payload


def parse_gre(pkt):
    """IP packet from a raw socket -> (call_id, seq, ack, payload) or None."""
    ihl = (pkt[0] & 0x0F) * 4
    g = pkt[ihl:]
    if len(g) < 8:
        return None
    flags, ver, proto, plen, cid = struct.unpack('!BBHHH', g[:8])
    if (ver & 7) != 1 or proto != GRE_PROTO_PPP or not flags & 0x20:
        return None
    off = 8
    seq = ack = None
    if flags & 0x10:
        seq = struct.unpack('!I', g[off:off + 4])[0]
        off += 4
    if ver & 0x80:
        ack = struct.unpack('!I', g[off:off + 4])[0]
        off += 4
    return cid, seq, ack, g[off:off + plen]


class Ctrl:
    def __init__(self, server, timeout=5.0):
        self.s = socket.create_connection((server, 1723), timeout=timeout)
        self.buf = b''
        self.closed = False

    def send(self, data):
        self.s.sendall(data)

    def read(self, timeout):
        """Next complete control message (bytes) or None on timeout/close."""
        deadline = time.monotonic() + timeout
        while True:
            if len(self.buf) >= 2:
                n = struct.unpack('!H', self.buf[:2])[0]
                if n < 12:  # garbage from the peer: hand out the rest
                    m, self.buf = self.buf, b''
                    return m
                if len(self.buf) >= n:
                    m, self.buf = self.buf[:n], self.buf[n:]
                    return m
            if self.closed:
                return None
            left = max(0.0, deadline - time.monotonic())
            r, _, _ = select.select([self.s], [], [], left)
            if not r:
                return None
            try:
                d = self.s.recv(4096)
            except OSError:
                d = b''
            if not d:
                self.closed = True
                if self.buf:
                    m, self.buf = self.buf, b''
                    return m
                return None
            self.buf += d

    def expect(self, mtype, timeout, pred=None):
        deadline = time.monotonic() + timeout
        while True:
            m = self.read(max(0.0, deadline - time.monotonic()))
            if m is None:
                return None
            if len(m) >= 12:
                _, _, magic, t, _ = struct.unpack('!HHIHH', m[:12])
                if t == ECHORQ and len(m) >= 16:  # keep-alive from the server
                    self.send(ctrl(ECHORP, m[12:16] + struct.pack('!BBH', 1, 0, 0)))
                    continue
                if t == mtype and (pred is None or pred(m)):
                    return m


def call(args):
    o = {'--server': None, '--call-id': '4660', '--tag': 'p', '--frames': '5', '--timeout': '15',
         '--resend-ms': '300', '--linger-ms': '0', '--pushes': '0'}
    no_clear = False
    i = 0
    while i < len(args):
        if args[i] == '--no-clear':
            no_clear = True
            i += 1
            continue
        if args[i] not in o:
            sys.exit('pptpc call: unknown option %s' % args[i])
        o[args[i]] = args[i + 1]
        i += 2
    srv, cid, tag, n = o['--server'], int(o['--call-id'], 0), o['--tag'], int(o['--frames'])
    resend = int(o['--resend-ms']) / 1000.0
    t0 = time.monotonic()
    deadline = t0 + float(o['--timeout'])
    res = {'tag': tag, 'call_id': cid, 'peer_call_id': None, 'sent': 0, 'echoed': [], 'foreign': [],
           'wrong_key': [], 'lcp': 0, 'bad_gre': 0, 'first_echo_ms': None, 'elapsed_ms': 0,
           'cdn': False, 'error': None, 'icmp_errors': 0, 'last_icmp': None, 'pushes': []}
    linger = int(o['--linger-ms']) / 1000.0
    want_pushes = int(o['--pushes'])
    linger_end = None

    def done():
        res['elapsed_ms'] = int((time.monotonic() - t0) * 1000)
        print(json.dumps(res), flush=True)

    try:
        c = Ctrl(srv, timeout=max(1.0, deadline - time.monotonic()))
    except OSError as e:
        res['error'] = 'connect: %s' % e
        return done()
    c.send(sccrq())
    if c.expect(SCCRP, max(0.1, deadline - time.monotonic())) is None:
        res['error'] = 'no Start-Control-Connection-Reply'
        return done()
    c.send(ocrq(cid))
    rep = c.expect(OCRP, max(0.1, deadline - time.monotonic()),
                   lambda m: struct.unpack('!H', m[14:16])[0] == cid)
    if rep is None:
        res['error'] = 'no Outgoing-Call-Reply for our Call ID'
        return done()
    peer, _, result = struct.unpack('!HHB', rep[12:17])
    res['peer_call_id'] = peer
    if result != 1:
        res['error'] = 'Outgoing-Call-Reply result %d' % result
        return done()

    g = socket.socket(socket.AF_INET, socket.SOCK_RAW, 47)
    g.connect((srv, 0))
    payloads = ['%s:%d' % (tag, k) for k in range(n)]
    want = set(payloads)
    got = []
    last_sent = {}
    seq = 0
    rx_seq = None
    while True:
        now = time.monotonic()
        if not (want - set(got)):
            if linger_end is None:
                linger_end = now + linger
            if now >= linger_end or (want_pushes > 0 and len(res['pushes']) >= want_pushes):
                break
        elif now >= deadline:
            break
        for pl in payloads:
            if pl in got or now - last_sent.get(pl, -1e9) < resend:
                continue
            seq += 1
            try:
                g.send(gre(peer, b'\xff\x03\x00\x21' + pl.encode(), seq=seq, ack=rx_seq))
            except OSError as e:  # an ICMP error (e.g. protocol unreachable) came back
                res['icmp_errors'] = res.get('icmp_errors', 0) + 1
                res['last_icmp'] = str(e)
            last_sent[pl] = now
            res['sent'] += 1
        r, _, _ = select.select([g, c.s], [], [], 0.05)
        if c.s in r:
            m = c.read(0)  # echo requests, a stray disconnect
            if m is not None and len(m) >= 12 and struct.unpack('!H', m[8:10])[0] == ECHORQ:
                c.send(ctrl(ECHORP, m[12:16] + struct.pack('!BBH', 1, 0, 0)))
        if g not in r:
            continue
        try:
            p = parse_gre(g.recv(65535))
        except OSError as e:
            res['icmp_errors'] = res.get('icmp_errors', 0) + 1
            res['last_icmp'] = str(e)
            continue
        if p is None:
            res['bad_gre'] += 1
            continue
        key, s, _, payload = p
        if s is not None:
            rx_seq = s
        if not payload:
            continue  # ack only
        if key != cid:
            # not our call: misdelivered by the NAT, or (on a host that also
            # runs pptpd) GRE of another call from the same peer
            if len(res['wrong_key']) < 50:
                res['wrong_key'].append(key)
            continue
        if payload[:2] == b'\xff\x03':
            payload = payload[2:]
        proto = struct.unpack('!H', payload[:2])[0] if len(payload) >= 2 else None
        if proto == 0xC021:
            res['lcp'] += 1
        elif proto == 0x0021:
            s = payload[2:].decode('latin-1')
            if s.startswith('push:'):
                if s.startswith('push:%s:' % tag):
                    res['pushes'].append(s)
                else:
                    res['foreign'].append(s)
                continue
            if s in want:
                if s not in got:
                    got.append(s)
                    if res['first_echo_ms'] is None:
                        res['first_echo_ms'] = int((time.monotonic() - t0) * 1000)
            elif s not in want:
                res['foreign'].append(s)
    res['echoed'] = got
    if not no_clear:
        try:
            c.send(ccrq(cid))
            res['cdn'] = c.expect(CDN, 2.0) is not None
            c.send(stopccrq())
            c.expect(STOPCCRP, 2.0)
        except OSError:
            pass
    c.s.close()
    g.close()
    done()


def raw(args):
    srv = None
    handshake = False
    wait = 1000
    blobs = []
    i = 0
    while i < len(args):
        a = args[i]
        if a == '--server':
            srv = args[i + 1]
            i += 2
        elif a == '--handshake':
            handshake = True
            i += 1
        elif a == '--wait-ms':
            wait = int(args[i + 1])
            i += 2
        else:
            blobs.append(bytes.fromhex(a))
            i += 1
    out = {'connected': False, 'replies': [], 'closed': False, 'error': None}
    try:
        c = Ctrl(srv, timeout=5)
        out['connected'] = True
        if handshake:
            c.send(sccrq())
            m = c.expect(SCCRP, 3)
            if m is not None:
                out['replies'].append(m.hex())
        c.s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for k, b in enumerate(blobs):
            if k:
                time.sleep(0.05)  # one TCP segment per blob
            c.send(b)
        deadline = time.monotonic() + wait / 1000.0
        while time.monotonic() < deadline:
            m = c.read(max(0.0, deadline - time.monotonic()))
            if m is None:
                if c.closed:
                    break
                continue
            out['replies'].append(m.hex())
        out['closed'] = c.closed
        c.s.close()
    except OSError as e:
        out['error'] = str(e)
    print(json.dumps(out), flush=True)


if __name__ == '__main__':
    if len(sys.argv) >= 2 and sys.argv[1] == 'call':
        call(sys.argv[2:])
    elif len(sys.argv) >= 2 and sys.argv[1] == 'raw':
        raw(sys.argv[2:])
    else:
        sys.exit('usage: pptpc.py call|raw ...')
