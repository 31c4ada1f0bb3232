#!/usr/bin/python3
"""Raw ESP (IP protocol 50, no NAT-T) with real crypto, for NAT tests.

Tunnel-mode SAs from python3-scapy (AES-CBC + HMAC-SHA256-128) over raw
IP-protocol-50 sockets. No kernel IPsec is involved: the kernel only hands
whole ESP packets to the raw socket (with a raw socket open it sends no
protocol-unreachable either).

An SA pair is 'C2S,S2C,ENCKEY,AUTHKEY' (SPIs decimal or 0x hex, keys hex):
C2S is the SPI of client->server packets, S2C of server->client packets.

  esp.py server --sa PAIR [--sa PAIR ...] [--duration S] [--reply-delay-ms MS] [--hold C2S:MS ...]
      Prints {"ready": true}, then answers every packet it can decrypt with
      an encrypted reply on the S2C SA of the same pair, sent to the outer
      source address the request came from; the inner reply swaps the inner
      addresses and ports and carries b'reply:' + the request payload. On
      SIGTERM/SIGINT or after S seconds prints stats (replies are held back
      MS ms when asked, like a peer that takes its time to answer, which
      keeps a new SPI "outstanding" in the NAT that long):
      {"sas": {"<c2s>": {"requests", "replies", "peers": [outer src...]}},
       "unknown_spi": {"<spi>": n}, "bad": n}
      SIGUSR1: the server speaks first: 3 packets (inner payload b'push:<c2s>:k')
      on the S2C SA of every pair that has a peer, to that peer; counted as
      "pushed" per SA in the stats.

  esp.py client --server IP --sa PAIR --tag T [--want N] [--interval-ms MS]
                [--timeout S] [--inner-src A] [--inner-dst A] [--start-at MS]
                [--linger-ms MS] [--pushes N]
      Every MS ms (default 200) sends a new request (inner UDP, payload
      'T:i', i = 0, 1, ...) until N distinct replies (default 5) have come
      back or S seconds (default 10) have passed, like an IKE daemon that
      keeps retransmitting; with --start-at (wall clock, ms since the epoch)
      the first request leaves at that moment, so tests can line clients up
      after python's start-up jitter; with --linger-ms it keeps receiving
      (not sending) that long once served, so replies still in flight do not
      land in the next client on this host (they count as "late"). Prints:
      {"tag", "sent", "replies": [i...], "first_reply_ms", "elapsed_ms",
       "foreign_spi": {"<spi>": n}, "bad": n, "not_ours": n, "late": n}
      With --pushes N the client stops lingering once N packets pushed by the
      server (payload 'push:<our c2s>:k', decrypted under our SA) arrived;
      they are counted in "pushes" (also when N is 0).
      foreign_spi counts ESP from the server with an SPI that is not ours
      (another host's SA delivered here); not_ours counts replies that
      decrypted under our SA but carried another tag.
"""
import json
import select
import signal
import socket
import struct
import sys
import time

from scapy.layers.inet import IP, UDP
from scapy.layers.ipsec import ESP, SecurityAssociation
from scapy.packet import Raw

import peerutil

CRYPT = 'AES-CBC'
AUTH = 'SHA2-256-128'


def parse_pair(s):
    c2s, s2c, ek, ak = s.split(',')
    return int(c2s, 0), int(s2c, 0), bytes.fromhex(ek), bytes.fromhex(ak)


def sa(spi, ek, ak, src='0.0.0.0', dst='0.0.0.0'):
    return SecurityAssociation(ESP, spi=spi, crypt_algo=CRYPT, crypt_key=ek, auth_algo=AUTH, auth_key=ak,
                               tunnel_header=IP(src=src, dst=dst))


def esp_bytes(pkt):
    """The ESP part of an encrypted IP/ESP packet (what a proto-50 raw socket sends)."""
    b = bytes(pkt)
    return b[(b[0] & 0x0F) * 4:]


