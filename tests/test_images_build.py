"""``saltmarsh image build|list`` without mmdebstrap: recipes and their hash, refusals, clean-up, the disk, the list.

The build's own stages run for real where they are quick: the source copy and its hash,
the disk (MBR, FAT /boot with SYSLINUX, ext4 root, from a tiny tree), the qcow2 and its
checksum, and publishing. Only the two slow stages (wheels, mmdebstrap) are replaced, at
build.py's own functions, by ones that make small stand-ins; the real build is
tests/integration/test_image_build.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from saltmarsh.master.cli import main
from saltmarsh.master.cloud.fileserver import SERVED_RECORDS, FileServer, read_served_records
from saltmarsh.master.images import build as build_module
from saltmarsh.master.images import guest, source
from saltmarsh.master.images.catalog import catalog
from saltmarsh.master.images.errors import BuildFailed, BuildInterrupted, BuildRefused
from saltmarsh.master.images.recipe import (
    BUILDER,
    GiB,
    Recipe,
    check_name,
    parse_packages,
    parse_size,
    recipe_from_file,
)

from .cluster import BIN, venv_reachable_by_others

ROOT = Path(__file__).resolve().parent.parent
SHA = "ab" * 32
DISK_TOOLS = ("mkfs.ext4", "mkfs.vfat", "mcopy", "syslinux", "sfdisk", "qemu-img")
needs_disk_tools = pytest.mark.skipif(os.geteuid() != 0 or any(shutil.which(t) is None for t in DISK_TOOLS),
                                      reason="needs root and the disk tools scripts/setup.sh installs")


def cli(*argv: str) -> tuple[int, str, str]:
    """main(argv) in this process: exit code, stdout, stderr."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(argv))
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 2
    return code, out.getvalue(), err.getvalue()


def config_dir(tmp_path: Path, file_roots: list[Path]) -> Path:
    conf = tmp_path / "conf"
    conf.mkdir(parents=True, exist_ok=True)
    (conf / "master.yaml").write_text(yaml.safe_dump({"root_dir": str(tmp_path / "state"),
                                                      "file_roots": [str(r) for r in file_roots]}))
    return conf


# ---- recipes ---------------------------------------------------------------------------------------------


def test_the_recipe_hash_is_stable_and_covers_every_setting_but_the_name() -> None:
    base = Recipe.make(source_sha256=SHA)
    assert base.sha256 == Recipe.make(source_sha256=SHA).sha256
    assert len(base.sha256) == 64 and base.builder == BUILDER
    assert Recipe.make(packages=("vim", "curl", "vim"), source_sha256=SHA).packages == ("curl", "vim")
    assert (Recipe.make(packages=("vim", "curl"), source_sha256=SHA).sha256
            == Recipe.make(packages=("curl", "vim"), source_sha256=SHA).sha256)
    variants = [Recipe.make(release="trixie", source_sha256=SHA), Recipe.make(size=8 * GiB, source_sha256=SHA),
                Recipe.make(packages=("curl",), source_sha256=SHA), Recipe.make(kernel="generic", source_sha256=SHA),
                Recipe.make(mirror="http://mirror.example/debian", source_sha256=SHA),
                Recipe.make(source_sha256="cd" * 32)]
    hashes = {base.sha256, *(v.sha256 for v in variants)}
    assert len(hashes) == 1 + len(variants)
    # The name is not a setting: two names for one recipe hash alike.
    assert base.document("a")["recipe_sha256"] == base.document("b")["recipe_sha256"] == base.sha256


def test_a_recipe_file_gives_back_the_same_recipe(tmp_path: Path) -> None:
    recipe = Recipe.make(packages=("curl",), size=2 * GiB, source_sha256=SHA)
    path = tmp_path / "x.recipe.json"
    path.write_text(json.dumps(recipe.document("x", sha256=SHA, installed=["a=1"])))
    assert recipe_from_file(path) == recipe
    document = json.loads(path.read_text())
    document["recipe"]["builder"] = BUILDER + 1
    path.write_text(json.dumps(document))
    with pytest.raises(BuildRefused, match="builder version"):
        recipe_from_file(path)
    path.write_text("{not json")
    with pytest.raises(BuildRefused, match="not a recipe file"):
        recipe_from_file(path)


