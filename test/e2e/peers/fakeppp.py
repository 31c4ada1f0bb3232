#!/usr/bin/python3
"""A stand-in for pppd at both ends of a PPTP call, so PPTP runs without
kernel PPP support.

Both pptpd (server) and pptp --nolaunchpppd (client) carry PPP frames between
a pty and enhanced GRE; on the pty the frames are async HDLC (RFC 1662):
0x7e flags, 0x7d escapes, FCS-16. This script speaks that framing.

  fakeppp.py server [pppd args...]
      Started by pptpctrl in place of pppd, the pty on stdin/stdout. Writes
      one LCP Configure-Request (pptpctrl only starts reading GRE once the
      PPP side has spoken), then echoes every frame it receives. Env
      FAKEPPP_LOG=path appends one line per event. SIGUSR1: the server
      speaks first: 3 PPP IP frames 'push:<payload of the last IP frame it
      echoed>:k' (so a client can tell its own call's pushes from others').

  fakeppp.py client --server IP --tag T [--frames N] [--timeout S]
      Runs `pptp IP --nolaunchpppd --nohostroute` on a pty, sends N frames
      (PPP protocol 0x0021, payload "T:i"), resends the unanswered ones every
      300 ms, stops when every frame came back or at the timeout, hangs up
      (SIGTERM to pptp, which clears the call) and prints one JSON line:
      {"tag", "sent", "echoed": [payload...], "foreign": [payload...],
       "lcp": n, "bad_fcs": n, "first_echo_ms", "elapsed_ms", "pptp_rc", "pptp_log"}
"""
import json
import os
import select
import signal
import subprocess
import sys
import time
import tty

import peerutil

# ---------------------------------------------------------------------------
# RFC 1662 async HDLC

FLAG = 0x7E
ESC = 0x7D


def _fcs_table():
    t = []
    for b in range(256):
        v = b
        for _ in range(8):
            v = (v >> 1) ^ 0x8408 if v & 1 else v >> 1
        t.append(v)
    return t


FCS_TABLE = _fcs_table()


def fcs16(data, fcs=0xFFFF):
    for b in data:
        fcs = (fcs >> 8) ^ FCS_TABLE[(fcs ^ b) & 0xFF]
    return fcs


def encode(frame):
    """PPP frame (address/control/protocol/info) -> async HDLC bytes."""
    fcs = fcs16(frame) ^ 0xFFFF
    body = bytes(frame) + bytes([fcs & 0xFF, fcs >> 8])
    out = bytearray([FLAG])
    for b in body:
        if b < 0x20 or b in (FLAG, ESC):
            out += bytes([ESC, b ^ 0x20])
        else:
            out.append(b)
    out.append(FLAG)
    return bytes(out)


class Decoder:
    """Feeds raw pty bytes, yields (ok, frame-without-FCS)."""

    def __init__(self):
        self.buf = bytearray()
        self.esc = False

    def feed(self, data):
        out = []
        for b in data:
            if b == FLAG:
                if len(self.buf) >= 4:
                    ok = fcs16(self.buf) == 0xF0B8
                    out.append((ok, bytes(self.buf[:-2])))
                elif self.buf:
                    out.append((False, bytes(self.buf)))
                self.buf = bytearray()
                self.esc = False
            elif b == ESC:
                self.esc = True
            else:
                self.buf.append(b ^ 0x20 if self.esc else b)
                self.esc = False
        return out


def strip_header(frame):
    """Returns (protocol, info) of a PPP frame with or without ff 03."""
    if frame[:2] == b'\xff\x03':
        frame = frame[2:]
    if len(frame) >= 1 and frame[0] & 1:  # compressed protocol field
        return frame[0], frame[1:]
    if len(frame) < 2:
        return None, b''
    return (frame[0] << 8) | frame[1], frame[2:]


LCP_CONF_REQ = bytes.fromhex('ff03c021' '0101000a' '0506' '1a2b3c4d')  # Configure-Request, magic number


def write_all(fd, data):
    while data:
        try:
            n = os.write(fd, data)
        except BlockingIOError:
            select.select([], [fd], [], 1)
            continue
        data = data[n:]


# ---------------------------------------------------------------------------
# server: pppd substitute

