#!/usr/bin/env bash
# Idempotent install (Debian, as root) of what the booted-container tests need (tests/container.py,
# tests/integration/test_host_setup_container.py): systemd-nspawn, ip netns, nsenter, and
# dpkg-scanpackages for the local apt repository. Packages already installed are skipped; apt-get
# update runs only when something is missing.
set -euo pipefail

PACKAGES=(systemd-container iproute2 util-linux dpkg-dev zstd)
# shellcheck source=scripts/apt-packages.sh
source "$(dirname "$0")/apt-packages.sh"
ensure_packages install-container-tools "container tests will say why" "${PACKAGES[@]}"
