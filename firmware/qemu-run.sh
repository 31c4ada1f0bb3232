#!/usr/bin/env bash
# Boots the vpnmasq image under QEMU (TCG) as the router between network
# namespaces of this machine, and sends real traffic through it.
#
#   npm run qemu -- [--arch x86_64|aarch64] [options]
#
#   vq<id>-lan1 192.168.1.10 ─┐                                 ┌─ vq<id>-wan1 203.0.113.2
#   vq<id>-lan2 192.168.1.11 ─┴ brl ─ tapl ═ guest ═ tapw ─ brw ┘  (no route to the LAN)
#                                 eth0 → br-lan 192.168.1.1   eth1 → wan 203.0.113.1
#
# QEMU runs inside vq<id>-h, where the TAP devices and the two bridges live;
# veth pairs join them to the LAN and WAN namespaces. The guest's busybox
# init starts vpnmasq (vpnmasq-respawn) from /etc/config/vpnmasq: by default
# the shipped UCI default with its example port forward (tcp 8080 →
# 192.168.1.10:80) and IKE rule enabled, put into the image as an extra cpio.
# Then: ping, UDP and TCP from lan1 to wan1 (the server must see the
# masquerade address 203.0.113.1) and the port forward from wan1 to lan1.
#
# options:
#   --arch A         x86_64 (default: this machine's) or aarch64
#   --mem MIB        guest RAM (default 256)      --smp N   CPUs (default 2)
#   --cpu MODEL      QEMU CPU model (default qemu64 / cortex-a57)
#   --timeout S      boot to "vpnmasq ready" (default 300 s; aarch64 600 s)
#   --config FILE    /etc/config/vpnmasq of the guest; "image" = the image's
#                    own (rcS writes it from the default; no port forward)
#   --log FILE       serial console log (default firmware/out/<arch>/serial.log)
#   --id ID          namespace id, [a-z0-9]{1,6} (default from the pid)
#   --no-build       use the image in firmware/out as it is
#   --no-checks      boot only
#   --keep           afterwards keep the guest running, its console on this
#                    terminal (stdin goes to the guest; Ctrl-a x quits), until
#                    QEMU exits or this script gets SIGTERM/SIGINT
#   --append ARGS    more kernel command line
# Exit status: 0 when the guest got ready and every check passed.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
FW="$ROOT/firmware"
TAG='[qemu-run]'

say() { printf '%s %s\n' "$TAG" "$*" >&2; }
die() { printf '%s error: %s\n' "$TAG" "$*" >&2; exit 1; }
usage() { sed -n '2,35p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }

ARCH=$(uname -m) MEM=256 SMP=2 CPU="" TIMEOUT="" CONFIG=default LOG="" ID="" BUILD=1 CHECKS=1 KEEP=0 APPEND=""
while [ $# -gt 0 ]; do
  case "$1" in
    --arch) ARCH=${2:?}; shift 2 ;;
    --arch=*) ARCH=${1#*=}; shift ;;
    --mem) MEM=${2:?}; shift 2 ;;
    --smp) SMP=${2:?}; shift 2 ;;
    --cpu) CPU=${2:?}; shift 2 ;;
    --timeout) TIMEOUT=${2:?}; shift 2 ;;
    --config) CONFIG=${2:?}; shift 2 ;;
    --log) LOG=${2:?}; shift 2 ;;
    --id) ID=${2:?}; shift 2 ;;
    --no-build) BUILD=0; shift ;;
    --no-checks) CHECKS=0; shift ;;
    --keep) KEEP=1; shift ;;
    --append) APPEND=${2:?}; shift 2 ;;
    -h|--help) usage 0 ;;
    *) printf '%s unknown argument %s\n' "$TAG" "$1" >&2; usage 2 ;;
  esac
done
case "$ARCH" in
  x86_64|amd64) ARCH=x86_64; QEMU=qemu-system-x86_64; CONSOLE=ttyS0; : "${TIMEOUT:=300}"
    MACHINE=(-M pc -cpu "${CPU:-qemu64}") ;;
  aarch64|arm64) ARCH=aarch64; QEMU=qemu-system-aarch64; CONSOLE=ttyAMA0; : "${TIMEOUT:=600}"
    MACHINE=(-M virt -cpu "${CPU:-cortex-a57}") ;;
  *) die "unsupported --arch '$ARCH' (x86_64 or aarch64)" ;;
