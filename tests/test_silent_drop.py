"""A path to the master that drops silently: the agent finds out and receives jobs again once it heals.

Seen when a guest's user-mode NIC migrated: the NAT that carried the agent's two TCP connections
forgot them, and no FIN or RST ever reached either end. The request channel noticed (its
heartbeats went unanswered, and it opens a new socket), but the job subscription, idle between
jobs, sat on its dead connection for good. Here the agent reaches the master through a userspace
TCP proxy the test can blackhole: every connection made so far goes dead for good (bytes are
swallowed, nothing is closed), and new ones wait unanswered until the path heals.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .cluster import Cluster, free_port, wait_until


class BlackholeProxy:
    """Forwards 127.0.0.1:``port`` to 127.0.0.1:``upstream`` until told to blackhole the path."""

    def __init__(self, upstream: int) -> None:
        self.port, self._upstream = free_port(), upstream
        self._server = socket.create_server(("127.0.0.1", self.port), backlog=64)
        self._open = threading.Event()
        self._open.set()
        self._links: list[threading.Event] = []  # set = that connection still carries bytes
        self._sockets: list[socket.socket] = [self._server]
        self.connections = 0
        threading.Thread(target=self._accept, name="proxy", daemon=True).start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):  # the server socket closed: the test is over
            while True:
                client, _ = self._server.accept()
                # While blackholed, a new connection gets no answer (its handshake waits unread),
                # the way a SYN into a dead path does, until the path heals.
                self._open.wait()
                upstream = socket.create_connection(("127.0.0.1", self._upstream))
                alive = threading.Event()
                alive.set()
                self._links.append(alive)
                self._sockets += [client, upstream]
                self.connections += 1
                for src, dst in ((client, upstream), (upstream, client)):
                    threading.Thread(target=self._pump, args=(src, dst, alive), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket, alive: threading.Event) -> None:
        with contextlib.suppress(OSError):  # either end closed
            while data := src.recv(65536):
                if alive.is_set():
                    dst.sendall(data)

    def blackhole(self) -> None:
        """Every connection made so far carries nothing more, ever; new ones wait unanswered."""
        self._open.clear()
        for alive in self._links:
            alive.clear()

    def heal(self) -> None:
        """New connections pass again (the dead ones stay dead, as behind a NAT that forgot them)."""
        self._open.set()

    def close(self) -> None:
        """Close every socket."""
        self._open.set()
        for sock in self._sockets:
            sock.close()


@contextlib.contextmanager
def proxies(cluster: Cluster) -> Iterator[tuple[BlackholeProxy, BlackholeProxy]]:
    publish, request = BlackholeProxy(cluster.publish_port), BlackholeProxy(cluster.request_port)
    try:
        yield publish, request
    finally:
        publish.close()
        request.close()


def answers(cluster: Cluster, agent_id: str) -> bool:
    result = cluster.cli("run", agent_id, "test.ping", "--json", "--timeout", "1", check=False)
    return bool(json.loads(result.stdout or "{}").get(agent_id) is True)


# Each case: the agent's ZMTP heartbeat settings, and the line the agent logs when its job
# subscription is replaced by a working one.
CASES = {
    "zmtp-heartbeats": ({"link_heartbeat_seconds": 1.0, "link_timeout_seconds": 2.0},
                        "lost (the master closed it, or nothing came back within 2 s of a heartbeat); reconnecting"),
    # Without them, the request channel finding the master back makes the agent replace it.
    "request-channel-only": ({"link_heartbeat_seconds": 0.0},
                             "this subscription's connection is the one from before them: it may be dead"),
}
HEAL_BOUND = 15.0  # seconds from the heal to a job answered again


@pytest.mark.timeout(120)
@pytest.mark.parametrize("case", sorted(CASES))
def test_agent_receives_jobs_again_after_a_silent_drop(tmp_path: Path, case: str) -> None:
    settings, reason = CASES[case]
    cluster = Cluster(tmp_path)
    cluster.start_master()
    try:
        with proxies(cluster) as (publish, request):
            daemon = cluster.start_agent("hv1", publish_port=publish.port, request_port=request.port, **settings)
            cluster.accept("hv1")
            publish.blackhole()
            request.blackhole()
            cut = time.monotonic()
            # The agent finds the path dead (its request channel's heartbeats go unanswered)
            # before it heals: the outage is longer than either way of noticing it.
            wait_until(lambda: "master stopped answering heartbeats" in daemon.log(), timeout=30,
                       what="the agent to miss the master's heartbeats")
            assert not answers(cluster, "hv1")
            publish.heal()
            request.heal()
            healed = time.monotonic()
            wait_until(lambda: answers(cluster, "hv1"), timeout=HEAL_BOUND, interval=0.2,
                       what="the agent to answer a job after the path healed")
            back = time.monotonic() - healed
            log = daemon.log()
            assert reason in log, log[-3000:]
            # The answer came over new connections: the ones from before the drop stay dead.
            assert publish.connections >= 2 and request.connections >= 2
            print(f"\n{case}: path dead for {healed - cut:.1f} s; a job answered {back:.1f} s after it healed")
    finally:
        cluster.stop()


@pytest.mark.timeout(120)
def test_a_master_restart_is_seen_as_a_close_and_needs_no_new_subscription(tmp_path: Path) -> None:
    # The master closes its end when it stops: the subscription sees that and reconnects by itself,
    # so the agent, finding the master back, has no reason to replace it (nor a fleet 1,000 sockets).
    cluster = Cluster(tmp_path)
    cluster.start_master()
    try:
        daemon = cluster.start_agent("hv1", link_heartbeat_seconds=0.0)
        cluster.accept("hv1")
        cluster.master.stop()
        wait_until(lambda: "master stopped answering heartbeats" in daemon.log(), timeout=30,
                   what="the agent to miss the master's heartbeats")
        cluster.start_master()
        wait_until(lambda: "master answering again" in daemon.log(), timeout=30, what="the master back")
        wait_until(lambda: answers(cluster, "hv1"), timeout=HEAL_BOUND, interval=0.2, what="a job answered")
        log = daemon.log()
        assert "job subscription to" in log and "lost (the master closed it); reconnecting" in log, log[-3000:]
        assert "opening a new job subscription" not in log, log[-3000:]
    finally:
        cluster.stop()
