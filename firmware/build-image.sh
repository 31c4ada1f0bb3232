#!/usr/bin/env bash
# Builds a bootable router image of vpnmasq: a Debian kernel (bookworm-backports,
# 6.12, for the flow fast path's tcx) and a compressed
# initramfs (busybox init, Node.js, iproute2, vpnmasq) per architecture.
#
#   npm run firmware -- [--arch x86_64|aarch64] [--refresh] [--force] [--xz]
#   (zstd -12 by default, VPNMASQ_ZSTD_LEVEL=19 for a smaller one; --xz: xz -9)
#
# Everything comes from Debian's packages (apt-get download + dpkg-deb -x)
# through a private apt state under firmware/cache/apt-<debarch>, so the
# host's own apt lists and status are never touched, plus the project's
# dist/ (npm run build), the Wasm engine and the TUN addon (the host's
# build/Release for x86_64, cross-compiled with aarch64-linux-gnu-g++ for
# aarch64). Output: firmware/out/<arch>/{vmlinuz,initramfs.cpio.zst,size-report.txt}.
#
# The downloaded .debs are kept (firmware/cache/debs-<debarch>, with the
# versions in manifest.txt) and reused until --refresh, which runs
# `apt-get update` on the private lists and fetches again. The image is
# rebuilt only when one of its inputs changed (a hash of all of them is kept
# beside it), or with --force. The cpio has sorted names, owner 0:0 and fixed
# timestamps, so the same inputs give the same bytes.
#
# Environment: VPNMASQ_APT_SOURCES=FILE  apt sources (deb822 .sources or
# one-line .list) to fetch from; default the host's Debian sources.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
FW="$ROOT/firmware"
BUDGET_MIB=64

die() { printf 'firmware/build-image.sh: %s\n' "$*" >&2; exit 1; }
note() { printf '[firmware] %s\n' "$*" >&2; }
trap 'die "unexpected failure at line $LINENO: $BASH_COMMAND"' ERR

usage() {
  sed -n '2,12p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
  exit "${1:-0}"
}

ARCH=""
REFRESH=0
FORCE=0
COMPRESS=zstd
while [ $# -gt 0 ]; do
  case "$1" in
    --arch) [ $# -ge 2 ] || die "--arch needs a value (x86_64 or aarch64)"; ARCH=$2; shift 2 ;;
    --arch=*) ARCH=${1#--arch=}; shift ;;
    --refresh) REFRESH=1; shift ;;
    --force) FORCE=1; shift ;;
    --xz) COMPRESS=xz; shift ;;
    -h|--help) usage 0 ;;
    *) printf 'firmware/build-image.sh: unknown argument %s\n' "$1" >&2; usage 2 ;;
  esac
done
[ -n "$ARCH" ] || ARCH=$(uname -m)
case "$ARCH" in
  x86_64|amd64) ARCH=x86_64; DEBARCH=amd64; TRIPLET=x86_64-linux-gnu; ELFMACH='X86-64' ;;
  aarch64|arm64) ARCH=aarch64; DEBARCH=arm64; TRIPLET=aarch64-linux-gnu; ELFMACH='AArch64' ;;
  *) die "unsupported --arch '$ARCH' (x86_64 or aarch64)" ;;
esac
HOSTARCH=$(uname -m)

CACHE="$FW/cache"
OUT="$FW/out/$ARCH"
APTDIR="$CACHE/apt-$DEBARCH"
DEBS="$CACHE/debs-$DEBARCH"
SYSROOT="$CACHE/sysroot-$DEBARCH"
mkdir -p "$CACHE" "$OUT"

# --- tools ------------------------------------------------------------------
need_tool() { # tool package
  command -v "$1" >/dev/null 2>&1 || die "missing tool '$1' (apt-get install $2)"
}
need_tool apt-get apt
need_tool dpkg-deb dpkg
need_tool cpio cpio
need_tool readelf binutils
need_tool depmod kmod
need_tool sha256sum coreutils
need_tool node nodejs
need_tool npm npm
if [ "$COMPRESS" = zstd ]; then need_tool zstd zstd; else need_tool xz xz-utils; fi
if [ "$ARCH" != "$HOSTARCH" ]; then
  CROSS_CXX=${CROSS_CXX:-$TRIPLET-g++}
  command -v "$CROSS_CXX" >/dev/null 2>&1 ||
    die "the cross compiler $CROSS_CXX is missing: the TUN addon for $ARCH is built with it (apt-get install g++-$TRIPLET)"
  [ -f /usr/include/node/node_api.h ] ||
    die "Node's headers (/usr/include/node/node_api.h) are missing: the cross build of the TUN addon needs them (they come with the nodejs package; Debian: libnode-dev)"
