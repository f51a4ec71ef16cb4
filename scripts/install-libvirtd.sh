#!/usr/bin/env bash
# Idempotent install (Debian, as root) of a real libvirtd + QEMU for the integration tests
# (tests/integration). Nothing is started here: tests/realvirt.py starts and stops the daemons.
# Packages already installed are skipped; apt-get update runs only when something is missing.
set -euo pipefail

PACKAGES=(libvirt-daemon-system libvirt-clients qemu-system-x86 qemu-utils dnsmasq-base)
# shellcheck source=scripts/apt-packages.sh
source "$(dirname "$0")/apt-packages.sh"
ensure_packages install-libvirtd "integration tests will report why" "${PACKAGES[@]}"
