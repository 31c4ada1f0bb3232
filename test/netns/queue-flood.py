#!/usr/bin/env python3
# Peer for the queue discipline test (test/netns/queue.test.ts), stdlib only.
#   queue-flood.py raw DST SECONDS   floods DST for SECONDS with what is not one
#       flow: ESP (SPI 0x1001), GRE, ICMP echo requests, IPv4 fragments (UDP, MF
#       set, first and later pieces) and blind TCP ACKs, one claiming ECT(1)
#       and one claiming nothing, in rotation, from a raw socket as fast as it can; prints JSON counts sent
#       per kind.
#   queue-flood.py ask DST PORT N     N UDP questions to DST:PORT, one at a time,
#       each retried up to 5 times (1 s apart: the path may lose a datagram);
#       prints JSON {"asked": N, "answered": k}.
import json, socket, struct, sys, time

def ip_header(proto, dst, payload_len, frag=0, ident=0, tos=0):
    # The kernel fills in the source, total length and checksum for IP_HDRINCL.
    return struct.pack('!BBHHHBBH4s4s', 0x45, tos, 20 + payload_len, ident, frag, 64, proto, 0,
                       b'\0\0\0\0', socket.inet_aton(dst))

def raw(dst, seconds):
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
    esp = struct.pack('!II', 0x1001, 1) + b'\0' * 28
    gre = struct.pack('!HH', 0, 0x0800) + b'\0' * 28
    icmp_body = struct.pack('!BBHHH', 8, 0, 0, 0x7171, 1) + b'q' * 24
    c = sum(struct.unpack('!%dH' % (len(icmp_body) // 2), icmp_body))
    while c >> 16:
        c = (c & 0xffff) + (c >> 16)
    icmp = icmp_body[:2] + struct.pack('!H', ~c & 0xffff) + icmp_body[4:]
    frag_first = struct.pack('!HHHH', 40000, 9, 40, 0) + b'f' * 24   # UDP header + 24 bytes, MF
    frag_later = b'g' * 32                                           # offset 4 (32 bytes), MF
    tcp_ack = struct.pack('!HHIIBBHHH', 40001, 5201, 1, 1, 0x50, 0x10, 512, 0, 0) + b't' * 12  # checksum 0: never answered
    pkts = [
        ('esp', ip_header(50, dst, len(esp)) + esp),
        ('gre', ip_header(47, dst, len(gre)) + gre),
        ('icmp', ip_header(1, dst, len(icmp)) + icmp),
        ('frag', ip_header(17, dst, len(frag_first), 0x2000, 0x4242) + frag_first),
        ('frag', ip_header(17, dst, len(frag_later), 0x2000 | 4, 0x4343) + frag_later),
        ('tcp', ip_header(6, dst, len(tcp_ack), tos=1) + tcp_ack),
        ('tcp', ip_header(6, dst, len(tcp_ack)) + tcp_ack),
    ]
    sent = {k: 0 for k, _ in pkts}
    errors = 0
    end = time.time() + seconds
    while time.time() < end:
        for _ in range(200):
            for k, p in pkts:
                try:
                    s.sendto(p, (dst, 0))
                    sent[k] += 1
                except OSError:
                    errors += 1
    sent['errors'] = errors
    print(json.dumps(sent), flush=True)

def ask(dst, port, n):
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.settimeout(1.0)
    answered = 0
    for i in range(n):
        q = b'q%d' % i
        for _ in range(5):
            u.sendto(q, (dst, port))
            try:
                u.recvfrom(2048)
                answered += 1
                break
            except socket.timeout:
                pass
    print(json.dumps({'asked': n, 'answered': answered}), flush=True)

if __name__ == '__main__':
    if sys.argv[1] == 'raw':
        raw(sys.argv[2], float(sys.argv[3]))
    elif sys.argv[1] == 'ask':
        ask(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
