#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Install, from Debian 12's packages, whatever blkmig needs to build, test,
# demo and benchmark and is not installed yet.  Safe to run again: it only
# calls apt-get when something is missing.
set -euo pipefail

packages=(
	# build
	gcc make pkg-config meson ninja-build
	libxxhash-dev libjson-c-dev libgnutls28-dev libnbd-dev
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
)

missing=()
for p in "${packages[@]}"; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
		missing+=("$p")
	fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "install-deps: installing ${missing[*]}" >&2
sudo=""
if [ "$(id -u)" -ne 0 ]; then
	command -v sudo >/dev/null || { echo "install-deps: need root (or sudo) to install ${missing[*]}" >&2; exit 1; }
	sudo="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
