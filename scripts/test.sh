#!/usr/bin/env bash
# Set up (idempotent) and run the whole test suite. This is what .ci/run calls.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/install-libvirtd.sh
bash scripts/install-container-tools.sh
exec .venv/bin/python -m pytest "$@"