@pytest.mark.parametrize("name", ["debian-12", "a", "Guest_1.2", "x" * 64])
def test_safe_names_are_taken(name: str) -> None:
    assert check_name(name) == name


@pytest.mark.parametrize("name", ["", ".hidden", "../up", "a/b", "a..b", "x" * 65, "-flag", "sp ace", "\x1b[31m",
                                  "debian-12.qcow2", "é"])
def test_unsafe_names_are_refused(name: str) -> None:
    with pytest.raises(BuildRefused):
        check_name(name)


def test_sizes_and_packages_are_parsed_or_refused() -> None:
    assert parse_size("4G") == parse_size("4GiB") == parse_size("4096M") == 4 * GiB
    assert parse_size(str(2 * GiB)) == 2 * GiB
    for bad in ("", "4X", "-1G", "512M", "3T", "1.5G", "nan"):
        with pytest.raises(BuildRefused):
            parse_size(bad)
    assert parse_packages(" vim, curl,,vim ") == ("curl", "vim")
    assert parse_packages("") == ()
    for bad in ("a", "Vim", "vim;reboot", "-o", "vim curl"):
        with pytest.raises(BuildRefused):
            parse_packages(bad)
    for setting in ({"release": "sid"}, {"kernel": "rt"}, {"mirror": "ftp://x"}, {"mirror": "http://a b"}):
        with pytest.raises(BuildRefused):
            Recipe.make(source_sha256=SHA, **setting)


def test_the_source_hash_follows_the_files_a_build_reads(tmp_path: Path) -> None:
    copy = tmp_path / "src"
    source.copy_tree(ROOT, copy)
    assert source.check_tree(copy) == copy
    first = source.tree_sha256(copy)
    assert first == source.tree_sha256(copy)
    (copy / "master" / "__pycache__").mkdir(exist_ok=True)
    (copy / "master" / "__pycache__" / "x.pyc").write_bytes(b"cache")
    assert source.tree_sha256(copy) == first, "caches are not source"
    with (copy / "agent" / "daemon.py").open("a") as handle:
        handle.write("\n")
    assert source.tree_sha256(copy) != first
    with pytest.raises(BuildRefused, match="not a saltmarsh source tree"):
        source.check_tree(tmp_path)


def test_the_guest_config_keeps_the_agent_off_until_cloud_init_enables_it() -> None:
    files = guest.guest_files("[Unit]\n")
    assert "disable saltmarsh-agent.service" in files["/usr/lib/systemd/system-preset/80-saltmarsh.preset"]
    cloud = yaml.safe_load(files["/etc/cloud/cloud.cfg.d/90-saltmarsh.cfg"])
    assert cloud["datasource_list"] == ["NoCloud", "None"] and cloud["network"] == {"config": "disabled"}
    assert "write_files" in cloud["cloud_init_modules"] and cloud["cloud_config_modules"] == ["runcmd"]
    assert "SupplementaryGroups=\n" in files["/usr/lib/systemd/system/saltmarsh-agent.service.d/guest.conf"]
    assert "Name=en* eth*" in files["/etc/systemd/network/80-saltmarsh-dhcp.network"]
    paths = guest.BasePaths(*(Path(f"/w/{n}") for n in ("rootfs", "overlay", "debs", "new")))
    argv = guest.base_command(Recipe.make(packages=("curl",), source_sha256=SHA), paths)
    assert argv[-2:] == ["bookworm", "/w/rootfs"], "mmdebstrap's mirror, with updates and security"
    mirrored = guest.base_command(Recipe.make(mirror="http://mirror.example/debian", source_sha256=SHA), paths)
    assert mirrored[-3:] == ["bookworm", "/w/rootfs", "http://mirror.example/debian"]
    hooks = " ".join(argv)
    for needed in ("sync-in /w/debs /var/cache/apt/archives/", "sync-out /var/cache/apt/archives /w/new",
                   "useradd --system --user-group", "linux-image-cloud-amd64", "curl"):
        assert needed in hooks, needed
    # The base is named by every setting but the source, and by the week.
    recipe = Recipe.make(source_sha256=SHA)
    key = guest.base_key(recipe, "2026-W01")
    assert key == guest.base_key(Recipe.make(source_sha256="cd" * 32), "2026-W01")
    assert key not in {guest.base_key(recipe, "2026-W02"), guest.base_key(Recipe.make(kernel="generic",
                                                                                      source_sha256=SHA), "2026-W01")}


