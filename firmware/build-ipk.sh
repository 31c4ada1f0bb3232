#!/bin/sh
# firmware/build-ipk.sh: build vpnmasq's .ipk (opkg package) without the
# OpenWrt SDK.
#
#   firmware/build-ipk.sh [--arch x86_64|aarch64] [--out DIR] [--no-build]
#
# The package holds what firmware/openwrt/vpnmasq/Makefile installs, in the
# same places: /usr/lib/vpnmasq/{package.json, dist, build/Release/
# vpnmasq_tun.node, node_modules (production only: no pino-pretty)},
# /usr/bin/vpnmasq, /etc/init.d/vpnmasq, /etc/hotplug.d/iface/30-vpnmasq,
# /etc/config/vpnmasq (a conffile, shipped disabled), the first-boot fw4
# set-up /etc/uci-defaults/90-vpnmasq-firewall, rpcd's exec plugin
# /usr/libexec/rpcd/vpnmasq and its ACL /usr/share/rpcd/acl.d/vpnmasq.json.
# Not vpnmasq-respawn: that is for images without procd.
# The format is the one OpenWrt's scripts/ipkg-build writes for opkg: a
# gzipped GNU tar of ./debian-binary ("2.0"), ./data.tar.gz and
# ./control.tar.gz, each inner tar with ./-relative names, owned by root.
#
# --arch: x86_64 (default on an x86_64 machine; opkg arch x86_64) or
#   aarch64 (opkg arch aarch64_generic). The TUN addon is compiled for it
#   with firmware/lib.sh (g++ or aarch64-linux-gnu-g++ from Debian's
#   g++-aarch64-linux-gnu, against /usr/include/node) into
#   firmware/out/addon-ARCH/. A Debian compiler links it against glibc:
#   the package runs on a glibc userland with Node >= 20 (the image); for
#   OpenWrt's musl build the package with the SDK and the Makefile.
# --out: where the .ipk goes (default firmware/out).
# --no-build: use dist/ as it is instead of running `npm run build` first.
#
# Prints the path of the .ipk on its last line.
set -eu

ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=firmware/lib.sh
. "$ROOT/firmware/lib.sh"

case $(uname -m) in
aarch64 | arm64) arch=aarch64 ;;
*) arch=x86_64 ;;
esac
out=$ROOT/firmware/out
build=1
while [ $# -gt 0 ]; do
	case $1 in
	--arch) [ $# -ge 2 ] || { echo "build-ipk: --arch needs x86_64 or aarch64" >&2; exit 2; }; arch=$2; shift 2 ;;
	--arch=*) arch=${1#--arch=}; shift ;;
	--out) [ $# -ge 2 ] || { echo "build-ipk: --out needs a directory" >&2; exit 2; }; out=$2; shift 2 ;;
	--out=*) out=${1#--out=}; shift ;;
	--no-build) build=; shift ;;
	-h | --help) sed -n '2,28p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	*) echo "build-ipk: unknown argument '$1' (see --help)" >&2; exit 2 ;;
	esac
done
case $arch in
x86_64 | amd64) arch=x86_64 opkg_arch=x86_64 ;;
aarch64 | arm64) arch=aarch64 opkg_arch=aarch64_generic ;;
*) echo "build-ipk: unknown arch '$arch' (x86_64 or aarch64)" >&2; exit 2 ;;
esac

for tool in node tar gzip; do
	command -v "$tool" >/dev/null 2>&1 || { echo "build-ipk: $tool not found" >&2; exit 1; }
done

version=$(node -p 'require(process.argv[1]).version' "$ROOT/package.json")
release=1
pkg_version=$version-$release
epoch=${SOURCE_DATE_EPOCH:-$(git -C "$ROOT" log -1 --format=%ct 2>/dev/null || date +%s)}

if [ -n "$build" ]; then
	(cd "$ROOT" && npm run build --silent)
fi
for f in dist/cli/main.js dist/engine.wasm; do
	[ -f "$ROOT/$f" ] || { echo "build-ipk: $ROOT/$f missing (npm run build)" >&2; exit 1; }
done

addon_dir=$ROOT/firmware/out/addon-$arch
vpnmasq_build_addon "$arch" "$addon_dir"

