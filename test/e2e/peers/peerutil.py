"""Shared by the e2e peer scripts beside it (ikepush.py, esp.py, fakeppp.py).

They run as `python3 test/e2e/peers/NAME.py ...`, so this directory is on
sys.path and `import peerutil` resolves wherever the checkout lives.
"""

import sys


def opts(args, defaults, prog):
    """`--name value` pairs over `defaults`; an unknown name exits with `PROG: unknown option NAME`."""
    o = dict(defaults)
    i = 0
    while i < len(args):
        if args[i] not in o:
            sys.exit('%s: unknown option %s' % (prog, args[i]))
        o[args[i]] = args[i + 1]
        i += 2
    return o


def main(prog, commands):
    """Runs commands[argv[1]](argv[2:]); otherwise exits with the usage line."""
    if len(sys.argv) >= 2 and sys.argv[1] in commands:
        commands[sys.argv[1]](sys.argv[2:])
    else:
        sys.exit('usage: %s %s ...' % (prog, '|'.join(commands)))
