#!/usr/bin/env bash
# Idempotent install (Debian, as root) of what the booted-container tests need (tests/container.py,
# tests/integration/test_host_setup_container.py): systemd-nspawn, ip netns, nsenter, and
# dpkg-scanpackages for the local apt repository. Packages already installed are skipped; apt-get
# update runs only when something is missing.
set -euo pipefail

PACKAGES=(systemd-container iproute2 util-linux dpkg-dev zstd)
missing=()
for pkg in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
    if ((EUID != 0)); then
        echo "install-container-tools: need root to install ${missing[*]}; skipping (container tests will say why)" >&2
        exit 0
    fi
    echo "install-container-tools: installing ${missing[*]}"
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
