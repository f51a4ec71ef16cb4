"""Shared fixtures: a Cluster of real daemons per test, stopped (and logs shown on failure) after."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

from .cluster import Cluster, wait_until


@pytest.fixture
def zctx() -> Iterator[zmq.Context[Any]]:
    """A ZeroMQ context for a test's own sockets (raw frames sent as a peer would)."""
    ctx: zmq.Context[Any] = zmq.Context()
    yield ctx
    ctx.destroy(linger=0)


@pytest.fixture
def cluster(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Cluster]:
    """A running master with no agents yet."""
    c = Cluster(tmp_path)
    c.start_master()
    yield c
    c.stop()
    if request.node.rep_call.failed if hasattr(request.node, "rep_call") else False:
        for daemon in [c.master, *c.agents.values()]:
            print(f"----- {daemon.name} log -----\n{daemon.log()[-6000:]}")


HOSTS = ("hv1", "hv2", "hv3")


@pytest.fixture
def cloud(cluster: Cluster, tmp_path: Path) -> Cluster:
    for i, host in enumerate(HOSTS):
        cluster.start_agent(host, labels={"zone": "a" if i < 2 else "b"}, virt={"vm_dir": str(tmp_path / host)})
    cluster.accept(*HOSTS)
    wait_until(lambda: len(cluster.cli_json("virt", "host-info")) == 3, what="the inventory of three hosts")
    return cluster


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Keep each phase's report on the item so fixtures can print daemon logs on failure."""
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report