esac
[ -n "$ID" ] || ID=$(printf '%x' $(( $$ % 0xffffff )))
[[ "$ID" =~ ^[a-z0-9]{1,6}$ ]] || die "--id must be 1 to 6 of [a-z0-9]"
[ "$(id -u)" = 0 ] || die "must run as root (network namespaces, TAP devices)"
for t in "$QEMU" ip node cpio; do
  case "$t" in
    qemu-system-x86_64) pkg=qemu-system-x86 ;; qemu-system-aarch64) pkg=qemu-system-arm ;;
    ip) pkg=iproute2 ;; node) pkg=nodejs ;; *) pkg=$t ;;
  esac
  command -v "$t" >/dev/null 2>&1 || die "missing tool $t (apt-get install $pkg)"
done

OUT="$FW/out/$ARCH"
if [ "$BUILD" = 1 ]; then
  bash "$FW/build-image.sh" --arch "$ARCH" || die "the image build failed"
else
  [ -f "$OUT/size-report.txt" ] && cat "$OUT/size-report.txt"
fi
KERNEL="$OUT/vmlinuz"
INITRD=$(readlink -f "$OUT/initramfs" 2>/dev/null || true)
if [ ! -f "$KERNEL" ] || [ -z "$INITRD" ] || [ ! -f "$INITRD" ]; then
  die "no image in ${OUT#"$ROOT"/} (run npm run firmware -- --arch $ARCH)"
fi

RUN="$OUT/run-$ID"
[ -n "$LOG" ] || LOG="$OUT/serial.log"
P=vq$ID
NSH=$P-h NSL1=$P-lan1 NSL2=$P-lan2 NSW=$P-wan1
LAN_MAC=52:54:00:76:6d:01 WAN_MAC=52:54:00:76:6d:02
QEMU_PID="" PEERS=()

# --- clean-up: everything this run made, also on a timeout or a signal ----------
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  local p
  for p in "${PEERS[@]}"; do kill "$p" 2>/dev/null; done
  if [ -n "$QEMU_PID" ] && kill -0 "$QEMU_PID" 2>/dev/null; then
    kill -TERM "$QEMU_PID" 2>/dev/null
    for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$QEMU_PID" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$QEMU_PID" 2>/dev/null
    wait "$QEMU_PID" 2>/dev/null
  fi
  del_namespaces
  rm -rf "$RUN"
  [ -f "$LOG" ] && say "serial console log: ${LOG#"$ROOT"/}"
  exit "$rc"
}
del_namespaces() {
  local ns pid
  for ns in "$NSL1" "$NSL2" "$NSW" "$NSH"; do
    [ -e "/run/netns/$ns" ] || continue
    for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null; done
    ip netns del "$ns" 2>/dev/null
  done
}
trap cleanup EXIT
trap 'say "interrupted"; exit 130' INT
trap 'say "terminated"; exit 143' TERM

show_log() { # why
  say "$1; the last lines of the serial console (${LOG#"$ROOT"/}):"
  if [ -s "$LOG" ]; then tail -n "${2:-60}" "$LOG" | sed 's/^/    | /' >&2; else say "(nothing on the console yet)"; fi
  [ -s "$RUN/qemu.err" ] && { say "QEMU said:"; sed 's/^/    | /' "$RUN/qemu.err" >&2; }
}

