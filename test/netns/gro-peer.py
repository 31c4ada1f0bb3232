#!/usr/bin/env python3
"""UDP bursts for test/netns/gro.test.ts (GRO on write through the router).

  gro-peer.py send HOST PORT SPORT TAG BURSTS PER SIZE
      one connected UDP socket from SPORT (Linux numbers a connected socket's
      DF datagrams with consecutive IP IDs, and hands them to the router with
      NEEDS_CSUM through the veth): BURSTS bursts of PER datagrams of SIZE
      bytes sent back to back, 20 ms apart. Payload: TAG (1 byte), the
      sequence number (u32), then bytes derived from both.
  gro-peer.py listen PORT N TIMEOUT [OPENHOST OPENPORT]
      (first sends one datagram to OPENHOST:OPENPORT from PORT: a NAT mapping
      for the answers), prints 'ready', then receives until N datagrams or TIMEOUT s, and
      prints one JSON line: per source "ip:port" the tags, whether the
      sequence numbers came in order and complete (0..n-1), whether every
      payload is intact, and the sizes seen.
  gro-peer.py rawbad SRC DST SPORT DPORT COUNT SIZE ID0
      COUNT datagrams from a raw socket (IP_HDRINCL) with consecutive IP IDs
      from ID0, DF, and a deliberately wrong complete UDP checksum.
  gro-peer.py pktsend IFACE DSTMAC DST SPORT DPORT SPEC
      datagrams as Ethernet frames on a packet socket with PACKET_VNET_HDR
      and NEEDS_CSUM (what a sender with checksum offload hands over: the
      checksum field holds the pseudo-header sum), back to back, each as SPEC
      (JSON list of [src, id, ttl, tos, size, tag]) says: any source address,
      IP ID, TTL and TOS; sequence numbers count per tag.
  gro-peer.py txcsum IFACE 0|1
      tx checksumming of IFACE off or on (SIOCETHTOOL ETHTOOL_STXCSUM): with
      it off the kernel segments GSO packets and finishes their checksums
      before the device, so a capture behind it sees the datagrams as sent.
"""
import ctypes
import fcntl
import json
import socket
import struct
import sys
import time


def payload(tag, seq, size):
    head = bytes([tag]) + struct.pack('!I', seq)
    body = bytes(((seq * 7 + i + tag) & 0xff) for i in range(max(0, size - 5)))
    return (head + body)[:size]


