#!/bin/sh
# /usr/bin/vpnmasq: the vpnmasq command, installed by the vpnmasq package
# (the program is /usr/lib/vpnmasq, run by Node.js).
# shellcheck shell=sh
NODE=/usr/bin/node
[ -x "$NODE" ] || NODE=node
exec "$NODE" /usr/lib/vpnmasq/dist/cli/main.js "$@"