fi

# --- the project's build ----------------------------------------------------
cd "$ROOT"
[ -f node_modules/pino/package.json ] || die "node_modules is missing: run npm install first"
if [ ! -f dist/cli/main.js ] || [ ! -f dist/engine.wasm ]; then
  note "dist/ is missing: npm run build"
  npm run build --silent || die "npm run build failed"
elif [ -n "$(find src assembly package.json tsconfig.json asconfig.json -newer dist/cli/main.js -print -quit 2>/dev/null)" ]; then
  note "dist/ is older than the sources: npm run build"
  npm run build --silent || die "npm run build failed"
fi
ADDON_SRC="$ROOT/build/Release/vpnmasq_tun.node"
if [ "$ARCH" = "$HOSTARCH" ] && [ ! -f "$ADDON_SRC" ]; then
  note "build/Release/vpnmasq_tun.node is missing: npm run build:addon"
  [ -d /usr/include/node ] && export npm_config_nodedir=/usr
  npm run build:addon --silent || die "npm run build:addon failed"
fi

# --- Debian packages ----------------------------------------------------------
# Each package whose files the image takes. Their shared-library needs are
# checked below (readelf): a missing one stops the build with its name.
PACKAGES=(
  busybox-static
  nodejs libnode108 libicu72 libssl3 libuv1 libc-ares2 libnghttp2-14 libbrotli1 zlib1g
  node-cjs-module-lexer node-acorn node-undici
  libstdc++6 libgcc-s1 libc6
  iproute2 libbpf1 libelf1 libmnl0 libbsd0 libmd0 libcap2
  nftables libnftables1 libnftnl11 libjansson4 libgmp10 libxtables12 libedit2 libtinfo6
)
KERNEL_META=linux-image-$DEBARCH
# The kernel alone comes from bookworm-backports (6.12): vpnmasq's flow fast
# path (option flow_offload) attaches its eBPF programs with tcx links, which
# Linux has since 6.6; bookworm's own 6.1 refuses it. Every other package is
# bookworm's. apt_setup adds the suite beside the bookworm entry's URI.
KERNEL_SUITE=bookworm-backports

APT_OPTS=(
  -o "Dir::State=$APTDIR" -o "Dir::State::Lists=$APTDIR/lists" -o "Dir::State::status=$APTDIR/status"
  -o "Dir::Cache=$APTDIR/cache" -o "Dir::Etc::SourceList=/dev/null" -o "Dir::Etc::SourceParts=$APTDIR/sources.d"
  -o "Dir::Etc::Preferences=/dev/null" -o "Dir::Etc::PreferencesParts=$APTDIR/preferences.d"
  -o "APT::Architecture=$DEBARCH" -o "APT::Architectures::=$DEBARCH" -o "Debug::NoLocking=1"
  -o "APT::Get::List-Cleanup=0" -o "Acquire::Languages=none" -q
)

