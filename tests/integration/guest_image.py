"""The Debian guest image the real-guest tests boot, built once per test session by ``saltmarsh image build``.

Built from this tree (its agent is the one under test), into a file root a test's master serves as
``master://debian-12.qcow2``. The Debian base is cached under IMAGE_CACHE for a week, so a build costs
about a minute; from nothing about five. conftest.py's session fixture ``guest_image`` calls
``build_guest_image`` once, so every test that boots a guest shares one build.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import yaml

from ..cluster import BIN

IMAGE_CACHE = Path("/var/cache/saltmarsh-images/tests")
IMAGE = "debian-12"
BUILD_TIMEOUT = 1200.0


def build_guest_image() -> Path:
    """A file root holding a freshly built ``debian-12.qcow2`` (conftest's session fixture ``guest_image``)."""
    config_dir = IMAGE_CACHE / "master"
    roots = IMAGE_CACHE / "roots"
    for directory in (config_dir, roots):
        directory.mkdir(parents=True, exist_ok=True)
    (config_dir / "master.yaml").write_text(yaml.safe_dump({
        "root_dir": str(IMAGE_CACHE / "state"), "file_roots": [str(roots)], "interface": "127.0.0.1"}))
    started = time.monotonic()
    # The Debian base is shared with test_image_build through one cache (a lock keeps builds apart).
    build = subprocess.run([str(BIN / "saltmarsh"), "-c", str(config_dir), "image", "build", IMAGE, "--force",
                            "--cache-dir", str(IMAGE_CACHE.parent / "cache")],
                           capture_output=True, text=True, timeout=BUILD_TIMEOUT)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    print(f"image build: {time.monotonic() - started:.0f} s\n{build.stdout}")
    return roots


def image_kernel(roots: Path) -> str:
    """The release of the kernel inside the image (``uname -r`` in the guest), from the build's recipe."""
    recipe = json.loads((roots / f"{IMAGE}.recipe.json").read_text())
    return str(recipe["kernel"])