# ---- refusals, from the CLI ------------------------------------------------------------------------------


def one_line(code: int, err: str, expected_code: int = 1) -> str:
    assert code == expected_code and len(err.splitlines()) == 1 and "Traceback" not in err, (code, err)
    return err.strip()


def test_build_refuses_in_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "images"
    root.mkdir()
    conf = config_dir(tmp_path, [root])
    empty = config_dir(tmp_path / "e", [])
    (root / "taken.qcow2").write_bytes(b"x")
    cases = {
        ("../x",): "not a safe name",
        ("x.qcow2",): "without .qcow2",
        ("taken",): "exists (--force replaces it)",
        ("x", "--release", "sid"): "unknown release",
        ("x", "--size", "100M"): "outside",
        ("x", "--packages", "a;b"): "not a Debian package name",
        ("x", "--recipe", str(tmp_path / "r.json"), "--release", "bookworm"): "--recipe takes every setting",
        ("x", "--source", str(tmp_path)): "not a saltmarsh source tree",
    }
    for argv, reason in cases.items():
        assert reason in one_line(*cli("-c", str(conf), "image", "build", *argv)[::2]), argv
    assert "file_roots is empty" in one_line(*cli("-c", str(empty), "image", "build", "x")[::2])
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert "must run as root" in one_line(*cli("-c", str(conf), "image", "build", "x")[::2])
    assert not list(root.glob(".*")), "a refused build makes nothing"


def test_a_build_of_another_python_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(source, "host_python", lambda: "3.99")
    request = build_module.BuildRequest(name="x", recipe=Recipe.make(source_sha256=SHA), file_root=tmp_path,
                                        cache_dir=tmp_path / "cache", source=ROOT)
    with pytest.raises(BuildRefused, match=r"Python 3\.11 but this host's /usr/bin/python3 is 3\.99"):
        build_module.build(request, print)


# ---- the build's own stages, with small stand-ins for wheels and mmdebstrap -------------------------------


