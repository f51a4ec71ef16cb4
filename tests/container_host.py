"""What the container tests share around tests/container.py: their parts, made once per module or
skipped with the reason, and a master in a container's network namespace with the container booted."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from . import container as harness
from .cluster import Cluster

SHIPPED_DROPIN = "usr/lib/systemd/system/saltmarsh-agent.service.d/guest.conf"


def module_parts(factory: pytest.TempPathFactory, name: str, packages: list[str] | None, *,
                 dependencies: bool = False) -> harness.Parts:
    """The parts of a module's containers (``packages`` None: a bare host, no agent), or skip with why."""
    reason = harness.skip_reason()
    if reason:
        pytest.skip(reason)
    work = factory.mktemp(name)
    started = time.monotonic()
    with (work / "parts.log").open("w") as log:
        made = (harness.make_bare_parts(work, log) if packages is None
                else harness.make_parts(work, packages, log, dependencies=dependencies))
    print(f"container parts ({name}): {time.monotonic() - started:.0f} s")
    return made


@contextlib.contextmanager
def booted(cluster: Cluster, parts: harness.Parts, directory: Path, name: str, files: dict[str, str], *,
           shipped_unit: bool = False, accept: bool = True) -> Iterator[harness.Container]:
    """The container ``name`` made from ``parts`` with ``files``, the master in its network namespace,
    the container booted and (``accept``) its agent accepted; all stopped on exit.

    ``shipped_unit``: the agent's unit as it is shipped, without the guest drop-in the image build adds
    (which empties SupplementaryGroups=): what a hypervisor gets.
    """
    directory.mkdir()
    box = harness.Container(directory, name, parts)
    try:
        box.create(files)
        if shipped_unit:
            (box.rootfs / SHIPPED_DROPIN).unlink()
        cluster.master.argv = box.netns_argv(cluster.master.argv)
        cluster.start_master()
        box.boot()
        if accept:
            cluster.accept(name)
        yield box
    finally:
        try:
            cluster.stop()
        finally:
            box.close()


@contextlib.contextmanager
def uplinked(cluster: Cluster, parts: harness.Parts, directory: Path, name: str, files: dict[str, str],
             master_cidr: str) -> Iterator[harness.Container]:
    """The container ``name`` with ``files``, its ``eth0`` a veth to the master in a namespace of its own
    on ``master_cidr``; the master started, the container booted with systemd-networkd running (its
    ``eth0`` addressed by the networkd file among ``files``); all stopped on exit. Its agent's key is
    the caller's to accept."""
    directory.mkdir()
    box = harness.Container(directory, name, parts)
    uplink = harness.Uplink(f"{name}-m", box, "eth0", master_cidr)
    try:
        box.create(files)
        uplink.make()
        cluster.master.argv = uplink.argv(cluster.master.argv)
        cluster.start_master()
        box.boot()
        box.exec("systemctl", "enable", "--now", "systemd-networkd.service")
        yield box
    finally:
        try:
            cluster.stop()
        finally:
            try:
                box.close()
            finally:
                uplink.close()
