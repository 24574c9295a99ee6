#!/usr/bin/env bash
# Check that the door runtime installs and runs on a 64-bit Raspberry Pi OS-like userland, on an x86 machine:
# an arm64 Debian bookworm root (what Raspberry Pi OS 64-bit is built on) run through qemu-user.
#
#   tests/pi/pi_check.sh            build the root once (cached), then check the working tree in it
#   tests/pi/pi_check.sh --clean    unmount and delete the cached root
#
# On the host: the project's wheel, built from a copy of the working tree (`python -m build`, as `make wheel`; or
# PI_WHEEL). Inside the root (tests/pi/in_root.sh): a fresh venv, the wheel installed with `[door]` (exactly what the
# README has a Pi owner copy over and install), no TensorFlow pulled, installed versions, `toolkit door bench` on
# that install, tests/runtime (with pytest and onnx added) importing the installed wheel, and the committed demo
# model's probabilities on a few images compared with the same images on x86 (tests/pi/compare.py).
#
# Needs root (debootstrap, chroot, mounts), Debian's debootstrap + qemu-user-static + binfmt-support
# (installed with apt-get when missing), and network to the Debian mirror and the package index.
# Emulated timings say nothing about a real Pi; correctness does.
#
# Settings (environment):
#   PI_CPU=cortex-a72      qemu CPU: cortex-a72 (Pi 4) or cortex-a76 (Pi 5); qemu's default `max` is ~19x slower
#   PI_MIRROR=URL          Debian mirror (default: the first one in this machine's apt sources)
#   PI_CACHE=DIR           where the root and logs live (default: .cache/pi, git-ignored)
#   PI_TESTS="..."         pytest arguments run in the root (default: tests/runtime, see below)
#   PYTHON=.venv/bin/python  x86 interpreter with the toolkit and the dev extra installed: the reference run, and
#                          the wheel's build (`build` and setuptools, without isolation)
#   PI_WHEEL=FILE.whl      install this wheel instead of building one from the working tree
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
CACHE=${PI_CACHE:-$REPO/.cache/pi}
ROOTFS=$CACHE/root
LOGS=$CACHE/logs
SUITE=bookworm
CPU=${PI_CPU:-cortex-a72}
PYTHON=${PYTHON:-$REPO/.venv/bin/python}
# python3-venv brings ensurepip; ca-certificates for the package index. Changing this list rebuilds the root.
ROOT_PACKAGES=python3,python3-venv,ca-certificates
ROOT_STAMP_TEXT="$SUITE arm64 minbase $ROOT_PACKAGES"
# All of tests/runtime (about 2.5 min under qemu) but the import-linter contract (static analysis, the same
# on every CPU; import-linter is not part of a door install) and test_runtime_server.py, whose clients
# (httpx, tritonclient) are dev tools a door install does not have.
DEFAULT_TESTS="tests/runtime --ignore tests/runtime/test_runtime_server.py"
DEFAULT_TESTS+=" --deselect tests/runtime/test_runtime_tf_free.py::test_import_linter_contracts_hold"
PI_TESTS=${PI_TESTS:-$DEFAULT_TESTS}
IN=/opt/pi-check  # the check's folder inside the root

die() { echo "error: $*" >&2; exit 2; }
say() { echo "pi-check: $*"; }

# Every mount below $1, deepest first (bind mounts of /dev, /proc, pip folders must go before any rm).
mounts_under() {
  awk -v p="$1/" 'index($2, p) == 1 { print $2 }' /proc/self/mounts | sort -r
}

unmount_under() {
  local m
  for m in $(mounts_under "$1"); do
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
  done
  if [ -n "$(mounts_under "$1")" ]; then
    die "could not unmount everything under $1 (see: grep '$1' /proc/self/mounts); unmount by hand, then retry"
  fi
}

# Delete a folder that held a root: unmount first and never cross into another filesystem.
remove_tree() {
  [ -e "$1" ] || return 0
  unmount_under "$1"
  rm -rf --one-file-system "$1"
}

need_root() {
  [ "$(id -u)" = 0 ] && return 0
  if command -v sudo >/dev/null 2>&1; then
    exec sudo --preserve-env "$0" "$@"
  fi
  die "pi-check needs root for debootstrap, chroot and mounts, and sudo is not installed; run it as root"
}

clean() {
  need_root --clean
  if [ -d "$CACHE" ]; then
    exec 9>"$CACHE/.lock"
    flock -n 9 || die "a pi-check is running (lock: $CACHE/.lock); let it finish first"
  fi
  remove_tree "$CACHE"
  say "removed $CACHE"
}

