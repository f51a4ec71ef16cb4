"""``saltmarsh host enroll``: its script, run on a fresh Debian host (a booted container), gives an agent that joins.

The container is the bare Debian base (tests/container.py ``make_bare_parts``): no agent, no
units of ours, the agent's wheels in /root/saltmarsh-wheels as an operator would have copied
them. The test's master runs in the container's network namespace (127.0.0.1). Nothing is
accepted by hand: the script's one-time token gets the key accepted, and the same token
cannot enroll a second key.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .. import container as harness
from ..cluster import Cluster, wait_until
from ..container_host import booted, module_parts

pytestmark = pytest.mark.integration

NAME = "sm-enroll1"


@pytest.fixture(scope="module")
def parts(tmp_path_factory: pytest.TempPathFactory) -> harness.Parts:
    return module_parts(tmp_path_factory, "bare-parts", None)


@pytest.fixture
def fresh(parts: harness.Parts, tmp_path: Path) -> Iterator[tuple[Cluster, harness.Container]]:
    cluster = Cluster(tmp_path / "cluster")
    with booted(cluster, parts, tmp_path / "box", NAME, {"/etc/hostname": f"{NAME}\n"}, accept=False) as box:
        yield cluster, box


@pytest.mark.timeout(900)
def test_the_enroll_script_on_a_fresh_host_gives_an_agent_that_joins(fresh: tuple[Cluster, harness.Container]) -> None:
    cluster, box = fresh
    assert box.exec("test", "-e", "/opt/saltmarsh/venv", check=False).returncode != 0  # really bare
    printed = cluster.cli("host", "enroll", NAME, "--master-address", "127.0.0.1", "--source", str(harness.ROOT))
    text = printed.stdout
    assert text.startswith("#!/bin/sh\n") and "join_token: " in text and "PRIVATE KEY" not in text
    started = time.monotonic()
    box.exec("sh", "-c", text, timeout=600)
    wait_until(lambda: cluster.cli("run", NAME, "test.ping", "--timeout", "3", check=False).returncode == 0,
               timeout=120, interval=1.0, what="the enrolled agent to answer")
    joined = time.monotonic() - started
    keys = json.loads(cluster.cli("key", "list", "--json").stdout)
    assert (keys["accepted"], keys["pending"]) == ([NAME], [])  # by its token: nobody ran key accept
    for unit in ("saltmarsh-agent.service", "saltmarsh-setup-helper.service"):
        assert box.exec("systemctl", "is-active", unit).stdout.strip() == "active"
    config = box.exec("stat", "-c", "%a %U:%G", "/etc/saltmarsh/agent.yaml").stdout.split()
    assert config == ["640", "root:saltmarsh"]
    # The agent made its own key on the host; the master has only the public half.
    key = box.exec("stat", "-c", "%a %U", "/var/lib/saltmarsh/agent/pki/agent.key").stdout.split()
    assert key == ["600", "saltmarsh"]
    print(f"enroll script ran and the agent answered in {joined:.1f} s")
