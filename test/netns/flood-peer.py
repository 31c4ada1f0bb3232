#!/usr/bin/env python3
# Peer for the flood acceptance test (test/netns/flood.test.ts), stdlib only.
#   flood-peer.py server PORT          UDP and TCP echo on PORT (WAN host)
#   flood-peer.py client HOST PORT S   one TCP connection opened first ("connected"),
#       then for S seconds every 100 ms: one echo over that connection and one
#       UDP question from a fresh socket (a new flow each time); prints JSON counts.
#   flood-peer.py hold HOST PORT S     one TCP connection, one echo ("connected LOCALPORT"),
#       then on "go": S seconds idle, one more echo; prints JSON {"answered": bool}.
import json, select, socket, sys, threading, time

def server(port):
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.bind(('0.0.0.0', port))
    t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    t.bind(('0.0.0.0', port))
    t.listen(16)
    def udp_loop():
        while True:
            d, a = u.recvfrom(2048)
            u.sendto(d, a)
    def conn(c):
        with c:
            while True:
                d = c.recv(4096)
                if not d:
                    return
                c.sendall(d)
    threading.Thread(target=udp_loop, daemon=True).start()
    print('ready', flush=True)
    while True:
        c, _ = t.accept()
        threading.Thread(target=conn, args=(c,), daemon=True).start()

def client(host, port, seconds):
    t = socket.create_connection((host, port), timeout=5)
    t.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    print('connected', flush=True)
    sys.stdin.readline()  # the test says go once the flood runs
    res = {'tcpAsked': 0, 'tcpAnswered': 0, 'udpAsked': 0, 'udpAnswered': 0}
    buf = b''
    end = time.time() + seconds
    i = 0
    while time.time() < end:
        i += 1
        tok = b'<%08d>' % i
        res['tcpAsked'] += 1
        t.sendall(tok)
        deadline = time.time() + 1.0
        while tok not in buf and time.time() < deadline:
            r, _, _ = select.select([t], [], [], max(0.0, deadline - time.time()))
            if r:
                d = t.recv(4096)
                if not d:
                    break
                buf += d
        if tok in buf:
            res['tcpAnswered'] += 1
            buf = buf[buf.index(tok) + len(tok):]
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        u.bind(('0.0.0.0', 0))
        u.settimeout(1.0)
        res['udpAsked'] += 1
        u.sendto(tok, (host, port))
        try:
            while True:
                d, _ = u.recvfrom(2048)
                if d == tok:
                    res['udpAnswered'] += 1
                    break
        except socket.timeout:
            pass
        u.close()
        time.sleep(0.1)
    print(json.dumps(res), flush=True)

def hold(host, port, idle):
    t = socket.create_connection((host, port), timeout=5)
    t.sendall(b'<hello>')
    got = b''
    while b'<hello>' not in got:
        d = t.recv(4096)
        if not d:
            break
        got += d
    print('connected %d' % t.getsockname()[1], flush=True)
    sys.stdin.readline()
    time.sleep(idle)
    ok = False
    try:
        t.settimeout(5.0)
        t.sendall(b'<again>')
        got = b''
        deadline = time.time() + 5.0
        while b'<again>' not in got and time.time() < deadline:
            d = t.recv(4096)
            if not d:
                break
            got += d
        ok = b'<again>' in got
    except OSError:
        ok = False
    print(json.dumps({'answered': ok}), flush=True)

if __name__ == '__main__':
    if sys.argv[1] == 'server':
        server(int(sys.argv[2]))
    elif sys.argv[1] == 'hold':
        hold(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]))
    else:
        client(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]))