@pytest.fixture
def quick_build(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """Wheels and rootfs replaced by small stand-ins; the disk, the qcow2 and publishing are real."""
    calls: dict[str, Any] = {"rootfs_hook": None}

    def wheels(request: Any, recipe: Any, work: Path, log: Any) -> list[Path]:
        (work / "wheels").mkdir()
        wheel = work / "wheels" / "saltmarsh-0.1.0-py3-none-any.whl"
        wheel.write_bytes(b"wheel")
        return [wheel]

    def base(request: Any, recipe: Any, work: Path, log: Any) -> tuple[Path, str]:
        return work / "base.tar.zst", "stand-in"

    def rootfs(request: Any, recipe: Any, work: Path, log: Any, base: Path) -> tuple[Path, list[str]]:
        tree = work / "rootfs"
        for directory in ("boot", "etc", "opt/saltmarsh/venv/bin"):
            (tree / directory).mkdir(parents=True)
        (tree / "boot" / "vmlinuz-6.1.0-1-cloud-amd64").write_bytes(os.urandom(200_000))
        (tree / "boot" / "initrd.img-6.1.0-1-cloud-amd64").write_bytes(os.urandom(300_000))
        (tree / "etc" / "hostname").write_text("debian\n")
        if calls["rootfs_hook"]:
            calls["rootfs_hook"](work)
        return tree, ["base-files=12", "systemd=252"]

    monkeypatch.setattr(build_module, "_wheels", wheels)
    monkeypatch.setattr(build_module, "_base", base)
    monkeypatch.setattr(build_module, "_rootfs", rootfs)
    root = tmp_path / "images"
    root.mkdir()
    cache = tmp_path / "cache"
    calls["request"] = build_module.BuildRequest(name="tiny", recipe=Recipe.make(size=GiB, source_sha256=SHA),
                                                 file_root=root, cache_dir=cache, source=ROOT)
    calls["root"], calls["cache"] = root, cache
    yield calls


def leftovers(calls: dict[str, Any]) -> list[str]:
    """Whatever a build left in the file root and the cache's work directory."""
    return sorted([p.name for p in calls["root"].iterdir()] + [p.name for p in (calls["cache"] / "work").iterdir()])


@needs_disk_tools
@pytest.mark.timeout(120)
def test_a_build_publishes_a_bootable_disk_with_its_checksum_and_recipe(quick_build: dict[str, Any],
                                                                        tmp_path: Path) -> None:
    lines: list[str] = []
    result = build_module.build(quick_build["request"], lines.append)
    stages = [line.split()[2] for line in lines[1:]]
    assert stages == ["source", "wheels", "base", "rootfs", "disk", "qcow2", "publish"], lines
    image = quick_build["root"] / "tiny.qcow2"
    assert result.path == image and leftovers(quick_build) == ["tiny.qcow2", "tiny.qcow2.sha256", "tiny.recipe.json"]
    assert (quick_build["root"] / "tiny.qcow2.sha256").read_text() == f"{result.sha256}  tiny.qcow2\n"
    assert hashlib.sha256(image.read_bytes()).hexdigest() == result.sha256
    recipe = json.loads((quick_build["root"] / "tiny.recipe.json").read_text())
    assert recipe["recipe_sha256"] == result.recipe_sha256 and recipe["installed"] == ["base-files=12", "systemd=252"]
    assert recipe["recipe"]["source_sha256"] == source.tree_sha256(ROOT), "the hash of the tree it copied"
    info = build_module.qemu_info(image)
    assert info["format"] == "qcow2" and info["virtual-size"] == GiB
    raw = tmp_path / "disk.raw"
    subprocess.run(["qemu-img", "convert", "-O", "raw", str(image), str(raw)], check=True, timeout=60)
    check_disk(raw)


def check_disk(raw: Path) -> None:
    """The MBR (SYSLINUX's code, the boot signature), two partitions, SYSLINUX on the FAT one, the ext4 root."""
    head = raw.read_bytes()[:512] if raw.stat().st_size < 2 * GiB else raw.open("rb").read(512)
    assert head[510:512] == b"\x55\xaa"
    assert head[:440].rstrip(b"\0") == Path("/usr/lib/syslinux/mbr/mbr.bin").read_bytes()[:440].rstrip(b"\0")
    table = json.loads(subprocess.run(["sfdisk", "--json", str(raw)], capture_output=True, text=True,
                                      check=True, timeout=30).stdout)["partitiontable"]
    boot, root = table["partitions"]
    assert table["label"] == "dos" and boot["type"] == "6" and boot.get("bootable") and root["type"] == "83"
    env = {**os.environ, "MTOOLS_SKIP_CHECK": "1"}
    listing = subprocess.run(["mdir", "-a", "-b", "-i", f"{raw}@@{boot['start'] * 512}", "::/"],
                             capture_output=True, text=True, check=True, timeout=30, env=env).stdout
    for name in ("LDLINUX.SYS", "LDLINUX.C32", "SYSLINUX.CFG", "VMLINUZ", "INITRD.IMG"):
        assert name.lower() in listing.lower(), listing
    with raw.open("rb") as handle:
        handle.seek(boot["start"] * 512 + 3)
        assert handle.read(8) == b"SYSLINUX", "SYSLINUX's boot sector on /boot"
    label = subprocess.run(["e2label", f"{raw}?offset={root['start'] * 512}"], capture_output=True, text=True,
                           timeout=30)
    if label.returncode == 0:  # e2label takes io options in the name since e2fsprogs 1.42
        assert label.stdout.strip() == guest.ROOT_LABEL
    listing = subprocess.run(["debugfs", "-R", "ls -p /etc", f"{raw}?offset={root['start'] * 512}"],
                             capture_output=True, text=True, check=True, timeout=30).stdout
    assert "/hostname/" in listing, listing


@needs_disk_tools
@pytest.mark.timeout(120)
def test_a_failed_stage_leaves_nothing_behind(quick_build: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    def convert_fails(*_args: Any, **_kwargs: Any) -> None:
        raise BuildFailed("qemu-img exited with status 1: no space left")

    real_run = build_module.run
    monkeypatch.setattr(build_module, "run", lambda argv, **kw: (convert_fails() if argv[0] == "qemu-img"
                                                                 else real_run(argv, **kw)))
    with pytest.raises(BuildFailed, match=r"no space left \(log: .*tiny\.build\.log\)"):
        build_module.build(quick_build["request"], lambda _line: None)
    assert leftovers(quick_build) == []


@needs_disk_tools
@pytest.mark.timeout(120)
def test_an_interrupted_build_leaves_nothing_behind(quick_build: dict[str, Any],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    # SIGTERM while the image is half written into the file root (its hidden name exists).
    def hash_then_signal(path: Path) -> str:
        assert path.name.startswith(".tiny.qcow2.partial-") and path.exists()
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)
        raise AssertionError("the signal did not interrupt the build")

    monkeypatch.setattr(build_module, "file_sha256", hash_then_signal)
    with pytest.raises(BuildInterrupted, match="SIGTERM"):
        build_module.build(quick_build["request"], lambda _line: None)
    assert leftovers(quick_build) == []
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL or callable(signal.getsignal(signal.SIGTERM))


@needs_disk_tools
@pytest.mark.timeout(60)
def test_a_tree_too_big_for_the_disk_is_one_line(quick_build: dict[str, Any]) -> None:
    # A sparse file: as big as the disk to ext4's count (st_size), nothing on this machine's.
    quick_build["rootfs_hook"] = lambda work: os.truncate(_new(work / "rootfs" / "big"), GiB)
    with pytest.raises(BuildFailed, match="needs about 1280 MiB but a 1024 MiB disk leaves 959 MiB: use a larger"):
        build_module.build(quick_build["request"], lambda _line: None)
    assert leftovers(quick_build) == []


def _new(path: Path) -> Path:
    path.touch()
    return path


def test_a_second_build_on_the_same_cache_is_refused(tmp_path: Path) -> None:
    import fcntl

    cache = tmp_path / "cache"
    cache.mkdir()
    with (cache / "build.lock").open("a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        request = build_module.BuildRequest(name="x", recipe=Recipe.make(source_sha256=SHA), file_root=tmp_path,
                                            cache_dir=cache, source=ROOT)
        with pytest.raises(BuildRefused, match="another image build is running"):
            build_module.build(request, lambda _line: None)


# ---- image list ------------------------------------------------------------------------------------------


def qcow2(path: Path, size: str = "64M") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), size], check=True, timeout=30)
    return path


