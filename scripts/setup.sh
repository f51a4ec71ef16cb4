#!/usr/bin/env bash
# Idempotent set-up on Debian as root: system packages, a virtualenv in .venv, saltmarsh installed
# into it (editable, with the test tools). Safe to run again: each step is skipped when done.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(python3 python3-venv python3-dev gcc pkg-config libvirt-dev libvirt-clients qemu-utils
    mmdebstrap syslinux syslinux-common mtools dosfstools fdisk e2fsprogs zstd)
# shellcheck source=scripts/apt-packages.sh
source scripts/apt-packages.sh
ensure_packages setup "the steps below will fail" "${APT_PACKAGES[@]}"

PYTHON=/usr/bin/python3
if [[ ! -x .venv/bin/python ]]; then
    echo "setup: creating .venv"
    "$PYTHON" -m venv .venv
fi

# Every package comes at the version constraints.txt pins, so every machine gets the same install;
# upgrading is a commit of a new constraints.txt (scripts/update-constraints.sh makes one).
# Reinstall only when the declared or pinned dependencies change (the install is editable, so code
# changes need none).
stamp=".venv/.saltmarsh-$(sha256sum setup.cfg pyproject.toml constraints.txt | sha256sum | cut -c1-16)"
if [[ ! -e $stamp ]]; then
    echo "setup: installing saltmarsh and its pinned dependencies into .venv"
    # First the pinned pip: Debian's older one does not know --build-constraint.
    .venv/bin/pip install -q -c constraints.txt pip
    .venv/bin/pip install -q -c constraints.txt --build-constraint constraints.txt -e '.[test]'
    rm -f .venv/.saltmarsh-*
    touch "$stamp"
fi
