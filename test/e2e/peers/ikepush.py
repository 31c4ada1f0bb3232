#!/usr/bin/python3
"""ISAKMP headers over UDP 500 between a LAN host and a server, where the
server can speak first: for tests of IKE routing by cookie that must hold
after the NAT restarted (a responder's rekey or DPD after a NAT crash).

Only the 28-byte ISAKMP header (RFC 2408 3.1) is sent: initiator cookie,
responder cookie, next payload 0, version 1.0, exchange type, flags, message
ID, length. Plain UDP sockets bound to port 500; no IKE daemon involved.

  ikepush.py server
      Binds UDP 500. Answers every message from a new (address, port,
      initiator cookie) with exchange 2 (identity protection) and a random
      responder cookie of its own; prints {"ready": true}. SIGUSR1: sends 3
      informational messages (exchange 5) with both cookies to every peer it
      answered (the server speaks first). SIGTERM: prints
      {"peers": [{"addr", "port", "icookie", "rcookie", "pushed"}]}.

  ikepush.py client --server IP --cookie HEX16 [--timeout S] [--linger-ms MS] [--pushes N]
      Binds UDP 500 and sends main mode message 1 (exchange 2, responder
      cookie 0) every 300 ms until the answer with its cookie arrives, then
      keeps receiving for MS ms (or until N informationals with its cookie
      arrived). Prints {"icookie", "rcookie", "answered", "pushes",
      "push_sources": ["ip:port"...], "foreign": [icookie...]}.
"""
import json
import os
import select
import signal
import socket
import struct
import time

import peerutil


def header(ic, rc, exch, length=28):
    return ic + rc + struct.pack('!BBBBII', 0, 0x10, exch, 0, 0, length)


def parse(data):
    if len(data) < 28:
        return None
    return data[0:8], data[8:16], data[18]


def opts(args, defaults):
    return peerutil.opts(args, defaults, 'ikepush.py')


class Stop(Exception):
    pass


def _stop(*_):
    raise Stop()


push = []


def server(args):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(('0.0.0.0', 500))
    peers = {}
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGUSR1, lambda *_: push.append(1))
    print(json.dumps({'ready': True}), flush=True)
    try:
        while True:
            while push:
                push.pop()
                for p in peers.values():
                    for _ in range(3):
                        s.sendto(header(p['ic'], p['rc'], 5), (p['addr'], p['port']))
                        p['pushed'] += 1
            r, _, _ = select.select([s], [], [], 0.2)
            if not r:
                continue
            data, (addr, port) = s.recvfrom(65535)
            h = parse(data)
            if h is None:
                continue
            ic = h[0]
            key = (addr, port, ic)
            if key not in peers:
                peers[key] = {'addr': addr, 'port': port, 'ic': ic, 'rc': os.urandom(8), 'pushed': 0}
            s.sendto(header(ic, peers[key]['rc'], 2), (addr, port))
    except Stop:
        pass
    print(json.dumps({'peers': [{'addr': p['addr'], 'port': p['port'], 'icookie': p['ic'].hex(),
                                 'rcookie': p['rc'].hex(), 'pushed': p['pushed']} for p in peers.values()]}), flush=True)


def client(args):
    o = opts(args, {'--server': None, '--cookie': None, '--timeout': '10', '--linger-ms': '0', '--pushes': '0'})
    srv = o['--server']
    ic = bytes.fromhex(o['--cookie'])
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(('0.0.0.0', 500))
    res = {'icookie': ic.hex(), 'rcookie': None, 'answered': False, 'pushes': 0, 'push_sources': [], 'foreign': []}
    deadline = time.monotonic() + float(o['--timeout'])
    next_send = 0.0
    linger_end = None
    want = int(o['--pushes'])
    while True:
        now = time.monotonic()
        if linger_end is None and now >= deadline:
            break
        if linger_end is not None and (now >= linger_end or (want > 0 and res['pushes'] >= want)):
            break
        if not res['answered'] and now >= next_send:
            s.sendto(header(ic, b'\0' * 8, 2), (srv, 500))
            next_send = now + 0.3
        r, _, _ = select.select([s], [], [], 0.05)
        if not r:
            continue
        data, (addr, port) = s.recvfrom(65535)
        h = parse(data)
        if h is None or addr != srv:
            continue
        if h[0] != ic:
            res['foreign'].append(h[0].hex())
            continue
        if h[2] == 2 and not res['answered']:
            res['answered'] = True
            res['rcookie'] = h[1].hex()
            linger_end = time.monotonic() + int(o['--linger-ms']) / 1000.0
        elif h[2] == 5:
            res['pushes'] += 1
            src = '%s:%d' % (addr, port)
            if src not in res['push_sources']:
                res['push_sources'].append(src)
    print(json.dumps(res), flush=True)


if __name__ == '__main__':
    peerutil.main('ikepush.py', {'server': server, 'client': client})