def csum(b, s=0):
    if len(b) % 2:
        b += b'\0'
    s += sum(struct.unpack('!%dH' % (len(b) // 2), b))
    while s >> 16:
        s = (s & 0xffff) + (s >> 16)
    return s


def ip_header(src, dst, total, ident, ttl=64, tos=0):
    h = struct.pack('!BBHHHBBH4s4s', 0x45, tos, total, ident, 0x4000, ttl, 17, 0,
                    socket.inet_aton(src), socket.inet_aton(dst))
    c = ~csum(h) & 0xffff
    return h[:10] + struct.pack('!H', c) + h[12:]


def pseudo(src, dst, ulen):
    return csum(socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack('!BBH', 0, 17, ulen))


def send(host, port, sport, tag, bursts, per, size):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(('0.0.0.0', sport))
    s.connect((host, port))
    seq = 0
    for _ in range(bursts):
        for _ in range(per):
            s.send(payload(tag, seq, size))
            seq += 1
        time.sleep(0.02)


def listen(port, n, timeout, opener=None):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    # SO_RCVBUFFORCE (root): past net.core.rmem_max, so a burst is never lost in our own socket buffer
    s.setsockopt(socket.SOL_SOCKET, 33, 16 << 20)
    s.bind(('0.0.0.0', port))
    if opener:
        s.sendto(b'open', opener)
    print('ready', flush=True)
    end = time.time() + timeout
    got = {}
    total = 0
    while total < n and time.time() < end:
        s.settimeout(max(0.01, end - time.time()))
        try:
            d, a = s.recvfrom(65535)
        except socket.timeout:
            break
        total += 1
        k = '%s:%d' % a
        f = got.setdefault(k, {'tags': set(), 'seqs': [], 'intact': True, 'sizes': set()})
        if len(d) < 5:
            f['intact'] = False
            continue
        tag, seq = d[0], struct.unpack('!I', d[1:5])[0]
        f['tags'].add(tag)
        f['seqs'].append(seq)
        f['sizes'].add(len(d))
        if d != payload(tag, seq, len(d)):
            f['intact'] = False
    out = {}
    for k, f in got.items():
        seqs = f['seqs']
        out[k] = {'n': len(seqs), 'tags': sorted(f['tags']), 'inOrder': seqs == sorted(seqs),
                  'complete': seqs == list(range(len(seqs))), 'intact': f['intact'], 'sizes': sorted(f['sizes'])}
    print(json.dumps({'total': total, 'flows': out}), flush=True)


def rawbad(src, dst, sport, dport, count, size, id0):
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    for k in range(count):
        data = payload(0x42, k, size)
        ulen = 8 + len(data)
        good = ~csum(struct.pack('!HHHH', sport, dport, ulen, 0) + data, pseudo(src, dst, ulen)) & 0xffff
        bad = (good ^ 0x5a5a) or 1
        pkt = ip_header(src, dst, 20 + ulen, (id0 + k) & 0xffff) + struct.pack('!HHHH', sport, dport, ulen, bad) + data
        s.sendto(pkt, (dst, 0))


def pktsend(iface, dstmac, dst, sport, dport, spec):
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    PACKET_VNET_HDR = 15
    s.setsockopt(263, PACKET_VNET_HDR, 1)  # SOL_PACKET
    s.bind((iface, 0))
    mymac = s.getsockname()[4]
    eth = bytes.fromhex(dstmac.replace(':', '')) + mymac + b'\x08\x00'
    seqs = {}
    for src, ident, ttl, tos, size, tag in spec:
        seq = seqs.get(tag, 0)
        seqs[tag] = seq + 1
        data = payload(tag, seq, size)
        ulen = 8 + len(data)
        udp = struct.pack('!HHHH', sport, dport, ulen, pseudo(src, dst, ulen)) + data
        frame = eth + ip_header(src, dst, 20 + ulen, ident & 0xffff, ttl, tos) + udp
        # virtio_net_hdr: NEEDS_CSUM, no GSO, csum_start = the UDP header in the frame, csum_offset 6
        vnet = struct.pack('<BBHHHH', 1, 0, 0, 0, 14 + 20, 6)
        s.send(vnet + frame)


def txcsum(iface, on):
    SIOCETHTOOL = 0x8946
    ETHTOOL_STXCSUM = 0x17
    val = ctypes.create_string_buffer(struct.pack('II', ETHTOOL_STXCSUM, int(on)))
    ifr = struct.pack('16sP', iface.encode(), ctypes.addressof(val)) + b'\0' * 16
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    fcntl.ioctl(s.fileno(), SIOCETHTOOL, ifr)


def main(a):
    if a[0] == 'send':
        send(a[1], int(a[2]), int(a[3]), int(a[4]), int(a[5]), int(a[6]), int(a[7]))
    elif a[0] == 'listen':
        listen(int(a[1]), int(a[2]), float(a[3]), (a[4], int(a[5])) if len(a) > 5 else None)
    elif a[0] == 'rawbad':
        rawbad(a[1], a[2], int(a[3]), int(a[4]), int(a[5]), int(a[6]), int(a[7]))
    elif a[0] == 'pktsend':
        pktsend(a[1], a[2], a[3], int(a[4]), int(a[5]), json.loads(a[6]))
    elif a[0] == 'txcsum':
        txcsum(a[1], a[2] == '1')
    else:
        raise SystemExit(__doc__)


if __name__ == '__main__':
    main(sys.argv[1:])