apt_setup() {
  mkdir -p "$APTDIR/lists/partial" "$APTDIR/cache/archives/partial" "$APTDIR/sources.d" "$APTDIR/preferences.d"
  : > "$APTDIR/status"
  rm -f "$APTDIR/sources.d/"*
  local src=${VPNMASQ_APT_SOURCES:-}
  if [ -z "$src" ]; then
    if [ -f /etc/apt/sources.list.d/debian.sources ]; then src=/etc/apt/sources.list.d/debian.sources
    elif [ -s /etc/apt/sources.list ]; then src=/etc/apt/sources.list
    else die "no Debian apt sources found (/etc/apt/sources.list.d/debian.sources or /etc/apt/sources.list); set VPNMASQ_APT_SOURCES=FILE"
    fi
  fi
  [ -f "$src" ] || die "VPNMASQ_APT_SOURCES: $src does not exist"
  case "$src" in
    *.sources) cp "$src" "$APTDIR/sources.d/debian.sources" ;;
    *) cp "$src" "$APTDIR/sources.d/debian.list" ;;
  esac
  # $KERNEL_SUITE from the URI (and keyring) of the entry with the suite
  # bookworm, unless the sources name it already.
  local bp
  case "$src" in
    *.sources) bp=$(awk -v want="$KERNEL_SUITE" '
        function flush() {
          if (types ~ /(^| )deb( |$)/ && (" " suites " ") ~ / bookworm / && uri == "") { uri = uris; key = signed }
          if ((" " suites " ") ~ (" " want " ")) have = 1
          types = ""; suites = ""; uris = ""; signed = ""
        }
        /^[ \t]*$/ { flush(); next }
        /^[ \t]*#/ { next }
        { k = tolower($1); sub(/:$/, "", k); $1 = ""; sub(/^ +/, "")
          if (k == "types") types = $0; else if (k == "suites") suites = $0
          else if (k == "uris") { split($0, u, " "); uris = u[1] } else if (k == "signed-by") signed = $0 }
        END { flush(); if (have) print "HAVE"; else if (uri != "") print uri "|" key }' "$src") ;;
    *) bp=$(awk -v want="$KERNEL_SUITE" '
        $1 == "deb" { i = 2; opt = ""; if ($2 ~ /^\[/) { while (i <= NF && $i !~ /\]$/) { opt = opt " " $i; i++ } opt = opt " " $i; i++ }
          if ($(i + 1) == want) have = 1
          if ($(i + 1) == "bookworm" && line == "") line = "deb" opt " " $i }
        END { if (have) print "HAVE"; else if (line != "") print "LIST|" line }' "$src") ;;
  esac
  case "$bp" in
    HAVE) ;;
    LIST\|*) printf '%s %s main\n' "${bp#LIST|}" "$KERNEL_SUITE" > "$APTDIR/sources.d/kernel.list" ;;
    ?*\|*) { echo "Types: deb"; echo "URIs: ${bp%%|*}"; echo "Suites: $KERNEL_SUITE"; echo "Components: main"
             if [ -n "${bp#*|}" ]; then echo "Signed-By: ${bp#*|}"; fi; } > "$APTDIR/sources.d/kernel.sources" ;;
    *) die "no 'bookworm' entry in $src to take the $KERNEL_SUITE kernel from (add $KERNEL_SUITE to it, or set VPNMASQ_APT_SOURCES=FILE)" ;;
  esac
  note "apt-get update ($DEBARCH, private lists in ${APTDIR#"$ROOT"/}, sources from $src)"
  apt-get "${APT_OPTS[@]}" update >"$APTDIR/update.log" 2>&1 ||
    { tail -20 "$APTDIR/update.log" >&2; die "apt-get update for $DEBARCH failed (log: $APTDIR/update.log)"; }
}

fetch_debs() {
  apt_setup
  local kpkg
  kpkg=$(apt-cache "${APT_OPTS[@]}" depends "$KERNEL_META/$KERNEL_SUITE" 2>/dev/null | sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*\)$/\1/p' | head -1)
  [ -n "$kpkg" ] || die "cannot resolve $KERNEL_META/$KERNEL_SUITE to a kernel package for $DEBARCH (is $KERNEL_SUITE in the apt sources?)"
  rm -rf "$DEBS.new"
  mkdir -p "$DEBS.new"
  note "apt-get download ($DEBARCH): $kpkg ${PACKAGES[*]}"
  local pkgs=() p
  for p in "$kpkg" "${PACKAGES[@]}"; do pkgs+=("$p:$DEBARCH"); done
  if ! (cd "$DEBS.new" && apt-get "${APT_OPTS[@]}" download "${pkgs[@]}") >"$DEBS.new/download.log" 2>&1; then
    grep -E '^(E|W):' "$DEBS.new/download.log" >&2 || tail -5 "$DEBS.new/download.log" >&2
    rm -rf "$DEBS.new"
    die "cannot fetch the Debian packages for $DEBARCH (apt-get download failed: see the lines above)"
  fi
  rm -f "$DEBS.new/download.log"
  (cd "$DEBS.new" && for f in *.deb; do
     printf '%s %s %s\n' "$(dpkg-deb -f "$f" Package)" "$(dpkg-deb -f "$f" Version)" "$f"
   done | LC_ALL=C sort) > "$DEBS.new/manifest.txt"
  printf '%s\n' "$kpkg" > "$DEBS.new/kernel-package"
  printf '%s\n' "$KERNEL_SUITE" > "$DEBS.new/kernel-suite"
  rm -rf "$DEBS" "$SYSROOT"
  mv "$DEBS.new" "$DEBS"
}

