#!/usr/bin/env python3
"""Peers for test/netns/flowoffload.test.ts (one TCP connection the test steers).

  server PORT        accept one connection; print {"alias": its source port,
                     "isn": the server's initial sequence number (read off
                     eth0 as the SYN-ACK leaves)}; then echo everything back,
                     printing {"got": total bytes received} after each read
  client HOST PORT   connect; print "connected"; then per stdin line
                     "send N" (the k-th line): send N bytes, wait for the N
                     echoed, print {"k": k, "echoed": N} (or {"k": k,
                     "error": ...} after 5 s)
  rst SRC SPORT DST DPORT SEQ
                     send one TCP RST with that sequence number (raw socket)
"""
import json
import socket
import struct
import sys
import time


def out(obj):
    print(json.dumps(obj) if not isinstance(obj, str) else obj, flush=True)


def server(port):
    # ETH_P_ALL: only those taps see what the host sends
    sniff = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
    sniff.bind(("eth0", 0))
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("0.0.0.0", port))
    ls.listen(1)
    out("ready")
    conn, peer = ls.accept()
    isn = None
    sniff.settimeout(5)
    while isn is None:
        frame = sniff.recv(65535)
        ip = frame[14:]
        if frame[12:14] != b"\x08\x00" or ip[9] != 6:
            continue
        l4 = ip[(ip[0] & 15) * 4:]
        sport, dport, seq = struct.unpack("!HHI", l4[:8])
        if sport == port and dport == peer[1] and l4[13] & 0x12 == 0x12:
            isn = seq
    sniff.close()
    out({"alias": peer[1], "isn": isn})
    got = 0
    while True:
        data = conn.recv(65536)
        if not data:
            break
        got += len(data)
        conn.sendall(data)
        out({"got": got})


def client(host, port):
    s = socket.create_connection((host, port), timeout=5)
    out("connected")
    for k, line in enumerate(sys.stdin):
        n = int(line.split()[1])
        left = n
        try:
            s.sendall(b"x" * n)
            while left > 0:
                data = s.recv(left)
                if not data:
                    raise OSError("closed by the peer")
                left -= len(data)
            out({"k": k, "echoed": n})
        except OSError as e:
            out({"k": k, "error": str(e)})


def csum(b):
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def rst(src, sport, dst, dport, seq):
    s_ip, d_ip = socket.inet_aton(src), socket.inet_aton(dst)
    tcp = struct.pack("!HHIIBBHHH", sport, dport, seq, 0, 5 << 4, 0x04, 0, 0, 0)
    c = csum(s_ip + d_ip + struct.pack("!BBH", 0, 6, len(tcp)) + tcp)
    tcp = tcp[:16] + struct.pack("!H", c) + tcp[18:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 0x4242, 0, 64, 6, 0, s_ip, d_ip)
    ip = ip[:10] + struct.pack("!H", csum(ip)) + ip[12:]
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    s.sendto(ip + tcp, (dst, 0))


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "server":
        server(int(sys.argv[2]))
    elif cmd == "client":
        client(sys.argv[2], int(sys.argv[3]))
    elif cmd == "rst":
        rst(sys.argv[2], int(sys.argv[3]), sys.argv[4], int(sys.argv[5]), int(sys.argv[6]) & 0xFFFFFFFF)
        time.sleep(0.1)
