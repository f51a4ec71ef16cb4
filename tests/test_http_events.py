"""``/v1/events`` (master/http/stream.py): the bus's events over real WebSockets and Server-Sent Events.

A real master and agents on loopback; clients are tornado's WebSocket client and urllib for SSE.
Asserted: every subscriber gets every matching event (two at once get the same ones); a client that
reconnects with ``since`` gets exactly what it missed, and one whose ``since`` is older than the ring
a gap message first; a token sees only the families its scopes allow and, limited to ``web*``, only
those agents' events; a subscriber that never reads is cut off with the reason while another is served
and the master answers meanwhile; SSE carries the same events with ids.
"""

from __future__ import annotations

import asyncio
import json
import socket
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
import tornado.httpclient
import tornado.websocket

from .cluster import Cluster, free_port, wait_until

pytestmark = pytest.mark.timeout(180)

AGENTS = ("web1", "db1")
RING = 300
BACKLOG = 2000


class Lab:
    """A master with the API on and two agents."""

    def __init__(self, cluster: Cluster, port: int) -> None:
        self.cluster, self.port = cluster, port
        self.ws_url = f"ws://127.0.0.1:{port}/v1/events"

    def token(self, name: str, scopes: str, *extra: str) -> str:
        """A new token, from the CLI."""
        return self.cluster.cli("token", "create", name, "--scope", scopes, *extra).stdout.splitlines()[0]

    def fire(self, agent: str, count: int, tag: str = "test/http") -> None:
        """``count`` events from ``agent`` (test.fire_events), waited for."""
        self.cluster.cli("run", agent, "test.fire_events", str(count), f"tag={tag}", "--timeout", "60")


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    port = free_port()
    cluster = Cluster(tmp_path_factory.mktemp("events"), http={
        "listen": f"127.0.0.1:{port}", "event_ring_events": RING, "event_backlog": BACKLOG})
    cluster.start_master()
    try:
        cluster.start_agents(*AGENTS)
        cluster.wait_answering(*AGENTS)
        yield Lab(cluster, port)
    finally:
        assert cluster.stop()["master"] == 0, cluster.master.log()[-3000:]


async def connect(lab: Lab, token: str, query: str = "") -> Feed:
    """A WebSocket on /v1/events; returns once the server has subscribed it (the upgrade is answered)."""
    request = tornado.httpclient.HTTPRequest(lab.ws_url + query, headers={"Authorization": f"Bearer {token}"})
    return Feed(await tornado.websocket.websocket_connect(request))


class Feed:
    """A WebSocket's events one by one: each message carries ``{"events": [...]}`` (or a gap notice)."""

    def __init__(self, ws: tornado.websocket.WebSocketClientConnection) -> None:
        self.ws = ws
        self._ready: list[Any] = []
        self.messages = 0

    async def read(self, count: int, timeout: float = 30) -> list[Any]:
        """The next ``count`` items (events, or a gap notice), decoded."""
        while len(self._ready) < count:
            message = await asyncio.wait_for(self.ws.read_message(), timeout)
            assert message is not None, \
                f"closed after {len(self._ready)} items: {self.ws.close_code} {self.ws.close_reason}"
            document = json.loads(message)
            self.messages += 1
            self._ready.extend(document["events"] if "events" in document else [document])
        taken, self._ready = self._ready[:count], self._ready[count:]
        return taken

    def close(self) -> None:
        """Close the WebSocket."""
        self.ws.close()


async def fire(lab: Lab, agent: str, count: int, tag: str = "test/http") -> None:
    """Lab.fire off the loop (the CLI is a process)."""
    await asyncio.get_running_loop().run_in_executor(None, lab.fire, agent, count, tag)


def test_every_subscriber_gets_every_matching_event_and_since_replays_what_was_missed(lab: Lab) -> None:
    token = lab.token("watcher", "events:read,jobs:read,agents:read")

    async def scenario() -> None:
        first, second = await connect(lab, token, "?tags=test/http"), await connect(lab, token, "?tags=test/http")
        await fire(lab, "web1", 20)
        got_first, got_second = await first.read(20), await second.read(20)
        assert [m["seq"] for m in got_first] == [m["seq"] for m in got_second]
        assert [m["data"] for m in got_first] == [m["data"] for m in got_second]
        assert {m["agent"] for m in got_first} == {"web1"} and {m["tag"] for m in got_first} == {"test/http"}
        seqs = [m["seq"] for m in got_first]
        assert seqs == sorted(seqs) and len(set(seqs)) == 20
        first.close()
        second.close()

        last = seqs[-1]
        await fire(lab, "db1", 5)  # nobody listens
        again = await connect(lab, token, f"?tags=test/http&since={last}")
        missed = await again.read(5)
        assert [m["agent"] for m in missed] == ["db1"] * 5 and missed[0]["seq"] > last
        await fire(lab, "web1", 1)
        live = await again.read(1)
        assert live[0]["seq"] > missed[-1]["seq"] and live[0]["agent"] == "web1"
        again.close()

        await fire(lab, "db1", RING + 50)  # pushes the first events out of the ring
        behind = await connect(lab, token, "?tags=test/http&since=1")
        gap = (await behind.read(1))[0]
        assert set(gap) == {"gap"} and gap["gap"]["since"] == 1 and gap["gap"]["resumed_from"] > 2
        resumed = await behind.read(1)
        assert resumed[0]["seq"] >= gap["gap"]["resumed_from"]
        behind.close()

    asyncio.run(scenario())