if [ "$REFRESH" = 1 ] || [ ! -f "$DEBS/manifest.txt" ] || [ ! -f "$DEBS/kernel-package" ]; then
  fetch_debs
elif [ "$(cat "$DEBS/kernel-suite" 2>/dev/null)" != "$KERNEL_SUITE" ]; then
  # a cache from before the kernel came from $KERNEL_SUITE (bookworm's 6.1)
  note "the cached kernel is not from $KERNEL_SUITE: fetching again"
  fetch_debs
else
  # A package added to PACKAGES since the last fetch means fetching again.
  for p in "${PACKAGES[@]}"; do
    grep -q "^$p " "$DEBS/manifest.txt" || { note "package $p not in the cache: fetching again"; fetch_debs; break; }
  done
fi
KPKG=$(cat "$DEBS/kernel-package")

# --- what the image is made of: the cache key ---------------------------------
runtime_modules() { # prints node_modules/<name> paths the runtime needs (not devDependencies, not pino-pretty)
  node --input-type=module -e '
    import { readFileSync, existsSync } from "node:fs";
    import { join, dirname } from "node:path";
    const root = process.cwd();
    const skip = new Set(["pino-pretty", "node-addon-api"]);   // pretty logs only on a TTY; headers for the build
    const seen = new Set();
    function resolve(name, from) {
      for (let d = from; ; d = dirname(d)) {
        const p = join(d, "node_modules", name);
        if (existsSync(join(p, "package.json"))) return p;
        if (d === root || d === dirname(d)) return null;
      }
    }
    function walk(dir) {
      const pkg = JSON.parse(readFileSync(join(dir, "package.json"), "utf8"));
      const deps = { ...(pkg.dependencies ?? {}), ...(pkg.optionalDependencies ?? {}) };
      for (const name of Object.keys(deps)) {
        if (skip.has(name)) continue;
        const p = resolve(name, dir);
        if (!p) { if (!(name in (pkg.optionalDependencies ?? {}))) { console.error("missing runtime module " + name); process.exit(1); } continue; }
        if (seen.has(p)) continue;
        seen.add(p);
        walk(p);
      }
    }
    walk(root);
    for (const p of [...seen].sort()) console.log(p.slice(root.length + 1));
  '
}
MODULES_OUT=$(runtime_modules) || die "cannot list the runtime node_modules"
mapfile -t MODULES <<< "$MODULES_OUT"

if [ "$ARCH" = "$HOSTARCH" ]; then ADDON_INPUTS=("$ADDON_SRC"); else ADDON_INPUTS=(src/tun/addon.cc src/tun/ringclock.cc src/tun/ringclock.h src/tun/fastpath.cc src/tun/fastpath.h src/tun/bpf.h binding.gyp firmware/lib.sh node_modules/node-addon-api/package.json); fi
input_key() {
  {
    echo "arch $ARCH compress $COMPRESS ${VPNMASQ_ZSTD_LEVEL:-12}"
    cat "$DEBS/manifest.txt"
    (cd "$ROOT" && find firmware/build-image.sh firmware/image firmware/files dist package.json "${ADDON_INPUTS[@]}" \
        "${MODULES[@]}" -type f ! -name '*.map' -print0 2>/dev/null | LC_ALL=C sort -z | xargs -0 sha256sum)
  } | sha256sum | cut -d' ' -f1
}
KEY=$(input_key)
INITRD="$OUT/initramfs.cpio.$COMPRESS"
[ "$COMPRESS" = zstd ] && INITRD="$OUT/initramfs.cpio.zst"
if [ "$FORCE" = 0 ] && [ -f "$OUT/key" ] && [ "$(cat "$OUT/key")" = "$KEY" ] && [ -f "$OUT/vmlinuz" ] && [ -f "$INITRD" ] && [ -f "$OUT/size-report.txt" ]; then
  note "up to date: ${OUT#"$ROOT"/} (inputs unchanged; --force rebuilds)"
  cat "$OUT/size-report.txt"
  exit 0
