"""master:// images: verified chunks, cached by sha256 and never fetched twice, progress events, no traversal."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from .cluster import Cluster, EventRecorder


@pytest.fixture
def served(tmp_path: Path) -> tuple[Cluster, Path]:
    roots = tmp_path / "file_root"
    (roots / "images").mkdir(parents=True)
    cluster = Cluster(tmp_path / "c", file_roots=[str(roots)])
    cluster.start_master()
    cluster.start_agents("hv1", virt={"vm_dir": str(tmp_path / "vms"), "images_dir": str(tmp_path / "cache")})
    yield cluster, roots
    cluster.stop()


def run(cluster: Cluster, fun: str, *args: str, ok: bool = True) -> Any:
    result = cluster.cli("run", "hv1", fun, *args, "--json", "--timeout", "60", check=False)
    value = json.loads(result.stdout)["hv1"]
    assert (result.returncode == 0) == ok, value
    return value


def test_image_is_fetched_verified_cached_and_reused(served: tuple[Cluster, Path], tmp_path: Path) -> None:
    cluster, root = served
    image = root / "images" / "base.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(image), "256M"], check=True)
    with image.open("ab") as handle:  # make it several chunks long, with content worth checking
        handle.write(os.urandom(3 * 1024 * 1024 + 12345))
    digest = hashlib.sha256(image.read_bytes()).hexdigest()
    recorder = EventRecorder(cluster, "saltmarsh/virt/hv1/")
    recorder.ready("hv1", "saltmarsh/virt/hv1/probe")
    first = run(cluster, "virt.init", "name=vm1", "cpus=1", "memory_mib=128", "image=master://images/base.qcow2",
                "enable_qcow=true")
    cached = tmp_path / "cache" / digest
    assert cached.is_file() and hashlib.sha256(cached.read_bytes()).hexdigest() == digest
    overlay = json.loads(subprocess.run(["qemu-img", "info", "--output=json", first["disks"]["vda"]["file"]],
                                        capture_output=True, text=True, check=True).stdout)
    assert overlay["backing-filename"] == str(cached)
    run(cluster, "virt.init", "name=vm2", "cpus=1", "memory_mib=128", "image=master://images/base.qcow2")
    log = cluster.agents["hv1"].log()
    assert log.count("fetched master://images/base.qcow2") == 1 and "already cached" in log
    recorder.close()
    progress = [e.data for e in recorder.events if "/image/" in e.tag]
    assert progress and progress[-1]["done"] == progress[-1]["total"] == image.stat().st_size


@pytest.mark.parametrize("ref", ["master://../outside.img", "master:///etc/passwd", "master://images/../../x",
                                 "master://link-out/passwd", "master://images/missing.img"])
def test_paths_leaving_the_root_are_refused_and_logged(served: tuple[Cluster, Path], ref: str) -> None:
    cluster, root = served
    (root / "link-out").symlink_to("/etc")
    (root.parent / "outside.img").write_bytes(b"secret")
    result = run(cluster, "virt.cache_image", ref, ok=False)
    assert result["error"]["type"] == "ImageFetchError" and "the master refused file_stat" in result["error"]["message"]
    assert "refused file request from hv1" in cluster.master.log()
    cache = root.parent / "cache"
    assert not cache.exists() or not any(cache.iterdir()), "a refused image left something in the cache"