def outer(data):
    """(src, spi, ip packet) of a received IPv4 packet carrying ESP, else None."""
    if len(data) < 28 or data[0] >> 4 != 4 or data[9] != 50:
        return None
    ihl = (data[0] & 0x0F) * 4
    src = socket.inet_ntoa(data[12:16])
    spi = struct.unpack('!I', data[ihl:ihl + 4])[0]
    return src, spi, data


def parse_opts(args, defaults, multi=()):
    o = dict(defaults)
    for m in multi:
        o[m] = []
    i = 0
    while i < len(args):
        k = args[i]
        if k not in o:
            sys.exit('esp.py: unknown option %s' % k)
        if k in multi:
            o[k].append(args[i + 1])
        else:
            o[k] = args[i + 1]
        i += 2
    return o


class Stop(Exception):
    pass


push_requested = []


def _push(*_):
    push_requested.append(True)


def _stop(*_):
    raise Stop()


def server(args):
    o = parse_opts(args, {'--duration': '0', '--reply-delay-ms': '0'}, multi=('--sa', '--hold'))
    delay = int(o['--reply-delay-ms']) / 1000.0
    # per-SA hold-back (client-to-server SPI -> seconds), overriding --reply-delay-ms
    holds = {int(h.split(':')[0]): int(h.split(':')[1]) / 1000.0 for h in o['--hold']}
    pending = []  # (due, bytes, dst): replies held back to mimic a slow peer
    pairs = [parse_pair(s) for s in o['--sa']]
    by_c2s = {}
    for c2s, s2c, ek, ak in pairs:
        by_c2s[c2s] = {'rx': sa(c2s, ek, ak), 'tx': sa(s2c, ek, ak), 'requests': 0, 'replies': 0, 'peers': []}
    unknown = {}
    bad = 0
    sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, 50)
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGUSR1, _push)
    for st in by_c2s.values():
        st['pushed'] = 0
    print(json.dumps({'ready': True}), flush=True)
    end = time.monotonic() + float(o['--duration']) if float(o['--duration']) > 0 else None
    try:
        while end is None or time.monotonic() < end:
            while push_requested:
                push_requested.pop()
                for c2s, st in by_c2s.items():
                    for peer in st['peers']:
                        for k in range(3):
                            msg = IP(src='10.99.255.1', dst='10.99.0.2') / UDP(sport=7, dport=5000) / Raw(('push:%d:%d' % (c2s, k)).encode())
                            st['tx'].tunnel_header = IP(dst=peer)
                            sock.sendto(esp_bytes(st['tx'].encrypt(msg)), (peer, 0))
                            st['pushed'] += 1
            now = time.monotonic()
            while pending and pending[0][0] <= now:
                _, b, dst = pending.pop(0)
                sock.sendto(b, (dst, 0))
            wait = 0.2 if not pending else max(0.0, min(0.2, pending[0][0] - now))
            r, _, _ = select.select([sock], [], [], wait)
            if not r:
                continue
            data, _ = sock.recvfrom(65535)
            p = outer(data)
            if p is None:
                continue
            src, spi, raw_ip = p
            st = by_c2s.get(spi)
            if st is None:
                unknown[str(spi)] = unknown.get(str(spi), 0) + 1
                continue
            try:
                inner = st['rx'].decrypt(IP(raw_ip))
            except Exception:
                bad += 1
                continue
            if not inner.haslayer(UDP):
                bad += 1
                continue
            st['requests'] += 1
            if src not in st['peers']:
                st['peers'].append(src)
            u = inner[UDP]
            reply = IP(src=inner.dst, dst=inner.src) / UDP(sport=u.dport, dport=u.sport) / Raw(b'reply:' + bytes(u.payload))
            st['tx'].tunnel_header = IP(dst=src)
            b = esp_bytes(st['tx'].encrypt(reply))
            d = holds.get(spi, delay)
            if d > 0:
                pending.append((time.monotonic() + d, b, src))
                pending.sort(key=lambda x: x[0])
            else:
                sock.sendto(b, (src, 0))
            st['replies'] += 1
    except Stop:
        pass
    print(json.dumps({'sas': {str(k): {'requests': v['requests'], 'replies': v['replies'], 'peers': v['peers'], 'pushed': v['pushed']}
                              for k, v in by_c2s.items()},
                      'unknown_spi': unknown, 'bad': bad}), flush=True)


