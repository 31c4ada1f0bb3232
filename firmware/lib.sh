# firmware/lib.sh: shell functions shared by the firmware scripts
# (build-ipk.sh, build-image.sh). Source it; POSIX sh.
#
#   . "$ROOT/firmware/lib.sh"
#   vpnmasq_build_addon aarch64 "$ROOT/firmware/out/addon-aarch64"
# shellcheck shell=sh

# vpnmasq_build_addon ARCH OUTDIR
# Compiles the TUN addon (src/tun/addon.cc, ringclock.cc, fastpath.cc: binding.gyp's sources) for ARCH (x86_64 or aarch64)
# into OUTDIR/vpnmasq_tun.node with the flags binding.gyp gives node-gyp.
# The compiler is g++ for the build machine's own arch, else
# aarch64-linux-gnu-g++ (Debian: g++-aarch64-linux-gnu); CXX overrides it.
# Node's headers are /usr/include/node (NODE_INCLUDE overrides): the addon
# uses N-API and libuv's poll handles, whose headers are the same for every
# arch. node-addon-api comes from the repo's node_modules. The repo is
# $ROOT, else $VPNMASQ_ROOT, else the current directory.
# Like node-gyp's build it needs libstdc++.so.6 and the C library on the
# target (node itself needs both). Built with a Debian cross compiler it is
# linked against glibc: right for a glibc userland (the image), not for
# OpenWrt's musl, where the package Makefile builds it with the SDK.
# Rebuilds only when a source (or this file, which holds the source list and
# flags) is newer than OUTDIR/vpnmasq_tun.node.
vpnmasq_build_addon() {
	_vba_arch=$1 _vba_out=$2
	_vba_root=${ROOT:-${VPNMASQ_ROOT:-$(pwd)}}
	_vba_src=$_vba_root/src/tun/addon.cc
	_vba_clock=$_vba_root/src/tun/ringclock.cc
	_vba_fast=$_vba_root/src/tun/fastpath.cc
	_vba_napi=$_vba_root/node_modules/node-addon-api
	_vba_inc=${NODE_INCLUDE:-/usr/include/node}
	case $_vba_arch in
	x86_64 | amd64) _vba_cxx=${CXX:-$( [ "$(uname -m)" = x86_64 ] && echo g++ || echo x86_64-linux-gnu-g++ )} ;;
	aarch64 | arm64) _vba_cxx=${CXX:-$( [ "$(uname -m)" = aarch64 ] && echo g++ || echo aarch64-linux-gnu-g++ )} ;;
	*) echo "vpnmasq_build_addon: unknown arch '$_vba_arch' (x86_64 or aarch64)" >&2; return 2 ;;
	esac
	[ -f "$_vba_src" ] || { echo "vpnmasq_build_addon: $_vba_src not found (set ROOT)" >&2; return 1; }
	[ -f "$_vba_inc/node_api.h" ] || { echo "vpnmasq_build_addon: no $_vba_inc/node_api.h (install nodejs with its headers, or set NODE_INCLUDE)" >&2; return 1; }
	[ -f "$_vba_napi/napi.h" ] || { echo "vpnmasq_build_addon: no $_vba_napi/napi.h (run npm install)" >&2; return 1; }
	command -v "$_vba_cxx" >/dev/null 2>&1 || { echo "vpnmasq_build_addon: $_vba_cxx not found (apt-get install g++-aarch64-linux-gnu)" >&2; return 1; }
	mkdir -p "$_vba_out" || return 1
	if [ -f "$_vba_out/vpnmasq_tun.node" ] &&
		[ -z "$(find "$_vba_src" "$_vba_clock" "$_vba_fast" "$_vba_root/src/tun/ringclock.h" "$_vba_root/src/tun/fastpath.h" "$_vba_root/src/tun/bpf.h" "$_vba_root/binding.gyp" "$_vba_root/firmware/lib.sh" -newer "$_vba_out/vpnmasq_tun.node" 2>/dev/null)" ]; then
		return 0
	fi
	"$_vba_cxx" -shared -fPIC -pthread -O2 -Wall -Wextra -Wno-unused-parameter \
		-std=gnu++17 -fno-rtti -fno-exceptions \
		-DNAPI_VERSION=8 -DNODE_ADDON_API_DISABLE_CPP_EXCEPTIONS -DNODE_GYP_MODULE_NAME=vpnmasq_tun \
		-D_FILE_OFFSET_BITS=64 -D_LARGEFILE_SOURCE \
		-I"$_vba_inc" -I"$_vba_napi" \
		-o "$_vba_out/vpnmasq_tun.node.tmp.$$" "$_vba_src" "$_vba_clock" "$_vba_fast" || { rm -f "$_vba_out/vpnmasq_tun.node.tmp.$$"; return 1; }
	# a name of its own per build: two builds at once (the .ipk and the package
	# Makefile tests run in parallel) each rename a whole file into place
	mv -f "$_vba_out/vpnmasq_tun.node.tmp.$$" "$_vba_out/vpnmasq_tun.node"
}