def test_a_token_sees_only_what_its_scopes_and_target_allow(lab: Lab) -> None:
    no_jobs = lab.token("no-jobs", "events:read")
    web_only = lab.token("web-events", "events:read,jobs:read", "--target", "web*")
    refused = urllib.request.Request(f"http://127.0.0.1:{lab.port}/v1/events",
                                     headers={"Authorization": f"Bearer {lab.token('no-events', 'jobs:read')}"})
    with pytest.raises(urllib.error.HTTPError) as forbidden:
        urllib.request.urlopen(refused, timeout=10)
    assert forbidden.value.code == 403 and "events:read" in json.loads(forbidden.value.read())["error"]["message"]

    async def scenario() -> None:
        blind = await connect(lab, no_jobs, "?tags=saltmarsh/job/,test/scoped")
        limited = await connect(lab, web_only, "?tags=saltmarsh/job/,test/scoped")
        await asyncio.get_running_loop().run_in_executor(None, lab.cluster.cli, "run", "*", "test.ping")
        await fire(lab, "db1", 3, "test/scoped")
        await fire(lab, "web1", 2, "test/scoped")
        seen = await blind.read(5)  # no job events at all: only the five scoped ones
        assert [m["tag"] for m in seen] == ["test/scoped"] * 5
        limited_seen = await limited.read(3)  # web1's return, then web1's two events; nothing of db1
        assert all(m["agent"] == "web1" for m in limited_seen), limited_seen
        assert limited_seen[0]["tag"].startswith("saltmarsh/job/") and limited_seen[0]["tag"].endswith("/ret/web1")
        blind.close()
        limited.close()

    asyncio.run(scenario())


def test_a_subscriber_that_never_reads_is_cut_off_and_the_others_are_served(lab: Lab) -> None:
    token = lab.token("slow", "events:read")
    # Paced at 10,000 a second, which a reader keeps up with; 80,000 of them (~7 MB) are more than the
    # kernel's buffers (4 MiB at most for the master's end here) and the backlog hold for one that never reads.
    burst, seconds = 80_000, 8

    async def scenario() -> None:
        reader = await connect(lab, token, "?tags=test/flood")
        # The sleeper: a raw WebSocket whose receive buffer is never read, with a small window.
        sleeper = socket.create_connection(("127.0.0.1", lab.port))
        sleeper.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sleeper.sendall(("GET /v1/events?tags=test/flood HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                         "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                         f"Sec-WebSocket-Version: 13\r\nAuthorization: Bearer {token}\r\n\r\n").encode())
        assert b" 101 " in sleeper.recv(200)
        received = 0

        async def drain() -> None:
            nonlocal received
            while received < burst:
                received += len(await reader.read(1, timeout=60))

        draining = asyncio.create_task(drain())
        await asyncio.get_running_loop().run_in_executor(
            None, lab.cluster.cli, "run", "web1", "test.fire_steadily", str(burst), str(seconds), "tag=test/flood",
            "--timeout", "60")
        await asyncio.wait_for(draining, 120)
        assert received == burst
        log = lab.cluster.master.log()
        assert "events for token=slow cut off: slow consumer" in log
        sleeper.close()
        reader.close()

    asyncio.run(scenario())
    assert lab.cluster.cli_json("run", "web1", "test.ping") == {"web1": True}


def test_server_sent_events_carry_the_same_events_with_ids(lab: Lab) -> None:
    token = lab.token("sse", "events:read")
    request = urllib.request.Request(f"http://127.0.0.1:{lab.port}/v1/events?tags=test/sse",
                                     headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=30) as stream:
        assert stream.headers["Content-Type"].startswith("text/event-stream")
        lab.fire("web1", 3, "test/sse")
        events: list[tuple[int, Any]] = []
        ident = None
        while len(events) < 3:
            line = stream.readline().decode().rstrip("\n")
            if line.startswith("id: "):
                ident = int(line[4:])
            elif line.startswith("data: "):
                assert ident is not None
                events.append((ident, json.loads(line[6:])))
    assert [data["seq"] for _, data in events] == [ident for ident, _ in events]
    assert [data["data"] for _, data in events] == [{"n": n} for n in range(3)]
    wait_until(lambda: "events over SSE for token=sse" in lab.cluster.master.log(), what="the SSE log line")
