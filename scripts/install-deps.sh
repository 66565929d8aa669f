#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Install, from Debian 12's packages, whatever blkmig needs to build, test,
# demo and benchmark and is not installed yet.  Safe to run again: it only
# calls apt-get when something is missing.
#
# It also provides the guest kit of tests/integration/guest.sh: the kernel
# of Debian's linux-image-amd64, unpacked into a cache directory
# (BLKMIG_GUEST_DIR, default /var/cache/blkmig/guest) rather than installed:
# installing a kernel on the host runs initramfs and boot loader hooks and
# writes /boot, none of which the test needs.  linux-image-amd64 is a
# metapackage; its dependency, the versioned linux-image-6.1.0-N-amd64, is
# fetched with `apt-get download`, unpacked with `dpkg-deb -x` into
# DIR/<package> and given a modules.dep (depmod -b; the package leaves that
# to its postinst).  DIR/current points at it.  This happens only when
# DIR/current is not already that package, so a second run costs one
# apt-cache query.  busybox-static (the guest's shell and tools), kmod
# (depmod) and libc6-dev (libc.a for `gcc -static`, the guest's writer) come
# as ordinary packages.
set -euo pipefail

packages=(
	# build
	gcc make pkg-config meson ninja-build
	libxxhash-dev libjson-c-dev libgnutls28-dev libnbd-dev
	# --compress zstd (the native stream's compressed chunks)
	libzstd-dev
	# tests
	libcmocka-dev python3 attr coreutils clang-format
	# peers used by the integration tests and benchmarks
	qemu-utils qemu-system-x86 libnbd-bin socat netcat-openbsd
	# certtool and psktool, openssl rand: the TLS tests' credentials
	gnutls-bin openssl
	# ss, for bench/qemu-converge.py's count of bytes on the wire
	iproute2
	# disk-faults.sh: device-mapper error segments over loop devices, or
	# qemu-storage-daemon (qemu-system-x86) FUSE exports where there is no dm
	dmsetup
	# guest.sh: a QEMU guest's initramfs (busybox, a static writer, the
	# virtio modules of the kernel kit below)
	busybox-static libc6-dev kmod
	# bench/wan.sh (emulated WAN: ping, iperf3, ethtool to inspect offloads)
	# and bench/compare (nbdkit's file plugin, /usr/bin/time)
	iputils-ping iperf3 ethtool nbdkit time
)

sudo=""
need_root() {
	[ "$(id -u)" -eq 0 ] && return 0
	command -v sudo >/dev/null || { echo "install-deps: need root (or sudo) to $1" >&2; exit 1; }
	sudo="sudo"
}
export DEBIAN_FRONTEND=noninteractive

missing=()
for p in "${packages[@]}"; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
		missing+=("$p")
	fi
done
if [ ${#missing[@]} -gt 0 ]; then
	echo "install-deps: installing ${missing[*]}" >&2
	need_root "install ${missing[*]}"
	$sudo apt-get update -qq
	$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The guest kernel kit (see the top of this file).
guest_dir=${BLKMIG_GUEST_DIR:-/var/cache/blkmig/guest}
kpkg=$(apt-cache depends linux-image-amd64 2>/dev/null |
	sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*-amd64\)$/\1/p' | head -n 1)
if [ -z "$kpkg" ]; then
	need_root "refresh the package lists"
	$sudo apt-get update -qq
	kpkg=$(apt-cache depends linux-image-amd64 2>/dev/null |
		sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*-amd64\)$/\1/p' | head -n 1)
	[ -n "$kpkg" ] || { echo "install-deps: apt knows no linux-image-amd64" >&2; exit 1; }
fi
[ "$(readlink "$guest_dir/current" 2>/dev/null)" = "$kpkg" ] && exit 0

echo "install-deps: unpacking $kpkg into $guest_dir (guest kernel for guest.sh)" >&2
mkdir -p "$guest_dir" 2>/dev/null || { need_root "create $guest_dir"; $sudo mkdir -p "$guest_dir"; }
[ -w "$guest_dir" ] || need_root "write $guest_dir"
work=$($sudo mktemp -d "$guest_dir/.unpack.XXXXXX")
trap '$sudo rm -rf "$work"' EXIT
# apt-get download runs as the _apt user when it can; let it write here.
$sudo chmod 755 "$work"
[ "$(id -u)" -eq 0 ] && chown _apt "$work" 2>/dev/null || true
if ! (cd "$work" && $sudo apt-get download -qq "$kpkg" 2>/dev/null); then
	# Stale package lists name a version the mirror no longer has.
	need_root "refresh the package lists"
	$sudo apt-get update -qq
	(cd "$work" && $sudo apt-get download -qq "$kpkg")
fi
$sudo mkdir "$work/tree"
$sudo dpkg-deb -x "$work"/"$kpkg"_*.deb "$work/tree"
kver=$(ls "$work/tree/lib/modules")
$sudo depmod -b "$work/tree" "$kver"
$sudo rm -rf "${guest_dir:?}/$kpkg"
$sudo mv "$work/tree" "$guest_dir/$kpkg"
$sudo ln -sfn "$kpkg" "$guest_dir/current.new"
$sudo mv -T "$guest_dir/current.new" "$guest_dir/current"
# Older kits are of no further use.
for old in "$guest_dir"/linux-image-*; do
	[ "$old" = "$guest_dir/$kpkg" ] || $sudo rm -rf "$old"
done