fi
START=$(date +%s)

# --- unpack the packages into a sysroot (once per manifest) --------------------
if [ ! -f "$SYSROOT/.manifest" ] || ! cmp -s "$SYSROOT/.manifest" "$DEBS/manifest.txt"; then
  note "unpacking $(wc -l < "$DEBS/manifest.txt") packages into ${SYSROOT#"$ROOT"/}"
  rm -rf "$SYSROOT"
  mkdir -p "$SYSROOT"
  while read -r _pkg _ver file; do
    dpkg-deb -x "$DEBS/$file" "$SYSROOT" || die "dpkg-deb -x $file failed"
  done < "$DEBS/manifest.txt"
  cp "$DEBS/manifest.txt" "$SYSROOT/.manifest"
fi
KVER=""
for d in "$SYSROOT"/lib/modules/*/; do [ -d "$d" ] && { KVER=$(basename "$d"); break; }; done
if [ -z "$KVER" ] || [ ! -f "$SYSROOT/boot/vmlinuz-$KVER" ]; then
  die "the kernel package $KPKG has no /boot/vmlinuz or /lib/modules"
fi
# The package's postinst would run depmod: do it here (kmod's depmod reads any arch's modules).
[ -f "$SYSROOT/lib/modules/$KVER/modules.dep" ] || depmod -b "$SYSROOT" "$KVER" || die "depmod for $KVER failed"

# --- the root file system --------------------------------------------------------
RFS="$OUT/rootfs"
rm -rf "$RFS" "$OUT/key"
mkdir -p "$RFS"/{bin,sbin,usr/bin,usr/sbin,usr/lib,usr/share,etc/config,proc,sys,dev,run,tmp,var,root,mnt,lib/modules}
ln -s ../run "$RFS/var/run"
ln -s ../tmp "$RFS/var/tmp"
chmod 1777 "$RFS/tmp"

# Copies a file from the sysroot to the same path in the image, following
# symlinks (a library's soname link becomes the file).
put() { # path-in-sysroot [path-in-image]
  local src="$SYSROOT$1" dst="$RFS${2:-$1}"
  [ -e "$src" ] || die "$1 is not in the unpacked packages"
  mkdir -p "$(dirname "$dst")"
  cp -L --preserve=mode "$src" "$dst"
}

# busybox: init, sh and the applets (their links are made at boot by
# `busybox --install -s`; init, sh and the mount of /proc come first).
put /bin/busybox
ln -s busybox "$RFS/bin/sh"
ln -s ../bin/busybox "$RFS/sbin/init"
ln -s bin/busybox "$RFS/init"

# iproute2's ip (the supervisor uses ip rule and ip -j, which busybox lacks)
put /bin/ip
ln -s ../bin/ip "$RFS/sbin/ip"
# nft: the fail-closed guard and the marks of WAN-bound traffic
put /usr/sbin/nft

# Node.js. Debian's build loads a few of its internals ("externalized
# builtins": cjs-module-lexer, undici's fetch, acorn) from /usr/share/nodejs;
# libnode names them, and those files are all it takes from those packages.
put /usr/bin/node
LIBNODE=
for f in "$SYSROOT"/usr/lib/"$TRIPLET"/libnode.so.* "$SYSROOT"/lib/"$TRIPLET"/libnode.so.*; do
  [ -f "$f" ] && { LIBNODE=$f; break; }
done
[ -n "$LIBNODE" ] || die "libnode is not in the unpacked packages"
while IFS= read -r js; do
  put "$js"
done < <(grep -aoE '/usr/share/nodejs/[A-Za-z0-9_./@-]+\.js' "$LIBNODE" | LC_ALL=C sort -u)
# Debian's node reads extra CA certificates from here and warns at every
# start when the file is missing; the router makes no TLS connections.
mkdir -p "$RFS/etc/ssl/certs"
: > "$RFS/etc/ssl/certs/ca-certificates.crt"

# Shared libraries: the NEEDED closure of every ELF file in the image,
# taken from the sysroot's library directories, plus the dynamic loader.
LIBDIRS=("/lib/$TRIPLET" "/usr/lib/$TRIPLET" /lib /usr/lib)
find_lib() {
  local d
  for d in "${LIBDIRS[@]}"; do
    if [ -e "$SYSROOT$d/$1" ]; then printf '%s\n' "$d/$1"; return 0; fi
  done
  return 1
}
elf_needed() { readelf -d "$1" 2>/dev/null | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'; }
is_elf() { [ "$(head -c4 "$1" | od -An -c | tr -d ' ')" = '177ELF' ]; }

# vpnmasq itself: dist (no source maps, no .wat), package.json, runtime node_modules, the addon.
APP=/usr/lib/vpnmasq
mkdir -p "$RFS$APP/build/Release" "$RFS$APP/node_modules"
cp package.json "$RFS$APP/"
(cd "$ROOT" && find dist -type f ! -name '*.map' ! -name '*.wat' -print0 | cpio -0 -pdm --quiet "$RFS$APP") || die "copying dist failed"
for m in "${MODULES[@]}"; do
  mkdir -p "$RFS$APP/$(dirname "$m")"
  cp -a "$ROOT/$m" "$RFS$APP/$m"
done
find "$RFS$APP/node_modules" \( -name '*.md' -o -name '*.d.ts' -o -name '*.map' -o -name '*.ts' -o -name '.github' -o -name 'test' -o -name 'benchmarks' -o -name 'docs' \) -prune -exec rm -rf {} + 2>/dev/null || true
if [ "$ARCH" = "$HOSTARCH" ]; then
  cp "$ADDON_SRC" "$RFS$APP/build/Release/vpnmasq_tun.node"
else
  note "cross-compiling the TUN addon for $ARCH with $CROSS_CXX (firmware/lib.sh)"
  # shellcheck source=firmware/lib.sh
  . "$FW/lib.sh"
  CXX=$CROSS_CXX vpnmasq_build_addon "$ARCH" "$CACHE/addon-$ARCH" || die "cross-compiling src/tun/addon.cc for $ARCH failed"
  cp "$CACHE/addon-$ARCH/vpnmasq_tun.node" "$RFS$APP/build/Release/vpnmasq_tun.node"
fi
cat > "$RFS/usr/bin/vpnmasq" <<EOF
#!/bin/sh
exec /usr/bin/node $APP/dist/cli/main.js "\$@"
EOF
chmod 755 "$RFS/usr/bin/vpnmasq"

# Every ELF in the image must be for the target and find its libraries.
declare -A HAVE_LIB=()
queue=()
while IFS= read -r -d '' f; do is_elf "$f" && queue+=("$f"); done < <(find "$RFS" -type f -print0)
for f in "${queue[@]}"; do
  readelf -h "$f" | grep -q "Machine:.*$ELFMACH" || die "${f#"$RFS"} is not an $ARCH binary"
done
INTERP=$(readelf -l "$RFS/usr/bin/node" | sed -n 's/.*Requesting program interpreter: \(.*\)\]/\1/p')
[ -n "$INTERP" ] || die "cannot read node's program interpreter"
put "$INTERP"
while [ ${#queue[@]} -gt 0 ]; do
  f=${queue[0]}; queue=("${queue[@]:1}")
  for lib in $(elf_needed "$f"); do
    [ -n "${HAVE_LIB[$lib]:-}" ] && continue
    path=$(find_lib "$lib") || die "${f#"$RFS"} needs $lib, which none of the fetched packages has (add its package to PACKAGES in firmware/build-image.sh)"
    HAVE_LIB[$lib]=$path
    put "$path" "/lib/$TRIPLET/$lib"
    queue+=("$RFS/lib/$TRIPLET/$lib")
  done
done

# Kernel modules: firmware/image/modules.list and their dependencies.
MODSRC="$SYSROOT/lib/modules/$KVER"
MODDST="$RFS/lib/modules/$KVER"
mkdir -p "$MODDST"
declare -A MODPATH=() WANT=()
while IFS= read -r line; do
  path=${line%%:*}
  base=$(basename "$path"); base=${base%%.ko*}; base=${base//-/_}
  MODPATH[$base]=$path
done < "$MODSRC/modules.dep"
declare -A BUILTIN=()
while IFS= read -r path; do
  base=$(basename "$path"); base=${base%%.ko*}; BUILTIN[${base//-/_}]=1
done < "$MODSRC/modules.builtin"
missing_mods=()
add_mod() {
  local m=${1//-/_}
  [ -n "${WANT[$m]:-}" ] && return 0
  WANT[$m]=1
  local dep
  # shellcheck disable=SC2013 # a modules.dep line is one word per dependency
  for dep in $(grep -E "^${MODPATH[$m]//./\\.}:" "$MODSRC/modules.dep" | cut -d: -f2-); do
    dep=$(basename "$dep"); dep=${dep%%.ko*}
    add_mod "$dep"
  done
}
while read -r m _; do
  case "$m" in ''|'#'*) continue ;; esac
  must=0; [ "${m#!}" != "$m" ] && { must=1; m=${m#!}; }
  m=${m//-/_}
  if [ -n "${MODPATH[$m]:-}" ]; then add_mod "$m"
  elif [ -n "${BUILTIN[$m]:-}" ]; then :
  elif [ "$must" = 1 ]; then die "kernel module $m is neither built into $KPKG nor a module of it"
  else missing_mods+=("$m")
  fi
done < "$FW/image/modules.list"
[ ${#missing_mods[@]} -eq 0 ] || note "not in this kernel (skipped): ${missing_mods[*]}"
# Debian's 6.12 ships its modules xz-compressed (.ko.xz): they go into the
# image plain (.ko), since busybox modprobe hands the file to finit_module
# first and only decompresses after the kernel has refused it ("Invalid ELF
# header magic" on the console for each one); the initramfs is compressed anyway.
unpack_mod() { # file
  case "$1" in
    *.ko.xz) command -v xz >/dev/null 2>&1 || die "missing tool 'xz' (apt-get install xz-utils): $KPKG's modules are .ko.xz"; xz -d "$1" ;;
    *.ko.zst) zstd -q -d --rm "$1" ;;
    *.ko.gz) gzip -d "$1" ;;
    *.ko) ;;
    *) die "unknown module file $1" ;;
  esac
}
for m in "${!WANT[@]}"; do
  p=${MODPATH[$m]}
  mkdir -p "$MODDST/$(dirname "$p")"
  cp "$MODSRC/$p" "$MODDST/$p"
  unpack_mod "$MODDST/$p"
done
cp "$MODSRC/modules.builtin" "$MODSRC/modules.builtin.modinfo" "$MODDST/" 2>/dev/null || true
[ -f "$MODSRC/modules.order" ] && sed -E 's/\.ko\.(xz|zst|gz)$/.ko/' "$MODSRC/modules.order" > "$MODDST/modules.order"
depmod -b "$RFS" "$KVER" || die "depmod for the image's modules failed"   # modules.dep, .alias … of the copied set (busybox modprobe reads them)

# The project's firmware files (init.d, hotplug.d, vpnmasq-respawn …), then
# the image's own (inittab, rcS). The shipped UCI default goes to
# /usr/share/vpnmasq: rcS writes /etc/config/vpnmasq from it for the guest's
# devices unless the image (an overlay) already brings one.
cp -a "$FW/files/." "$RFS/"
mkdir -p "$RFS/usr/share/vpnmasq"
mv "$RFS/etc/config/vpnmasq" "$RFS/usr/share/vpnmasq/vpnmasq.default"
# The package ships vpnmasq off (option enabled '0'); the image exists to run
# it, so its own configuration is on. Only the main section's line changes.
sed -i "s/^\toption enabled '0'\t# '1' to run.*\$/\toption enabled '1'\t# the image's own configuration: on/" "$RFS/usr/share/vpnmasq/vpnmasq.default"
grep -q "^	option enabled '1'" "$RFS/usr/share/vpnmasq/vpnmasq.default" || die "could not switch on the image's /etc/config/vpnmasq (option enabled)"
cp -a "$FW/image/rootfs/." "$RFS/"
[ -x "$RFS/usr/sbin/vpnmasq-respawn" ] || die "firmware/files/usr/sbin/vpnmasq-respawn is missing or not executable: init has nothing to start vpnmasq with"
cat > "$RFS/etc/vpnmasq-image" <<EOF
ARCH=$ARCH
KERNEL=$KVER
KERNEL_PACKAGE=$(awk -v k="$KPKG" '$1 == k { print $1, $2 }' "$DEBS/manifest.txt")
NODE_PACKAGE=$(grep '^nodejs ' "$DEBS/manifest.txt" | cut -d' ' -f1,2)
VPNMASQ=$(node -p 'require("./package.json").version')
EOF

# --- pack --------------------------------------------------------------------------
EPOCH=${SOURCE_DATE_EPOCH:-$(git -C "$ROOT" log -1 --format=%ct 2>/dev/null || echo 0)}
find "$RFS" -exec touch -h -d "@$EPOCH" {} +
note "packing the initramfs ($COMPRESS)"
rm -f "$OUT"/initramfs.cpio.*
(cd "$RFS" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc -R 0:0 --reproducible --quiet) > "$OUT/initramfs.cpio" ||
  die "cpio failed"
if [ "$COMPRESS" = zstd ]; then
  zstd -q "-${VPNMASQ_ZSTD_LEVEL:-12}" -T0 -f --rm "$OUT/initramfs.cpio" -o "$INITRD"
else
  xz -9e --check=crc32 -T1 -f "$OUT/initramfs.cpio"
fi
cp "$SYSROOT/boot/vmlinuz-$KVER" "$OUT/vmlinuz"
KNOTE=""
if [ "$ARCH" = aarch64 ] && [ "$(head -c2 "$OUT/vmlinuz" | od -An -tx1 | tr -d ' ')" != 1f8b ]; then
  # Debian's arm64 kernel is a plain Image (31 MiB); QEMU and U-Boot's booti
  # take it gzip-compressed too.
  gzip -9 -n -c "$OUT/vmlinuz" > "$OUT/vmlinuz.gz" && mv "$OUT/vmlinuz.gz" "$OUT/vmlinuz"
  KNOTE=", Image.gz"
fi
ln -sfn "$(basename "$INITRD")" "$OUT/initramfs"

# --- size report -----------------------------------------------------------------------
mib() { awk -v b="$1" 'BEGIN { printf "%.1f MiB", b / 1048576 }'; }
dsize() { du -sb "$@" 2>/dev/null | awk '{ s += $1 } END { print s + 0 }'; }
K=$(stat -c %s "$OUT/vmlinuz"); I=$(stat -c %s "$INITRD"); T=$((K + I)); U=$(dsize "$RFS")
{
  echo "vpnmasq firmware image, $ARCH ($(date -u -d "@$EPOCH" +%F)), built in $(( $(date +%s) - START )) s"
  printf '  %-34s %s\n' "kernel ($KVER$KNOTE)" "$(mib "$K")"
  printf '  %-34s %s\n' "initramfs ($COMPRESS)" "$(mib "$I")"
  printf '  %-34s %s of %d MiB\n' "total compressed" "$(mib "$T")" "$BUDGET_MIB"
  printf '  %-34s %s\n' "root file system, unpacked" "$(mib "$U")"
  printf '    %-32s %s\n' "node + libnode + ICU + libs" "$(mib $(( $(dsize "$RFS/usr/bin/node") + $(dsize "$RFS/lib/$TRIPLET") )))"
  printf '    %-32s %s\n' "vpnmasq (dist, node_modules, addon)" "$(mib "$(dsize "$RFS$APP")")"
  printf '    %-32s %s\n' "kernel modules (${#WANT[@]})" "$(mib "$(dsize "$RFS/lib/modules")")"
  printf '    %-32s %s\n' "busybox + iproute2" "$(mib $(( $(dsize "$RFS/bin/busybox") + $(dsize "$RFS/bin/ip") )))"
  # (awk, not a regex: the backports kernel's name has a '+', 6.12.95+deb12)
  echo "  Debian packages: $(awk -v k="$KPKG" '$1 == k || $1 == "nodejs" || $1 == "busybox-static" || $1 == "iproute2" { print $1, $2 }' "$DEBS/manifest.txt" | paste -sd, | sed 's/,/, /g')"
  echo "  files: ${OUT#"$ROOT"/}/vmlinuz ${INITRD#"$ROOT"/}"
} > "$OUT/size-report.txt"
cat "$OUT/size-report.txt"
[ "$T" -le $((BUDGET_MIB * 1048576)) ] || die "the image is $(mib "$T"), over the budget of $BUDGET_MIB MiB"
echo "$KEY" > "$OUT/key"