@pytest.mark.skipif(shutil.which("qemu-img") is None, reason="needs qemu-img")
def test_list_shows_every_image_with_its_checksum_and_the_agents_it_was_sent_to(tmp_path: Path) -> None:
    first, second = tmp_path / "r1", tmp_path / "r2"
    fresh = qcow2(first / "fresh.qcow2")
    (first / "fresh.qcow2.sha256").write_text(f"{SHA}  fresh.qcow2\n")  # trusted: not older than the image
    stale = qcow2(first / "sub" / "stale.qcow2", "32M")
    (first / "sub" / "stale.qcow2.sha256").write_text(f"{SHA}  stale.qcow2\n")
    os.utime(first / "sub" / "stale.qcow2.sha256", (1, 1))  # older than its image: recomputed
    raw = first / "disk.raw"
    raw.write_bytes(b"\0" * 65536)
    (first / ".hidden.qcow2").write_bytes(b"x")
    (first / "notes.txt").write_text("not an image")
    (first / "escape.qcow2").symlink_to(tmp_path / "elsewhere.qcow2")
    qcow2(tmp_path / "elsewhere.qcow2")
    qcow2(second / "fresh.qcow2", "16M")  # shadowed by the first root's
    stale_sha = hashlib.sha256(stale.read_bytes()).hexdigest()
    state = tmp_path / "state"
    state.mkdir()
    records = {"version": 1, "agents": {
        "hv1": {SHA: {"path": "fresh.qcow2", "size": 1, "manifest_at": 1.0, "fetched_at": 2.0}},
        "hv2": {SHA: {"path": "fresh.qcow2", "size": 1, "manifest_at": 1.0, "fetched_at": None},
                stale_sha: {"path": "sub/stale.qcow2", "size": 1, "manifest_at": 1.0, "fetched_at": 3.0}}}}
    (state / SERVED_RECORDS).write_text(json.dumps(records))
    entries = {(Path(e.root).name, e.path): e for e in catalog([first, second], state / SERVED_RECORDS)}
    assert sorted(entries) == [("r1", "disk.raw"), ("r1", "fresh.qcow2"), ("r1", "sub/stale.qcow2"),
                               ("r2", "fresh.qcow2")]
    top = entries["r1", "fresh.qcow2"]
    assert (top.format, top.virtual_size, top.size) == ("qcow2", 64 << 20, fresh.stat().st_size)
    assert (top.sha256, top.sha256_from, top.fetched_by, top.asked_by, top.served) == (SHA, "file", ["hv1"],
                                                                                        ["hv2"], True)
    low = entries["r1", "sub/stale.qcow2"]
    assert (low.sha256, low.sha256_from, low.fetched_by, low.virtual_size) == (stale_sha, "computed", ["hv2"],
                                                                               32 << 20)
    assert entries["r1", "disk.raw"].format == "raw" and entries["r1", "disk.raw"].virtual_size == 65536
    assert entries["r2", "fresh.qcow2"].served is False
    conf = config_dir(tmp_path, [first, second])
    code, out, err = cli("-c", str(conf), "image", "list", "--json")
    assert code == 0 and err == "", err
    assert [(e["path"], e["served"]) for e in json.loads(out)] == [("disk.raw", True), ("fresh.qcow2", True),
                                                                   ("sub/stale.qcow2", True), ("fresh.qcow2", False)]
    code, out, _ = cli("-c", str(conf), "image", "list")
    assert code == 0 and "fresh.qcow2" in out and "hv1 (asked only: hv2)" in out and "shadowed" in out


