"""One-time join tokens: a token gets one agent accepted on first contact; used, expired or foreign ones do not."""

from __future__ import annotations

import time

from .cluster import Cluster, wait_until


def _token(cluster: Cluster, agent_id: str, ttl: str = "3600") -> dict[str, str]:
    issued = cluster.cli_json("key", "token", agent_id, "--ttl", ttl)
    assert issued["id"] == agent_id and len(issued["token"]) >= 32
    return issued


def test_token_accepts_the_agent_on_first_contact(cluster: Cluster) -> None:
    issued = _token(cluster, "seeded1")
    cluster.start_agent("seeded1", join_token=issued["token"], master_key=issued["master_key"])
    cluster.wait_answering("seeded1")  # nobody ran `key accept`
    assert cluster.cli_json("key", "list")["accepted"] == ["seeded1"]
    assert "agent seeded1 joined with a one-time token" in cluster.master.log()
    assert issued["token"] not in cluster.master.log()  # never log a secret


def test_used_expired_and_foreign_tokens_are_refused(cluster: Cluster) -> None:
    first = _token(cluster, "vm-a")
    cluster.start_agent("vm-a", join_token=first["token"], master_key=first["master_key"])
    cluster.wait_answering("vm-a")
    # the same token again, for the same id, with another key: refused, stays pending
    cluster.cli("key", "delete", "vm-a")
    cluster.agents["vm-a"].stop()
    cluster.start_agent("vm-a2", id="vm-a", join_token=first["token"], master_key=first["master_key"],
                        root_dir="state2")
    expired = _token(cluster, "vm-b", ttl="0.01")
    # Until the expiry the master gave it (its own clock, which this host shares) is behind us.
    wait_until(lambda: time.time() > float(expired["expires"]), timeout=5, what="the token's expiry")
    cluster.start_agent("vm-b", join_token=expired["token"], master_key=expired["master_key"])
    foreign = _token(cluster, "vm-c")
    cluster.start_agent("vm-d", join_token=foreign["token"], master_key=foreign["master_key"])
    wait_until(lambda: set(cluster.pending()) >= {"vm-a", "vm-b", "vm-d"}, what="all three to wait as pending")
    log = cluster.master.log()
    assert "refused join token from vm-a: join token was already used" in log
    assert "refused join token from vm-b: join token expired" in log
    assert "refused join token from vm-d: join token was issued for vm-c, not vm-d" in log
    assert cluster.cli_json("key", "list")["accepted"] == []


def test_token_without_the_master_key_is_sealed_once_the_master_is_pinned(cluster: Cluster) -> None:
    issued = _token(cluster, "late")
    finger = cluster.cli_json("key", "finger")["master"]
    cluster.start_agent("late", join_token=issued["token"], master_fingerprint=finger)
    cluster.wait_answering("late")