# --- namespaces ---------------------------------------------------------------------
del_namespaces
mkdir -p "$RUN"
nsx() { ip netns exec "$@"; }
setup_net() {
  set -e
  for ns in "$NSH" "$NSL1" "$NSL2" "$NSW"; do
    ip netns add "$ns"
    nsx "$ns" sh -c 'echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6; echo 1 > /proc/sys/net/ipv6/conf/default/disable_ipv6'
    ip -n "$ns" link set lo up
  done
  ip -n "$NSH" link add brl type bridge
  ip -n "$NSH" link add brw type bridge
  ip -n "$NSH" tuntap add dev tapl mode tap
  ip -n "$NSH" tuntap add dev tapw mode tap
  ip -n "$NSH" link set tapl master brl
  ip -n "$NSH" link set tapw master brw
  local i ns port addr
  for i in 1 2; do
    ns=$P-lan$i port=l$i addr=192.168.1.$((9 + i))
    ip -n "$NSH" link add "$port" type veth peer name eth0 netns "$ns"
    ip -n "$NSH" link set "$port" master brl up
    ip -n "$ns" addr add "$addr/24" dev eth0
    ip -n "$ns" link set eth0 up
    ip -n "$ns" route add default via 192.168.1.1
  done
  ip -n "$NSH" link add w1 type veth peer name eth0 netns "$NSW"
  ip -n "$NSH" link set w1 master brw up
  ip -n "$NSW" addr add 203.0.113.2/24 dev eth0
  ip -n "$NSW" link set eth0 up
  for dev in brl brw tapl tapw; do ip -n "$NSH" link set "$dev" up; done
}
( setup_net ) 2>"$RUN/net.err" || { cat "$RUN/net.err" >&2; die "setting up the namespaces failed"; }

# --- the guest's /etc/config/vpnmasq: an uncompressed cpio before the image ------
OVL="$RUN/overlay"
case "$CONFIG" in
  image) cp "$INITRD" "$RUN/initrd" ;;
  *)
    mkdir -p "$OVL/etc/config"
    if [ "$CONFIG" = default ]; then
      # The shipped default, its examples enabled (their comments say to
      # delete the 'enabled' line to use them) and vpnmasq itself switched
      # on (the package ships it off: the main section's enabled '0').
      grep -v "^[[:space:]]*option enabled '0'[[:space:]]*$" "$FW/files/etc/config/vpnmasq" |
        sed "s/^\([[:space:]]*option enabled \)'0'/\1'1'/" > "$OVL/etc/config/vpnmasq"
    else
      [ -f "$CONFIG" ] || die "--config $CONFIG: no such file"
      cp "$CONFIG" "$OVL/etc/config/vpnmasq"
    fi
    (cd "$OVL" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet) > "$RUN/overlay.cpio" || die "cpio failed"
    cat "$RUN/overlay.cpio" "$INITRD" > "$RUN/initrd"
    ;;
esac

# --- boot -------------------------------------------------------------------------
# cma=0: Debian's arm64 kernel reserves 64 MiB for CMA, which only movable
# pages may use; the ramfs root (about 100 MiB unpacked) is not movable, so
# with 256 MiB the unpack could run out of memory ("System is deadlocked on
# memory"). No device of these guests needs contiguous DMA memory.
CMDLINE="console=$CONSOLE panic=-1 rootfstype=ramfs loglevel=4 mitigations=off cma=0 vpnmasq.lan_if=$LAN_MAC vpnmasq.wan_if=$WAN_MAC"
CMDLINE+=" vpnmasq.lan=192.168.1.1/24 vpnmasq.wan=203.0.113.1/24 vpnmasq.gw=203.0.113.2${APPEND:+ $APPEND}"
mkdir -p "$(dirname "$LOG")"
: > "$LOG"
# shellcheck disable=SC2054 # commas inside QEMU option values
QARGS=(
  "${MACHINE[@]}" -accel tcg -m "$MEM" -smp "$SMP" -nodefaults -no-user-config -display none -no-reboot
  -kernel "$KERNEL" -initrd "$RUN/initrd" -append "$CMDLINE"
  -chardev "stdio,id=con,mux=on,signal=off,logfile=$LOG"
  -serial chardev:con -mon chardev=con,mode=readline
  -netdev tap,id=lan,ifname=tapl,script=no,downscript=no -device "virtio-net-pci,netdev=lan,mac=$LAN_MAC,romfile="
  -netdev tap,id=wan,ifname=tapw,script=no,downscript=no -device "virtio-net-pci,netdev=wan,mac=$WAN_MAC,romfile="
)
say "booting $ARCH: $QEMU (TCG) -m $MEM -smp $SMP, namespaces $P-{h,lan1,lan2,wan1}, config: $CONFIG"
exec 3<&0
T0=$(date +%s%N)
if [ "$KEEP" = 1 ]; then
  ip netns exec "$NSH" "$QEMU" "${QARGS[@]}" <&3 2>"$RUN/qemu.err" &
else
  ip netns exec "$NSH" "$QEMU" "${QARGS[@]}" </dev/null >/dev/null 2>"$RUN/qemu.err" &