install_host_tools() {
  local missing=()
  command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
  [ -x /usr/bin/qemu-aarch64-static ] || missing+=(qemu-user-static)
  command -v update-binfmts >/dev/null 2>&1 || missing+=(binfmt-support)
  [ ${#missing[@]} = 0 ] && return 0
  command -v apt-get >/dev/null 2>&1 || die "pi-check needs ${missing[*]} (Debian packages) and apt-get is not here"
  say "installing ${missing[*]} on the host (apt-get)"
  { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"; } \
    >"$LOGS/apt-host.log" 2>&1 \
    || die "apt-get install ${missing[*]} failed; see $LOGS/apt-host.log"
}

enable_binfmt() {
  if [ ! -e /proc/sys/fs/binfmt_misc/status ]; then
    mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc 2>/dev/null \
      || die "cannot mount binfmt_misc at /proc/sys/fs/binfmt_misc (a container needs --privileged); qemu cannot run arm64 programs without it"
  fi
  if [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
    update-binfmts --enable qemu-aarch64 >/dev/null 2>&1 || true
  fi
  [ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] \
    || die "binfmt_misc has no qemu-aarch64 entry and 'update-binfmts --enable qemu-aarch64' did not add one; reinstall qemu-user-static"
  grep -qx enabled /proc/sys/fs/binfmt_misc/qemu-aarch64 \
    || die "the qemu-aarch64 binfmt entry is disabled; run: update-binfmts --enable qemu-aarch64"
}

# The first Debian mirror of this machine's apt sources (deb822 or one-line format), else deb.debian.org.
debian_mirror() {
  if [ -n "${PI_MIRROR:-}" ]; then echo "$PI_MIRROR"; return; fi
  local uri
  uri=$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '/^URIs:/ { for (i = 2; i <= NF; i++) print $i }' \
    | grep -v -e security -e '^#' | head -n1 || true)
  if [ -z "$uri" ]; then
    uri=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
      | awk '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i ~ /^(https?|ftp):/) { print $i; break } }' \
      | grep -E '/debian/?$' | grep -v security | head -n1 || true)
  fi
  echo "${uri:-http://deb.debian.org/debian}"
}

# The package index pip will use: PIP_INDEX_URL, else the host's pip configuration, else PyPI.
pip_index() {
  local url=${PIP_INDEX_URL:-}
  if [ -z "$url" ]; then
    url=$("$PYTHON" -m pip config get global.index-url 2>/dev/null || true)
  fi
  echo "${url:-https://pypi.org/simple}"
}

reachable() {
  "$PYTHON" - "$1" <<'EOF' >/dev/null 2>&1
import sys, urllib.request
urllib.request.urlopen(sys.argv[1], timeout=20).read(1)
EOF
}

build_root() {
  local mirror=$1
  if [ -f "$ROOTFS/.pi-check-root" ] && [ "$(cat "$ROOTFS/.pi-check-root")" = "$ROOT_STAMP_TEXT" ]; then
    say "arm64 root: cached at $ROOTFS"
    return
  fi
  say "arm64 root: debootstrap --arch=arm64 --variant=minbase $SUITE from $mirror (a few minutes)"
  local start=$SECONDS
  remove_tree "$ROOTFS.partial"
  remove_tree "$ROOTFS"
  if ! debootstrap --arch=arm64 --variant=minbase --include="$ROOT_PACKAGES" "$SUITE" "$ROOTFS.partial" "$mirror" \
    >"$LOGS/debootstrap.log" 2>&1; then
    unmount_under "$ROOTFS.partial"
    tail -n 15 "$LOGS/debootstrap.log" >&2
    die "debootstrap failed; see $LOGS/debootstrap.log"
  fi
  unmount_under "$ROOTFS.partial"
  echo "$ROOT_STAMP_TEXT" >"$ROOTFS.partial/.pi-check-root"
  mv "$ROOTFS.partial" "$ROOTFS"
  say "arm64 root: built in $((SECONDS - start)) s"
}

# /proc/cpuinfo as a Raspberry Pi shows it. qemu-user passes the host's x86 cpuinfo through, and
# onnxruntime's CPU detection crashes on it (segfault at import); one entry per host core.
write_cpuinfo() {
  local part variant rev features model n i
  case "$CPU" in
    cortex-a76)
      part=0xd0b variant=0x4 rev=1 model="Raspberry Pi 5 Model B Rev 1.0"
      features="fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp" ;;
    cortex-a72)
      part=0xd08 variant=0x0 rev=3 model="Raspberry Pi 4 Model B Rev 1.5"
      features="fp asimd evtstrm crc32 cpuid" ;;
    *) die "PI_CPU=$CPU: use cortex-a72 (Pi 4) or cortex-a76 (Pi 5)" ;;
  esac
  n=$(nproc)
  for ((i = 0; i < n; i++)); do
    printf 'processor\t: %d\nBogoMIPS\t: 108.00\nFeatures\t: %s\nCPU implementer\t: 0x41\n' "$i" "$features"
    printf 'CPU architecture: 8\nCPU variant\t: %s\nCPU part\t: %s\nCPU revision\t: %s\n\n' "$variant" "$part" "$rev"
  done
  printf 'Hardware\t: BCM2835\nModel\t\t: %s\n' "$model"
}

