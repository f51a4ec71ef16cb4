"""master:// images: verified chunks, cached by sha256 and never fetched twice, progress events, no traversal.

The first tests run real daemons; the rest drive the agent's ImageCache against the master's real
file handlers (FileServer, FileRequests) on an event loop of their own, reached through the cache's
request interface, so that a test can count requests in flight, spoil a chunk, or refuse one.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import stat
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest

from saltmarsh.agent.virt import images
from saltmarsh.agent.virt.images import ImageCache, ImageFetchError
from saltmarsh.master.cloud import fileserver
from saltmarsh.master.cloud.fileserver import FileRequests, FileServer
from saltmarsh.master.wire.request_channel import Request
from saltmarsh.protocol.envelope import Header
from saltmarsh.protocol.messages import Failed, FileData, FileInfo, FileRead, FileStat, Message
from saltmarsh.protocol.version import PROTOCOL_VERSION

from .cluster import Cluster, EventRecorder, free_port, wait_until


@pytest.fixture
def served(tmp_path: Path) -> tuple[Cluster, Path]:
    roots = tmp_path / "file_root"
    (roots / "images").mkdir(parents=True)
    cluster = Cluster(tmp_path / "c", file_roots=[str(roots)], http={"listen": f"127.0.0.1:{free_port()}"})
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
    progress = [e.data for e in recorder.events if "/image/" in e.tag and e.tag.endswith("/progress")]
    assert progress and progress[-1]["done"] == progress[-1]["total"] == image.stat().st_size
    lookups = [e.data["hit"] for e in recorder.events if e.tag == f"saltmarsh/virt/hv1/image/{digest[:16]}/cache"]
    assert lookups == [False, True]
    assert wait_until(lambda: _image_lookups(cluster) == {"hit": 1.0, "miss": 1.0} or None,
                      what="the API's metrics to count one miss and one hit")


def _image_lookups(cluster: Cluster) -> dict[str, float]:
    """The API's image cache counters, by outcome, read with a metrics token as Prometheus would."""
    token = cluster.cli("token", "create", f"prom{time.monotonic_ns()}", "--scope", "metrics:read").stdout.split()[0]
    request = urllib.request.Request(f"http://{cluster.http_listen}/metrics",
                                     headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        text = response.read().decode()
    prefix = 'saltmarsh_image_cache_lookups_total{outcome="'
    return {line[len(prefix):].split('"')[0]: float(line.split()[-1])
            for line in text.splitlines() if line.startswith(prefix)}


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


def test_a_chunk_changed_after_the_manifest_aborts_the_fetch_and_leaves_nothing(
        served: tuple[Cluster, Path], tmp_path: Path) -> None:
    cluster, root = served
    image = root / "images" / "rewritten.img"
    image.write_bytes(os.urandom(3 * fileserver.CHUNK_SIZE + 7))
    run(cluster, "virt.cache_image", "master://images/rewritten.img")
    for cached in (tmp_path / "cache").iterdir():
        cached.unlink()
    before = image.stat()
    with image.open("r+b") as handle:  # rewritten in place: same size, same mtime, so the manifest is kept
        handle.seek(fileserver.CHUNK_SIZE + 10)
        handle.write(b"not what the manifest says")
    os.utime(image, ns=(before.st_atime_ns, before.st_mtime_ns))
    result = run(cluster, "virt.cache_image", "master://images/rewritten.img", ok=False)
    assert result["error"]["type"] == "ImageFetchError"
    assert "chunk 1 of images/rewritten.img does not match its digest" in result["error"]["message"]
    assert list((tmp_path / "cache").iterdir()) == []


# ---- ImageCache against the master's real file handlers --------------------------------------

CHUNK = 64 * 1024
Tamper = Callable[[FileRead, Message], Message]


class StandInMaster:
    """FileServer and FileRequests on their own event loop, behind ImageCache's request interface."""

    def __init__(self, root: Path, *, read_delay: float = 0.0, tamper: Tamper | None = None) -> None:
        self.requests = FileRequests(FileServer([root]))
        self.read_delay = read_delay
        self.tamper = tamper
        self.reads = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def request(self, message: Message, timeout: float) -> Future[Message]:
        """What the agent's request channel does: answer ``message`` in the master's loop."""
        return asyncio.run_coroutine_threadsafe(self._answer(message), self.loop)

    async def _answer(self, message: Message) -> Message:
        header = Header(PROTOCOL_VERSION, message.KIND, "hv1", time.time(), os.urandom(16), b"", b"", b"")
        req = Request("hv1", b"hv1", header, message, b"", True)
        if isinstance(message, FileStat):
            return await self.requests.on_stat(req)
        assert isinstance(message, FileRead)
        self.reads += 1
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.read_delay)
            reply = await self.requests.on_read(req)
        finally:
            self.in_flight -= 1
        return self.tamper(message, reply) if self.tamper else reply

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        self.loop.close()


