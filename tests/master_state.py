"""What a test may read of a running master: its state tree, key files, counters and log lines."""

from __future__ import annotations

import pytest

from saltmarsh.master.control.client import MasterClient

from .cluster import Cluster, wait_until
from .wire import lines


def show_logs_on_failure(cluster: Cluster, request: pytest.FixtureRequest) -> None:
    if getattr(request.node, "rep_call", None) is None or request.node.rep_call.failed:
        print(f"----- master log -----\n{cluster.master.log()[-8000:]}")


def state_tree(cluster: Cluster) -> dict[str, bytes | None]:
    """Every path under the master's root_dir with its content (the job cache only by name: it changes alone)."""
    root = cluster.master_dir / "state"
    tree: dict[str, bytes | None] = {}
    for path in sorted(root.rglob("*")):
        name = str(path.relative_to(root))
        keep = path.is_file() and not path.is_symlink() and not path.name.startswith("jobs.sqlite")
        tree[name] = path.read_bytes() if keep else None
    return tree


def key_files(cluster: Cluster) -> list[str]:
    """Every file under the key store, as paths relative to it."""
    keys = cluster.master_dir / "state" / "pki" / "agents"
    return sorted(str(p.relative_to(keys)) for p in keys.rglob("*") if not p.is_dir())


def rejected_frames(cluster: Cluster) -> int:
    """The master's count of refused frames (every one, logged or not)."""
    with MasterClient.from_config_dir(cluster.master_dir) as client:
        return int(client.call("master.ping")["rejected_frames"])


def wait_lines(cluster: Cluster, pattern: str, n: int, timeout: float = 15.0) -> list[str]:
    """Wait until ``n`` master log lines match ``pattern``; fail if more do."""
    wait_until(lambda: len(lines(cluster.master, pattern)) >= n, timeout=timeout,
               what=f"{n} master log lines matching {pattern!r}")
    found = lines(cluster.master, pattern)
    assert len(found) == n, f"{len(found)} lines match {pattern!r}, expected {n}:\n" + "\n".join(found)
    return found
