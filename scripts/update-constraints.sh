#!/usr/bin/env bash
# Make a new constraints.txt from the newest releases that setup.cfg allows: a throwaway venv gets
# an unpinned install, and its `pip freeze` becomes the pins. Run it on purpose, read the diff, run
# the tests, and commit constraints.txt with them: that is how saltmarsh upgrades a dependency.
set -euo pipefail
cd "$(dirname "$0")/.."
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
/usr/bin/python3 -m venv "$scratch/venv"
"$scratch/venv/bin/pip" install -q --upgrade pip setuptools wheel
"$scratch/venv/bin/pip" install -q '.[test]'
{
    echo "# Every Python package saltmarsh installs, pinned: scripts/setup.sh installs with '-c constraints.txt'."
    echo "# Regenerate on purpose with 'bash scripts/update-constraints.sh' and commit the result with its CI run."
    echo "# pip, and the build back-ends (saltmarsh itself, libvirt-python's sdist) through --build-constraint."
    "$scratch/venv/bin/pip" freeze --all | grep -E '^(pip|setuptools|wheel)=='
    echo "# Everything setup.cfg asks for, with its test extras."
    "$scratch/venv/bin/pip" freeze --exclude-editable | grep -vE '^(saltmarsh|pip|setuptools|wheel)=='
} > constraints.txt
echo "constraints.txt rewritten; review 'git diff constraints.txt', run 'bash scripts/test.sh', then commit"