@pytest.fixture
def image(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A 40.5-chunk random file under a file root (chunks of 64 KiB, so that tests stay small)."""
    monkeypatch.setattr(fileserver, "CHUNK_SIZE", CHUNK)
    (tmp_path / "root").mkdir()
    path = tmp_path / "root" / "disk.img"
    path.write_bytes(os.urandom(40 * CHUNK + CHUNK // 2))
    return path


@pytest.fixture
def make_cache(tmp_path: Path) -> Iterator[Callable[..., tuple[ImageCache, StandInMaster, list[Any]]]]:
    masters: list[StandInMaster] = []

    def make(**options: Any) -> tuple[ImageCache, StandInMaster, list[Any]]:
        master = StandInMaster(tmp_path / "root", **options)
        masters.append(master)
        events: list[Any] = []
        cache = ImageCache(tmp_path / "cache", "hv1", master.request, lambda tag, data: events.append((tag, data)))
        return cache, master, events

    yield make
    for master in masters:
        master.close()


def _spoil(index: int) -> Tamper:
    def tamper(read: FileRead, reply: Message) -> Message:
        if read.index != index or not isinstance(reply, FileData):
            return reply
        return FileData(index=index, data=bytes([reply.data[0] ^ 1]) + reply.data[1:])
    return tamper


def _refuse(index: int) -> Tamper:
    def tamper(read: FileRead, reply: Message) -> Message:
        return Failed(reason="the disk is gone") if read.index == index else reply
    return tamper


def _truncate(index: int) -> Tamper:
    def tamper(read: FileRead, reply: Message) -> Message:
        if read.index != index or not isinstance(reply, FileData):
            return reply
        return FileData(index=index, data=reply.data[:-1])
    return tamper


def test_a_fetch_writes_exactly_the_file_readable_by_qemu(image: Path, make_cache: Any, tmp_path: Path) -> None:
    cache, master, events = make_cache(read_delay=0.001)
    path = cache.fetch("master://disk.img")
    assert path.read_bytes() == image.read_bytes()
    assert path.name == hashlib.sha256(image.read_bytes()).hexdigest()
    assert stat.S_IMODE(path.stat().st_mode) == 0o644 and stat.S_IMODE((tmp_path / "cache").stat().st_mode) == 0o755
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [path.name]
    assert master.reads == 41
    tags = {tag for tag, _ in events}
    prefix = f"saltmarsh/virt/hv1/image/{path.name[:16]}"
    assert tags == {f"{prefix}/cache", f"{prefix}/progress"}
    assert events[0] == (f"{prefix}/cache", {"image": "master://disk.img", "hit": False})
    assert events[-1][1]["done"] == events[-1][1]["total"] == image.stat().st_size


@pytest.mark.parametrize("tamper", [_spoil(7), _refuse(7), _truncate(40), _spoil(0)],
                         ids=["spoiled", "refused", "short", "first spoiled"])
def test_a_chunk_that_fails_aborts_the_fetch_and_leaves_no_file(
        image: Path, make_cache: Any, tmp_path: Path, tamper: Tamper) -> None:
    cache, _, _ = make_cache(read_delay=0.002, tamper=tamper)
    with pytest.raises(ImageFetchError, match=r"chunk (7|40|0) of disk\.img"):
        cache.fetch("master://disk.img")
    assert list((tmp_path / "cache").iterdir()) == []
    clean, _, _ = make_cache()
    assert clean.fetch("master://disk.img").read_bytes() == image.read_bytes()  # nothing was left to poison it


def test_the_window_of_chunk_requests_is_bounded(image: Path, make_cache: Any) -> None:
    cache, master, _ = make_cache(read_delay=0.01)
    cache.fetch("master://disk.img")
    assert master.max_in_flight == images.WINDOW, "the window was not filled, or it overflowed"
    assert images.WINDOW <= 8  # half of the master's MAX_IN_FLIGHT: other agents' requests get through


def test_concurrent_fetches_of_one_image_transfer_it_once(image: Path, make_cache: Any) -> None:
    cache, master, _ = make_cache(read_delay=0.002)
    results: list[Path] = []
    threads = [threading.Thread(target=lambda: results.append(cache.fetch("master://disk.img"))) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(results) == 3 and len(set(results)) == 1
    assert master.reads == 41


def test_a_manifest_whose_chunks_do_not_cover_the_file_is_refused(image: Path, make_cache: Any) -> None:
    _, master, _ = make_cache()
    stat_reply = master.request(FileStat(path="disk.img"), 5).result(5)
    assert isinstance(stat_reply, FileInfo)
    short = FileInfo(path=stat_reply.path, size=stat_reply.size, sha256=stat_reply.sha256,
                     chunk_size=stat_reply.chunk_size, chunks=stat_reply.chunks[:-1])
    with pytest.raises(ImageFetchError, match="lists 40 chunks for"):
        images.chunk_lengths(short)
    assert len(images.chunk_lengths(stat_reply)) == 41
    assert images.chunk_lengths(stat_reply)[-1] == CHUNK // 2


@pytest.mark.timeout(60)
def test_a_cache_disk_too_small_fails_before_any_chunk_and_leaves_nothing(
        image: Path, tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("mounting a small filesystem for the cache needs root")
    small = tmp_path / "small-disk"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(small)], check=True)
    master = StandInMaster(tmp_path / "root")
    try:
        cache = ImageCache(small / "cache", "hv1", master.request, lambda tag, data: None)
        with pytest.raises(ImageFetchError, match=r"disk\.img: cannot reserve 2654208 bytes in the image cache"):
            cache.fetch("master://disk.img")
        assert master.reads == 0, "chunks were fetched for a file that could never fit"
        assert list((small / "cache").iterdir()) == []
    finally:
        master.close()
        subprocess.run(["umount", str(small)], check=True)