mkdir -p "$out"
out=$(cd "$out" && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/vpnmasq-ipk.XXXXXX")
trap 'rm -rf "$work"' EXIT
trap 'exit 1' INT TERM
data=$work/data
ctrl=$work/control
mkdir -p "$data" "$ctrl"

# --- data: the Makefile's Package/vpnmasq/install, step for step --------
lib=$data/usr/lib/vpnmasq
files=$ROOT/firmware/files
install -d "$lib" "$lib/build/Release" "$data/usr/bin" \
	"$data/etc/init.d" "$data/etc/hotplug.d/iface" "$data/etc/config" "$data/etc/uci-defaults" \
	"$data/usr/libexec/rpcd" "$data/usr/share/rpcd/acl.d"
install -m 0644 "$ROOT/package.json" "$lib/"
cp -R "$ROOT/dist" "$lib/"
find "$lib/dist" \( -name '*.map' -o -name '*.wat' \) -exec rm -f {} +
find "$lib/dist" -type f -exec chmod 0644 {} +
chmod 0755 "$lib/dist/cli/main.js"
install -m 0755 "$addon_dir/vpnmasq_tun.node" "$lib/build/Release/"
# node_modules: the production packages of package-lock.json (what
# `npm prune --omit=dev` keeps), copied from the repo's node_modules.
node - "$ROOT" "$lib" <<'EOF'
const fs = require('fs');
const path = require('path');
const [root, lib] = process.argv.slice(2);
const lock = JSON.parse(fs.readFileSync(path.join(root, 'package-lock.json'), 'utf8'));
let n = 0;
for (const [p, meta] of Object.entries(lock.packages ?? {})) {
  if (!p.startsWith('node_modules/') || meta.dev || meta.link) continue;
  const from = path.join(root, p);
  if (!fs.existsSync(from)) {
    if (meta.optional) continue;
    console.error(`build-ipk: ${from} missing (npm install)`);
    process.exit(1);
  }
  fs.cpSync(from, path.join(lib, p), {
    recursive: true, verbatimSymlinks: true,
    // a package's own node_modules/ holds lockfile entries of their own (which may be dev-only)
    filter: (src) => path.relative(from, src).split(path.sep)[0] !== 'node_modules',
  });
  n++;
}
if (n === 0) { console.error('build-ipk: no production packages in package-lock.json'); process.exit(1); }
EOF
install -m 0755 "$ROOT/firmware/openwrt/vpnmasq/files/vpnmasq.sh" "$data/usr/bin/vpnmasq"
install -m 0755 "$files/etc/init.d/vpnmasq" "$data/etc/init.d/"
install -m 0755 "$files/etc/init.d/vpnmasq-guard" "$data/etc/init.d/"
install -m 0644 "$files/etc/hotplug.d/iface/30-vpnmasq" "$data/etc/hotplug.d/iface/"
install -m 0600 "$files/etc/config/vpnmasq" "$data/etc/config/"
install -m 0755 "$files/etc/uci-defaults/90-vpnmasq-firewall" "$data/etc/uci-defaults/"
install -m 0755 "$files/usr/libexec/rpcd/vpnmasq" "$data/usr/libexec/rpcd/"
install -m 0644 "$files/usr/share/rpcd/acl.d/vpnmasq.json" "$data/usr/share/rpcd/acl.d/"

# --- control ---------------------------------------------------------------
tar_opts="--format=gnu --numeric-owner --owner=0 --group=0 --sort=name --mtime=@$epoch"
# shellcheck disable=SC2086 # tar_opts is a list of options
(cd "$data" && tar $tar_opts -cf - .) | gzip -n -9 >"$work/data.tar.gz"
installed_size=$(gzip -dc "$work/data.tar.gz" | wc -c | tr -d ' ')

cat >"$ctrl/control" <<EOF
Package: vpnmasq
Version: $pkg_version
Depends: libc, libstdcpp, node, kmod-tun, ip-full, nftables, kmod-nft-core, kmod-nft-fib, kmod-nft-socket
Source: firmware/openwrt/vpnmasq
SourceName: vpnmasq
License: MIT
Section: net
SourceDateEpoch: $epoch
Maintainer: vpnmasq maintainers
Architecture: $opkg_arch
Installed-Size: $installed_size
Description:  Masquerading router with VPN passthrough: an AssemblyScript/Wasm NAT
 engine driven by a Node.js supervisor through two TUN devices (IPsec and
 PPTP passthrough for many LAN hosts behind one address).
EOF
printf '%s\n' /etc/config/vpnmasq >"$ctrl/conffiles"
cat >"$ctrl/postinst" <<'EOF'
#!/bin/sh
# On a running system: enable the service and start it. In an image build
# (IPKG_INSTROOT set) the build enables the init scripts itself.
[ "${IPKG_NO_SCRIPT:-}" = 1 ] && exit 0
if [ -z "${IPKG_INSTROOT:-}" ] && [ -x /etc/init.d/vpnmasq ]; then
	/etc/init.d/vpnmasq-guard enable
	/etc/init.d/vpnmasq-guard start
	/etc/init.d/vpnmasq enable
	/etc/init.d/vpnmasq restart
fi
exit 0
EOF
cat >"$ctrl/prerm" <<'EOF'
#!/bin/sh
# On a running system: stop the service (and disable it when removed). On
# removal the fail-closed guard goes too (an upgrade keeps it: the new
# vpnmasq starts behind it).
if [ -z "${IPKG_INSTROOT:-}" ] && [ -x /etc/init.d/vpnmasq ]; then
	/etc/init.d/vpnmasq stop
	if [ "${1:-remove}" != upgrade ]; then
		/etc/init.d/vpnmasq disable
		/etc/init.d/vpnmasq-guard disable
		/usr/bin/vpnmasq guard remove
	fi
fi
exit 0
EOF
chmod 0644 "$ctrl/control" "$ctrl/conffiles"
chmod 0755 "$ctrl/postinst" "$ctrl/prerm"
# shellcheck disable=SC2086
(cd "$ctrl" && tar $tar_opts -cf - .) | gzip -n -9 >"$work/control.tar.gz"

# --- the .ipk ---------------------------------------------------------------
echo 2.0 >"$work/debian-binary"
ipk=$out/vpnmasq_${pkg_version}_$opkg_arch.ipk
rm -f "$ipk"
# shellcheck disable=SC2086
(cd "$work" && tar $tar_opts -cf - ./debian-binary ./data.tar.gz ./control.tar.gz) | gzip -n -9 >"$ipk"
echo "$ipk"