fi
QEMU_PID=$!
echo "$QEMU_PID" > "$RUN/qemu.pid"

secs_since() { awk -v a="$1" -v b="$(date +%s%N)" 'BEGIN { printf "%.1f", (b - a) / 1e9 }'; }
while :; do
  if grep -q '"msg":"vpnmasq ready"' "$LOG" 2>/dev/null; then break; fi
  if ! kill -0 "$QEMU_PID" 2>/dev/null; then
    wait "$QEMU_PID"; rc=$?
    show_log "QEMU exited (status $rc) before vpnmasq was ready"
    QEMU_PID=""
    exit 1
  fi
  if [ "$(( ($(date +%s%N) - T0) / 1000000000 ))" -ge "$TIMEOUT" ]; then
    show_log "timed out after $TIMEOUT s waiting for \"vpnmasq ready\""
    exit 1
  fi
  sleep 0.2
done
BOOT=$(secs_since "$T0")
say "vpnmasq ready after $BOOT s (QEMU start to the \"vpnmasq ready\" log line; $ARCH, TCG, $MEM MiB)"
say "$(grep -m1 '^rcS: done' "$LOG" | tr -d '\r')"

# --- checks ---------------------------------------------------------------------------
FAILED=0
if [ "$CHECKS" = 1 ]; then
  serve() { # ns mode port
    ip netns exec "$1" node "$ROOT/firmware/peer.mjs" "$2" "$3" > "$RUN/serve-$1-$2.out" 2>&1 &
    PEERS+=($!)
    for _ in $(seq 50); do grep -qs listening "$RUN/serve-$1-$2.out" && return 0; sleep 0.1; done
    return 1
  }
  check() { # name expected-substring command...
    local name=$1 want=$2 out; shift 2
    if out=$(timeout 20 "$@" 2>&1) && [[ "$out" == *"$want"* ]]; then
      say "check $name: ok ($(printf '%s' "$out" | tail -n1))"
    else
      say "check $name: FAILED: $(printf '%s' "$out" | tail -n3 | tr '\n' ' ')"
      FAILED=$((FAILED + 1))
    fi
  }
  if ! { serve "$NSW" udp-serve 5000 && serve "$NSW" tcp-serve 5001 && serve "$NSL1" tcp-serve 80; }; then
    die "a test server did not start"
  fi
  if command -v ping >/dev/null 2>&1; then
    check "ping lan1 -> wan1" " 0% packet loss" ip netns exec "$NSL1" ping -c 3 -i 0.3 -W 3 203.0.113.2
  else
    say "check ping: skipped (no ping here: apt-get install iputils-ping)"
  fi
  check "udp lan1 -> wan1:5000, masqueraded" "peer 203.0.113.1:" ip netns exec "$NSL1" node "$ROOT/firmware/peer.mjs" udp-ask 203.0.113.2 5000
  check "tcp lan1 -> wan1:5001, masqueraded" "peer 203.0.113.1:" ip netns exec "$NSL1" node "$ROOT/firmware/peer.mjs" tcp-ask 203.0.113.2 5001
  check "udp lan2 -> wan1:5000, masqueraded" "peer 203.0.113.1:" ip netns exec "$NSL2" node "$ROOT/firmware/peer.mjs" udp-ask 203.0.113.2 5000
  if [ "$CONFIG" = default ]; then
    check "port forward wan1 -> 203.0.113.1:8080 -> lan1:80" "peer 203.0.113.2:" ip netns exec "$NSW" node "$ROOT/firmware/peer.mjs" tcp-ask 203.0.113.1 8080
  fi
  for p in "${PEERS[@]}"; do kill "$p" 2>/dev/null; done
  PEERS=()
  if [ "$FAILED" = 0 ]; then say "all checks passed"; else say "$FAILED check(s) FAILED"; fi
fi

if [ "$KEEP" = 1 ]; then
  say "guest running (pid $QEMU_PID): its console is this terminal (Ctrl-a x quits);" \
      "namespaces $NSL1 $NSL2 $NSW (e.g. ip netns exec $NSL1 ping 203.0.113.2)"
  wait "$QEMU_PID"
  QEMU_PID=""
fi
[ "$FAILED" = 0 ]
