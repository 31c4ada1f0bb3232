#!/usr/bin/env python3
# Peer for the USO test in test/netns/offload.test.ts, stdlib only.
#   uso-peer.py listen PORT N SECONDS
#       bind UDP PORT, print "ready", then print one JSON line per datagram
#       received ({"from": ip, "port": p, "cookie": first 8 bytes hex, "len": n})
#       until N came or SECONDS passed; then "done".
#   uso-peer.py send HOST PORT SIZE COOKIE[:RCOOKIE] ...
#       from UDP port 500, one sendto() with UDP_SEGMENT = SIZE carrying one
#       ISAKMP message of SIZE bytes per cookie: the kernel hands it on as one
#       UDP GSO super-packet (USO) where the devices take it.
import json, socket, sys, time

SOL_UDP = 17
UDP_SEGMENT = 103  # linux/udp.h


def listen(port, n, seconds):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(('0.0.0.0', port))
    print('ready', flush=True)
    deadline = time.time() + seconds
    got = 0
    while got < n and time.time() < deadline:
        s.settimeout(max(0.05, deadline - time.time()))
        try:
            d, a = s.recvfrom(65535)
        except socket.timeout:
            break
        got += 1
        print(json.dumps({'from': a[0], 'port': a[1], 'cookie': d[:8].hex(), 'len': len(d)}), flush=True)
    print('done', flush=True)


def isakmp(icookie, rcookie, size):
    m = bytearray(size)
    m[0:8] = bytes.fromhex(icookie)
    m[8:16] = bytes.fromhex(rcookie)
    m[16:20] = bytes([33, 0x20, 34, 0x08])
    m[24:28] = size.to_bytes(4, 'big')
    for i in range(28, size):
        m[i] = i & 0xff
    return bytes(m)


def send(host, port, size, cookies):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(('0.0.0.0', 500))
    s.setsockopt(SOL_UDP, UDP_SEGMENT, size)
    payload = b''.join(isakmp(*(c.split(':') + ['0' * 16])[:2], size) for c in cookies)
    s.sendto(payload, (host, port))
    print('sent', len(payload), flush=True)


if __name__ == '__main__':
    cmd = sys.argv[1]
    if cmd == 'listen':
        listen(int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]))
    elif cmd == 'send':
        send(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5:])
    else:
        sys.exit('usage: uso-peer.py listen PORT N SECONDS | send HOST PORT SIZE COOKIE[:RCOOKIE] ...')