def test_list_with_no_file_roots_says_so(tmp_path: Path) -> None:
    code, out, err = cli("-c", str(config_dir(tmp_path, [])), "image", "list")
    assert (code, err) == (0, "") and "no file_roots" in out


def test_list_by_a_user_who_may_not_read_the_records_is_one_line() -> None:
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv")
    top = Path(tempfile.mkdtemp(prefix="saltmarsh-images-"))  # pytest's own tmp dirs are private to root
    try:
        top.chmod(0o755)
        conf = top / "conf"
        conf.mkdir(mode=0o755)
        (conf / "master.yaml").write_text(yaml.safe_dump({"root_dir": str(top / "state"), "file_roots": []}))
        (conf / "master.yaml").chmod(0o644)
        (top / "state").mkdir(mode=0o700)
        with venv_reachable_by_others():
            result = subprocess.run(["setpriv", "--reuid", "nobody", "--regid", "nogroup", "--clear-groups", "--",
                                     str(BIN / "saltmarsh"), "-c", str(conf), "image", "list"],
                                    capture_output=True, text=True, timeout=60)
    finally:
        shutil.rmtree(top)
    assert result.returncode == 1 and len(result.stderr.splitlines()) == 1, result.stderr
    assert "Permission denied: run saltmarsh as the master's user (or root)" in result.stderr


# ---- what the fileserver records ------------------------------------------------------------------------


def test_the_fileserver_records_each_agent_it_sent_a_manifest_and_a_whole_file(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "img.qcow2").write_bytes(os.urandom(3 * 1024 * 1024 + 5))
    records = tmp_path / "state" / SERVED_RECORDS
    records.parent.mkdir()

    async def serve() -> str:
        server = FileServer([root], records=records)
        manifest = await server.manifest("img.qcow2")
        await server.note_manifest("hv1", manifest)
        await server.note_manifest("hv2", manifest)
        for index in range(len(manifest.chunks)):
            await server.read("img.qcow2", index)
            await server.note_read("hv1", "img.qcow2", index)
        return manifest.sha256

    sha256 = asyncio.run(serve())
    saved = read_served_records(records)
    assert saved["hv1"][sha256]["fetched_at"] and saved["hv1"][sha256]["path"] == "img.qcow2"
    assert saved["hv2"][sha256]["fetched_at"] is None
    assert FileServer([root])._records is None, "no records file, no records"
