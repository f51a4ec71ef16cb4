"""Shared fixtures: a Cluster of real daemons per test, stopped (and logs shown on failure) after."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .cluster import Cluster


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


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Keep each phase's report on the item so fixtures can print daemon logs on failure."""
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report
