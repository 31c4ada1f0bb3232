#!/usr/bin/python3
"""Crafted and malformed VPN packets for NAT robustness tests, plus the
receiving ends that show what crossed the router.

  crafted.py send --dst IP --kind gre|esp|ip [options] [--count N] [--interval-ms MS]
      Builds the packet with scapy (IP header, checksums) and sends it from
      this namespace through an IPPROTO_RAW socket (the kernel routes it and
      resolves the next hop). Prints {"sent": n, "hex": "<first packet>"}.
      gre:  --version V (1)  --proto P (0x880b)  --call-id C (0x1234)
            --no-key  --seq S  --ack A  --flags F (raw first byte, overrides
            the key/seq bits)  --payload-hex H (ff03c021 + 4 bytes of LCP)
            --payload-len L (the length field; default the real length)
      esp:  --spi S (0)  --seq N (1)  --payload-hex H (32 random bytes)
      ip:   --proto P  --payload-hex H
      any:  --truncate N (send only the first N bytes of the IP payload; the
            IP length is fixed up) --ttl T  --frag-offset O (in 8-byte units)
            --more-fragments

  crafted.py capture --proto P [--ms MS] [--from IP]
      Raw IP-protocol-P socket; after MS ms (1000) prints
      {"packets": [{"src", "dst", "hex"}...]} (whole IP packets, max 200).

  crafted.py sink --port P [--ms MS]
      TCP listener; prints {"listening": true}, then after MS ms (or SIGTERM)
      {"connections": [{"peer": "ip:port", "hex": "<all bytes received>"}]}.
"""
import json
import os
import select
import signal
import socket
import struct
import sys
import time

from scapy.layers.inet import IP
from scapy.packet import Raw


def opts(args, flags=()):
    o = {}
    i = 0
    while i < len(args):
        k = args[i]
        if not k.startswith('--'):
            sys.exit('crafted.py: unexpected %s' % k)
        if k[2:] in flags:
            o[k[2:]] = True
            i += 1
        else:
            o[k[2:]] = args[i + 1]
            i += 2
    return o


def num(o, k, default):
    return int(o[k], 0) if k in o else default


def build_gre(o):
    payload = bytes.fromhex(o.get('payload-hex', 'ff03c0210101000a05061a2b3c4d'))
    version = num(o, 'version', 1)
    flags = 0x00 if 'no-key' in o else 0x20
    seq = num(o, 'seq', None) if 'seq' in o else None
    ack = num(o, 'ack', None) if 'ack' in o else None
    if seq is not None:
        flags |= 0x10
    if 'flags' in o:
        flags = num(o, 'flags', 0)
    ver = (0x80 if ack is not None else 0) | (version & 0x07)
    h = struct.pack('!BBH', flags, ver, num(o, 'proto', 0x880B))
    if flags & 0x20:  # key: payload length + call id in enhanced GRE
        h += struct.pack('!HH', num(o, 'payload-len', len(payload)), num(o, 'call-id', 0x1234))
    if flags & 0x10:
        h += struct.pack('!I', seq if seq is not None else 1)
    if ver & 0x80:
        h += struct.pack('!I', ack)
    return 47, h + payload


def build_esp(o):
    payload = bytes.fromhex(o['payload-hex']) if 'payload-hex' in o else os.urandom(32)
    return 50, struct.pack('!II', num(o, 'spi', 0), num(o, 'seq', 1)) + payload


def build_ip(o):
    return num(o, 'proto', 253), bytes.fromhex(o.get('payload-hex', ''))


def send(args):
    o = opts(args, flags=('no-key', 'more-fragments'))
    kind = o.get('kind', 'gre')
    proto, body = {'gre': build_gre, 'esp': build_esp, 'ip': build_ip}[kind](o)
    if 'truncate' in o:
        body = body[:int(o['truncate'])]
    pkt = IP(dst=o['dst'], proto=proto, ttl=num(o, 'ttl', 64), frag=num(o, 'frag-offset', 0),
             flags='MF' if 'more-fragments' in o else 0) / Raw(body)
    data = bytes(pkt)
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    count = num(o, 'count', 1)
    gap = num(o, 'interval-ms', 20) / 1000.0
    sent = 0
    for k in range(count):
        if k:
            time.sleep(gap)
        s.sendto(data, (o['dst'], 0))
        sent += 1
    print(json.dumps({'sent': sent, 'hex': data.hex()}), flush=True)


class Stop(Exception):
    pass


def _stop(*_):
    raise Stop()


def capture(args):
    o = opts(args)
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, num(o, 'proto', 47))
    signal.signal(signal.SIGTERM, _stop)
    print(json.dumps({'listening': True}), flush=True)
    end = time.monotonic() + num(o, 'ms', 1000) / 1000.0
    out = []
    try:
        while time.monotonic() < end:
            r, _, _ = select.select([s], [], [], max(0.0, end - time.monotonic()))
            if not r:
                continue
            d = s.recv(65535)
            src = socket.inet_ntoa(d[12:16])
            if 'from' in o and src != o['from']:
                continue
            if len(out) < 200:
                out.append({'src': src, 'dst': socket.inet_ntoa(d[16:20]), 'hex': d.hex()})
    except Stop:
        pass
    print(json.dumps({'packets': out}), flush=True)


def sink(args):
    o = opts(args)
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(('0.0.0.0', num(o, 'port', 1723)))
    ls.listen(16)
    signal.signal(signal.SIGTERM, _stop)
    print(json.dumps({'listening': True}), flush=True)
    end = time.monotonic() + num(o, 'ms', 5000) / 1000.0
    live = {}  # socket -> record
    recs = []  # every connection, in accept order
    try:
        while time.monotonic() < end:
            r, _, _ = select.select([ls] + list(live), [], [], max(0.0, end - time.monotonic()))
            for sk in r:
                if sk is ls:
                    c, peer = ls.accept()
                    live[c] = {'peer': '%s:%d' % peer, 'hex': '', 'closed': False}
                    recs.append(live[c])
                    continue
                try:
                    d = sk.recv(65535)
                except OSError:
                    d = b''
                if d:
                    live[sk]['hex'] += d.hex()
                else:
                    live.pop(sk)['closed'] = True
                    sk.close()
    except Stop:
        pass
    print(json.dumps({'connections': recs}), flush=True)


if __name__ == '__main__':
    cmd = sys.argv[1] if len(sys.argv) >= 2 else ''
    if cmd == 'send':
        send(sys.argv[2:])
    elif cmd == 'capture':
        capture(sys.argv[2:])
    elif cmd == 'sink':
        sink(sys.argv[2:])
    else:
        sys.exit('usage: crafted.py send|capture|sink ...')
