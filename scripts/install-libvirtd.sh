#!/usr/bin/env bash
# Idempotent install (Debian, as root) of a real libvirtd + QEMU for the integration tests
# (tests/integration). Nothing is started here: tests/realvirt.py starts and stops the daemons.
# Packages already installed are skipped; apt-get update runs only when something is missing.
set -euo pipefail

PACKAGES=(libvirt-daemon-system libvirt-clients qemu-system-x86 qemu-utils dnsmasq-base)
missing=()
for pkg in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
    if ((EUID != 0)); then
        echo "install-libvirtd: need root to install ${missing[*]}; skipping (integration tests will report why)" >&2
        exit 0
    fi
    echo "install-libvirtd: installing ${missing[*]}"
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