def server():
    log_path = os.environ.get('FAKEPPP_LOG')

    def log(msg):
        if log_path:
            with open(log_path, 'a') as f:
                f.write('%.3f %d %s\n' % (time.time(), os.getpid(), msg))

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    signal.signal(signal.SIGHUP, lambda *_: sys.exit(0))
    last = [b'']

    def push(*_):
        for k in range(3):
            write_all(1, encode(b'\xff\x03\x00\x21' + b'push:' + last[0] + (':%d' % k).encode()))
        log('pushed last=%r' % (last[0],))

    signal.signal(signal.SIGUSR1, push)
    if os.isatty(0):
        tty.setraw(0)
    log('start args=%r' % (sys.argv[2:],))
    write_all(1, encode(LCP_CONF_REQ))
    dec = Decoder()
    echoed = 0
    while True:
        try:
            data = os.read(0, 65536)
        except OSError:
            break
        if not data:
            break
        for ok, frame in dec.feed(data):
            if not ok:
                log('bad fcs len=%d' % len(frame))
                continue
            write_all(1, encode(frame))
            echoed += 1
            proto, info = strip_header(frame)
            if proto == 0x0021:
                last[0] = info[:40]
            log('echo proto=%s info=%r' % (hex(proto) if proto is not None else None, info[:40]))
    log('exit echoed=%d' % echoed)


# ---------------------------------------------------------------------------
# client: drives pptp --nolaunchpppd

def client(args):
    opts = peerutil.opts(args, {'--frames': '5', '--timeout': '15', '--tag': 'c', '--server': None, '--resend-ms': '300'},
                         'fakeppp client')
    srv = opts['--server']
    if not srv:
        sys.exit('fakeppp client: --server needed')
    n = int(opts['--frames'])
    tag = opts['--tag']
    deadline = time.monotonic() + float(opts['--timeout'])
    resend = int(opts['--resend-ms']) / 1000.0

    master, slave = os.openpty()
    tty.setraw(slave)
    tty.setraw(master)
    errlog = '/tmp/fakeppp-pptp-%d.log' % os.getpid()
    errf = open(errlog, 'w+')
    p = subprocess.Popen(['pptp', srv, '--nolaunchpppd', '--nohostroute', '--loglevel', '1'],
                         stdin=slave, stdout=slave, stderr=errf, close_fds=True, start_new_session=True)
    os.close(slave)
    os.set_blocking(master, False)

    payloads = ['%s:%d' % (tag, k) for k in range(n)]
    want = set(payloads)
    got = []
    foreign = []
    lcp = 0
    bad = 0
    last_sent = {}
    sent = 0
    t0 = time.monotonic()
    first = None
    dec = Decoder()
    while time.monotonic() < deadline and want - set(got):
        now = time.monotonic()
        for pl in payloads:
            if pl in got:
                continue
            if now - last_sent.get(pl, -1e9) >= resend:
                write_all(master, encode(b'\xff\x03\x00\x21' + pl.encode()))
                last_sent[pl] = now
                sent += 1
        if p.poll() is not None:
            break
        r, _, _ = select.select([master], [], [], 0.05)
        if not r:
            continue
        try:
            data = os.read(master, 65536)
        except (BlockingIOError, InterruptedError):
            continue
        except OSError:
            break
        for ok, frame in dec.feed(data):
            if not ok:
                bad += 1
                continue
            proto, info = strip_header(frame)
            if proto == 0xC021:
                lcp += 1
            elif proto == 0x0021:
                s = info.decode('latin-1')
                if s in want:
                    if s not in got:
                        got.append(s)
                        if first is None:
                            first = int((time.monotonic() - t0) * 1000)
                else:
                    foreign.append(s)
    elapsed = int((time.monotonic() - t0) * 1000)
    # hang up: pptp clears the call and the call manager closes the control connection
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    errf.seek(0)
    log = errf.read()[-3000:]
    errf.close()
    os.unlink(errlog)
    print(json.dumps({'tag': tag, 'sent': sent, 'echoed': got, 'foreign': foreign, 'lcp': lcp,
                      'bad_fcs': bad, 'first_echo_ms': first, 'elapsed_ms': elapsed,
                      'pptp_rc': p.returncode, 'pptp_log': log}), flush=True)


if __name__ == '__main__':
    if len(sys.argv) >= 2 and sys.argv[1] == 'server':
        server()
    elif len(sys.argv) >= 2 and sys.argv[1] == 'client':
        client(sys.argv[2:])
    else:
        sys.exit('usage: fakeppp.py server|client ...')
