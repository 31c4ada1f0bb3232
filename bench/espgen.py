#!/usr/bin/env python3
"""ESP (IP protocol 50) and plain UDP traffic for bench/e2e.js --mix. Standard library only.

Packets are 64 bytes on the wire (L3): IPv4 20 (built by the kernel) +
SPI 4 + sequence number 4 + 36 bytes of payload. Nothing is encrypted: the
routers under test only look at the addresses and the SPI.

  espgen.py send --dst A --spi S --reply-spi R [--handshake-ms 1500]
      LAN side. Sends one packet with SPI S and waits (up to --handshake-ms)
      for an ESP packet with SPI R, then prints one JSON line
      {"event":"handshake","replied":bool,"ms":...}. Then waits for a line
      "go SECONDS" on stdin, sends as fast as it can for SECONDS (one
      pre-built packet, sendto in a tight loop), and prints one JSON line
      {"event":"done","sent":N,"errors":E,"seconds":T,"received":{spi:count}}
      where "received" counts the ESP packets that reached this host, by SPI
      (drained after the blast). EOF on stdin before "go" ends it quietly.

  espgen.py udp --dst A --dport P [--sport P]
      LAN side, plain UDP (the mix's NAT-T flow: 4500 -> 4500): binds --sport,
      connects to A:P, prints {"event":"ready"}, waits for "go SECONDS" like
      send, blasts 36-byte payloads (64 bytes L3) and prints the same "done"
      line (without "received").

  espgen.py recv [--expect N] [--reply-xor X]
      WAN side. For the first packet of every SPI it sees, answers once to the
      packet's source with SPI (spi ^ X) (default X = 0x80000000) and prints
      {"event":"spi","spi":"0x...","src":"a.b.c.d","reply":"0x..."}. Prints
      {"event":"ready"} once the socket is open; exits after N distinct SPIs
      (default: never), on stdin EOF, or on SIGTERM.
"""
import argparse
import json
import os
import select
import signal
import socket
import struct
import sys
import time

IPPROTO_ESP = 50
PAYLOAD = 36


def out(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def spi_arg(s):
    v = int(s, 0)
    if not 0 < v < 1 << 32:
        raise argparse.ArgumentTypeError("SPI must be 1..2^32-1")
    return v


def esp_packet(spi, seq):
    return struct.pack("!II", spi, seq) + bytes(range(PAYLOAD))


def parse(buf):
    """(src, spi) of a received IPv4 packet (raw sockets deliver the IP header), or None."""
    if len(buf) < 20:
        return None
    ihl = (buf[0] & 0x0F) * 4
    if len(buf) < ihl + 8:
        return None
    return socket.inet_ntoa(buf[12:16]), struct.unpack_from("!I", buf, ihl)[0]


def wait_go():
    """SECONDS from a "go SECONDS" line on stdin, or None (EOF, anything else)."""
    line = sys.stdin.readline().split()
    if len(line) != 2 or line[0] != "go":
        return None
    return float(line[1])


def blast(send, pkt, seconds):
    """send(pkt) in a tight loop for `seconds`; returns (sent, errors, elapsed)."""
    mono = time.monotonic
    tries = 0
    errors = 0
    start = mono()
    end = start + seconds
    while True:
        for _ in range(512):
            try:
                send(pkt)
            except OSError:  # ENOBUFS, a queued ICMP error: not sent
                errors += 1
        tries += 512
        if mono() >= end:
            break
    return tries - errors, errors, mono() - start


def raw_socket():
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, IPPROTO_ESP)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
    return s


def cmd_send(a):
    s = raw_socket()
    addr = (a.dst, 0)
    t0 = time.monotonic()
    s.sendto(esp_packet(a.spi, 1), addr)
    replied = False
    deadline = t0 + a.handshake_ms / 1000
    while not replied:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        r, _, _ = select.select([s], [], [], left)
        if not r:
            break
        p = parse(s.recv(2048))
        if p and p[1] == a.reply_spi:
            replied = True
    out({"event": "handshake", "replied": replied, "ms": round((time.monotonic() - t0) * 1000, 1)})

    seconds = wait_go()
    if seconds is None:
        return 0
    sent, errors, elapsed = blast(lambda pkt: s.sendto(pkt, addr), esp_packet(a.spi, 2), seconds)

    received = {}
    s.setblocking(False)
    while True:
        try:
            p = parse(s.recv(2048))
        except (BlockingIOError, InterruptedError):
            break
        if p:
            k = "0x%08x" % p[1]
            received[k] = received.get(k, 0) + 1
    out({"event": "done", "sent": sent, "errors": errors, "seconds": round(elapsed, 4), "received": received})
    return 0


def cmd_udp(a):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
    s.bind(("0.0.0.0", a.sport))
    s.connect((a.dst, a.dport))
    out({"event": "ready"})
    seconds = wait_go()
    if seconds is None:
        return 0
    sent, errors, elapsed = blast(s.send, bytes(range(PAYLOAD)), seconds)
    out({"event": "done", "sent": sent, "errors": errors, "seconds": round(elapsed, 4)})
    return 0


def cmd_recv(a):
    s = raw_socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    seen = {}
    out({"event": "ready"})
    watch = [s, sys.stdin]
    while a.expect <= 0 or len(seen) < a.expect:
        r, _, _ = select.select(watch, [], [])
        if sys.stdin in r and not os.read(sys.stdin.fileno(), 4096):
            break
        if s not in r:
            continue
        p = parse(s.recv(2048))
        if not p or p[1] in seen:
            continue
        src, spi = p
        reply = spi ^ a.reply_xor
        seen[spi] = src
        s.sendto(esp_packet(reply, 1), (src, 0))
        out({"event": "spi", "spi": "0x%08x" % spi, "src": src, "reply": "0x%08x" % reply})
    return 0


def main():
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    ap = argparse.ArgumentParser(description="ESP generator/responder for bench/e2e.js --mix")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("send")
    p.add_argument("--dst", required=True)
    p.add_argument("--spi", type=spi_arg, required=True)
    p.add_argument("--reply-spi", type=spi_arg, required=True)
    p.add_argument("--handshake-ms", type=float, default=1500)
    p = sub.add_parser("udp")
    p.add_argument("--dst", required=True)
    p.add_argument("--dport", type=int, required=True)
    p.add_argument("--sport", type=int, default=0)
    p = sub.add_parser("recv")
    p.add_argument("--expect", type=int, default=0)
    p.add_argument("--reply-xor", type=spi_arg, default=0x80000000)
    a = ap.parse_args()
    try:
        return {"send": cmd_send, "udp": cmd_udp, "recv": cmd_recv}[a.cmd](a)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