MOUNTED=0
mount_root() {
  MOUNTED=1
  mount -t proc proc "$ROOTFS/proc"
  write_cpuinfo >"$CACHE/cpuinfo"
  mount --bind "$CACHE/cpuinfo" "$ROOTFS/proc/cpuinfo"
  # CPU topology for onnxruntime's thread pool; optional (some containers refuse a sysfs mount).
  mount -t sysfs -o ro sysfs "$ROOTFS/sys" 2>/dev/null || true
  mount --rbind /dev "$ROOTFS/dev"
  mount --make-rslave "$ROOTFS/dev"
  # The real photos tests/runtime looks for beside the checkout (its Haar face test), when this machine has them.
  if [ -d "$REPO/../shared/datasets/smiles" ]; then
    mkdir -p "$ROOTFS$IN/shared/datasets/smiles"
    mount --bind -o ro "$REPO/../shared/datasets/smiles" "$ROOTFS$IN/shared/datasets/smiles"
  fi
  # Local wheel folders and file:// indexes named by the host's pip configuration, at the same paths.
  local p
  for p in "${PIP_DIRS[@]}"; do
    mkdir -p "$ROOTFS$p"
    mount --bind -o ro "$p" "$ROOTFS$p" 2>/dev/null || mount --bind "$p" "$ROOTFS$p"
  done
}

cleanup() {
  [ "$MOUNTED" = 1 ] && unmount_under "$ROOTFS"
  return 0
}

# The host's pip configuration, CA certificates and name resolution, copied into the root.
PIP_DIRS=()
copy_host_config() {
  local f dst
  local configs=(/etc/pip.conf /etc/xdg/pip/pip.conf "$HOME/.config/pip/pip.conf" "$HOME/.pip/pip.conf")
  [ -n "${PIP_CONFIG_FILE:-}" ] && configs+=("$PIP_CONFIG_FILE")
  rm -f "$ROOTFS/etc/pip.conf" "$ROOTFS/etc/xdg/pip/pip.conf" "$ROOTFS/root/.config/pip/pip.conf"
  for f in "${configs[@]}"; do
    [ -f "$f" ] || continue
    case "$f" in "$HOME"/*) dst=$ROOTFS/root${f#"$HOME"} ;; *) dst=$ROOTFS$f ;; esac
    install -D -m 644 "$f" "$dst"
  done
  # Absolute paths named in those files and in PIP_*/CA variables: files are copied, folders bind-mounted.
  local paths
  paths=$( { cat "${configs[@]}" 2>/dev/null || true; env | grep -E '^(PIP_|REQUESTS_CA_BUNDLE|SSL_CERT_)' || true; } \
    | grep -oE '(file://)?/[^[:space:],;"'\'']+' | sed 's|^file://||' | sort -u)
  for f in $paths; do
    f=${f%/}
    # A local PEP 503 mirror's pages link to files beside simple/: mount the mirror's whole folder.
    [ "${f##*/}" = simple ] && [ -d "$f" ] && f=${f%/simple}
    if [ -f "$f" ]; then
      install -D -m 644 "$f" "$ROOTFS$f"
    elif [ -d "$f" ] && [ "$f" != / ]; then
      PIP_DIRS+=("$f")
    fi
  done
  [ -f /etc/ssl/certs/ca-certificates.crt ] && install -D -m 644 /etc/ssl/certs/ca-certificates.crt \
    "$ROOTFS/etc/ssl/certs/ca-certificates.crt"
  rm -f "$ROOTFS/etc/resolv.conf"
  cp -L /etc/resolv.conf "$ROOTFS/etc/resolv.conf" 2>/dev/null || true
  cp -L /etc/hosts "$ROOTFS/etc/hosts" 2>/dev/null || true
}