def client(args):
    o = parse_opts(args, {'--server': None, '--sa': None, '--tag': 'c', '--want': '5', '--interval-ms': '200',
                          '--timeout': '10', '--inner-src': '10.99.0.2', '--inner-dst': '10.99.255.1',
                          '--start-at': '0', '--linger-ms': '0', '--pushes': '0'})
    srv = o['--server']
    c2s, s2c, ek, ak = parse_pair(o['--sa'])
    tx, rx = sa(c2s, ek, ak, dst=srv), sa(s2c, ek, ak)
    tag = o['--tag']
    want = int(o['--want'])
    interval = int(o['--interval-ms']) / 1000.0
    sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, 50)
    start_at = float(o['--start-at']) / 1000.0  # wall clock, ms since the epoch
    if start_at > 0:
        time.sleep(max(0.0, start_at - time.time()))
    t0 = time.monotonic()
    deadline = t0 + float(o['--timeout'])
    res = {'tag': tag, 'sent': 0, 'replies': [], 'first_reply_ms': None, 'elapsed_ms': 0, 'foreign_spi': {},
           'bad': 0, 'not_ours': 0, 'send_errors': 0, 'late': 0, 'pushes': 0}
    want_pushes = int(o['--pushes'])
    push_prefix = ('push:%d:' % c2s).encode()
    next_send = t0
    seq = 0
    prefix = ('reply:%s:' % tag).encode()
    linger = int(o['--linger-ms']) / 1000.0
    stop_at = None  # once served: keep receiving (not sending) until then
    while time.monotonic() < deadline:
        now = time.monotonic()
        if stop_at is None and len(res['replies']) >= want:
            res['elapsed_ms'] = int((now - t0) * 1000)
            stop_at = now + linger
        if stop_at is not None and (now >= stop_at or (want_pushes > 0 and res['pushes'] >= want_pushes)):
            break
        if stop_at is None and now >= next_send:
            req = IP(src=o['--inner-src'], dst=o['--inner-dst']) / UDP(sport=5000, dport=7) / Raw(('%s:%d' % (tag, seq)).encode())
            try:
                sock.sendto(esp_bytes(tx.encrypt(req)), (srv, 0))
            except OSError:
                res['send_errors'] += 1
            res['sent'] += 1
            seq += 1
            next_send = now + interval
        r, _, _ = select.select([sock], [], [], max(0.0, min(next_send if stop_at is None else stop_at, deadline) - time.monotonic()))
        if not r:
            continue
        try:
            data, _ = sock.recvfrom(65535)
        except OSError:
            continue
        p = outer(data)
        if p is None or p[0] != srv:
            continue
        _, spi, raw_ip = p
        if spi != s2c:
            res['foreign_spi'][str(spi)] = res['foreign_spi'].get(str(spi), 0) + 1
            continue
        try:
            inner = rx.decrypt(IP(raw_ip))
            load = bytes(inner[UDP].payload)
        except Exception:
            res['bad'] += 1
            continue
        if load.startswith(push_prefix):
            res['pushes'] += 1
            continue
        if not load.startswith(prefix):
            res['not_ours'] += 1
            continue
        n = int(load[len(prefix):])
        if stop_at is not None:
            res['late'] += 1
        elif n not in res['replies']:
            res['replies'].append(n)
            if res['first_reply_ms'] is None:
                res['first_reply_ms'] = int((time.monotonic() - t0) * 1000)
    if stop_at is None:
        res['elapsed_ms'] = int((time.monotonic() - t0) * 1000)
    print(json.dumps(res), flush=True)


if __name__ == '__main__':
    peerutil.main('esp.py', {'server': server, 'client': client})