# The working tree as git sees it (tracked and new files, nothing ignored), else the folder minus caches.
copy_source() {
  rm -rf --one-file-system "$ROOTFS$IN/src"
  mkdir -p "$ROOTFS$IN/src"
  if git -C "$REPO" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    (cd "$REPO" && git ls-files -z --cached --others --exclude-standard \
      | while IFS= read -r -d '' f; do [ -f "$f" ] && printf '%s\0' "$f"; done \
      | tar --null -T - -cf -) | tar -xf - -C "$ROOTFS$IN/src"
  else
    tar -C "$REPO" --exclude=./.venv --exclude=./.cache --exclude=./runs --exclude=./.git -cf - . \
      | tar -xf - -C "$ROOTFS$IN/src"
  fi
}

# The wheel a Pi owner copies over, built on the host (a pure-Python wheel: the same file on x86 and arm64) from
# the copied source; the copy's toolkit/ then goes, so the tests in the root can only import the installed wheel.
build_wheel() {
  local src=$ROOTFS$IN/src dist=$ROOTFS$IN/dist
  mkdir -p "$dist"
  if [ -n "${PI_WHEEL:-}" ]; then
    [ -f "$PI_WHEEL" ] && [ "${PI_WHEEL%.whl}" != "$PI_WHEEL" ] || die "PI_WHEEL=$PI_WHEEL: not a .whl file"
    cp "$PI_WHEEL" "$dist/"
  elif ! "$PYTHON" -m build --no-isolation --outdir "$dist" "$src" >"$LOGS/build.log" 2>&1; then
    tail -n 15 "$LOGS/build.log" >&2
    die "building the wheel failed (does $PYTHON have the dev extra's build and setuptools?); see $LOGS/build.log"
  fi
  rm -rf --one-file-system "$src/toolkit" "$src/build" "$src"/*.egg-info
  say "wheel: $(cd "$dist" && ls -- *.whl) ($(du -k "$dist"/*.whl | cut -f1) KiB)"
}

main() {
  local start=$SECONDS
  need_root "$@"
  case "$CPU" in cortex-a72 | cortex-a76) ;; *) die "PI_CPU=$CPU: use cortex-a72 (Pi 4) or cortex-a76 (Pi 5)" ;; esac
  mkdir -p "$LOGS"
  exec 9>"$CACHE/.lock"
  flock -n 9 || die "another pi-check is running (lock: $CACHE/.lock)"
  [ -x "$PYTHON" ] || die "$PYTHON not found; run 'make install' first (the x86 reference run needs it)"
  install_host_tools
  enable_binfmt
  local mirror index
  mirror=$(debian_mirror)
  index=$(pip_index)
  if [ ! -f "$ROOTFS/.pi-check-root" ]; then
    reachable "${mirror%/}/dists/$SUITE/Release" \
      || die "cannot reach the Debian mirror ${mirror%/}/dists/$SUITE/Release; pi-check needs network to it (or set PI_MIRROR)"
  fi
  reachable "${index%/}/pip/" || die "cannot reach the package index ${index%/}/pip/; pi-check needs network to it"
  build_root "$mirror"

  unmount_under "$ROOTFS"  # mounts left by a killed run
  say "x86 reference: demo model on a few images ($PYTHON)"
  remove_tree "$ROOTFS$IN"
  mkdir -p "$ROOTFS$IN/x86"
  "$PYTHON" "$REPO/tests/pi/compare.py" reference --model "$REPO/exported/happy" --out "$ROOTFS$IN/x86"
  copy_source
  build_wheel
  copy_host_config
  trap cleanup EXIT
  mount_root

  say "running in the arm64 root (QEMU_CPU=$CPU)"
  local envs=(HOME=/root PATH=/usr/local/bin:/usr/bin:/bin LANG=C.UTF-8 QEMU_CPU="$CPU" PI_TESTS="$PI_TESTS")
  local name
  for name in $(env | sed -nE 's/^(PIP_[A-Z0-9_]+|REQUESTS_CA_BUNDLE|SSL_CERT_(FILE|DIR)|(https?|no)_proxy|(HTTPS?|NO)_PROXY)=.*/\1/p'); do
    envs+=("$name=${!name}")
  done
  local rc=0
  chroot "$ROOTFS" /usr/bin/env -i "${envs[@]}" /bin/bash "$IN/src/tests/pi/in_root.sh" || rc=$?
  cleanup
  MOUNTED=0
  local took=$((SECONDS - start))
  if [ "$rc" != 0 ]; then
    die "the arm64 check failed (exit $rc) after $((took / 60))m$((took % 60))s; logs in $ROOTFS$IN/logs"
  fi
  say "passed in $((took / 60))m$((took % 60))s wall time (QEMU_CPU=$CPU)"
}

if [ "${1:-}" = --clean ]; then
  clean
else
  main "$@"
fi
