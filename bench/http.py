"""The HTTP API benchmark: request latency at 1 and 50 concurrent clients, events to 50 WebSocket subscribers.

    .venv/bin/python -m bench.http [--agents 10] [--requests 400] [--events 20000] [--subscribers 50] [--quick]

A real master with the API on loopback and --agents agents (libvirt's test:///default driver), as
processes (tests/cluster.py). Clients keep their connections alive and speak HTTP/1.1 over asyncio
streams (a few lines here, so that the client's own cost stays small beside the server's):

1. ``GET /v1/agents`` and ``POST /v1/jobs`` (``test.ping`` to every agent: the 202 once the job is
   out) at 1 client, then 50 concurrent clients: p50 / p95 / p99 latency and requests per second.
2. Events: --subscribers WebSockets on ``/v1/events?tags=bench/http``, spread over 2 processes, each
   reading its sockets with a few lines of stdlib WebSocket (``ws_open``, ``ws_message``: tornado's
   client cost the readers more CPU, which the master shares), then one agent fires --events
   events evenly over --events / --rate seconds (``test.fire_steadily``: a sustained rate, which is
   what the goal is about; a burst faster than any reader overflows every bounded queue, by design).
   Delivered per second in all (every subscriber gets every event), and the delivery latency
   (received minus the event's own timestamp, the agent's clock, which is this machine's) p50 / p99.
   Goal: >= 50,000 events/s in all, p99 <= 50 ms.
3. The master's RSS with the subscribers connected, and before any.

Everything runs on this machine's 2 CPUs: the master, the agents, the clients. The table goes to
stdout, progress to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.cluster import BIN, Cluster, free_port, wait_until

from .bus import rss_mb

ROOT = Path(__file__).resolve().parents[1]
SUBSCRIBER_PROCESSES = 2
EVENT_TAG = "bench/http"


def say(text: str) -> None:
    """Progress, on stderr."""
    print(f"[bench.http] {text}", file=sys.stderr, flush=True)


def percentile(values: list[float], fraction: float) -> float:
    """The value below which ``fraction`` of ``values`` lie (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))]


class Connection:
    """One kept-alive HTTP/1.1 connection."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, token: str) -> None:
        self.reader, self.writer, self.token = reader, writer, token

    @classmethod
    async def open(cls, port: int, token: str) -> Connection:
        """Connect to the API."""
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer, token)

    async def call(self, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        """One request; (status, body)."""
        head = (f"{method} {path} HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {self.token}\r\n"
                f"Content-Length: {len(body)}\r\nContent-Type: application/json\r\n\r\n")
        self.writer.write(head.encode() + body)
        status_line = await self.reader.readline()
        length = 0
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            if name.lower() == "content-length":
                length = int(value)
        return int(status_line.split()[1]), await self.reader.readexactly(length)

    def close(self) -> None:
        """Close the connection."""
        self.writer.close()


async def latency(port: int, token: str, clients: int, requests: int, method: str, path: str,
                  body: bytes, expect: int) -> tuple[list[float], float]:
    """``requests`` calls spread over ``clients`` connections: each call's seconds, and the wall time."""
    connections = [await Connection.open(port, token) for _ in range(clients)]
    times: list[float] = []

    async def client(connection: Connection, count: int) -> None:
        for _ in range(count):
            started = time.perf_counter()
            status, answer = await connection.call(method, path, body)
            times.append(time.perf_counter() - started)
            if status != expect:
                raise RuntimeError(f"{method} {path}: {status} {answer[:200]!r}")

    started = time.perf_counter()
    await asyncio.gather(*(client(c, requests // clients) for c in connections))
    wall = time.perf_counter() - started
    for connection in connections:
        connection.close()
    return times, wall


def subscriber_process(port: int, token: str, count: int, expected: int, timeout: float) -> subprocess.Popen[str]:
    """A process holding ``count`` WebSockets; it prints one JSON line when they are open, one when done."""
    return subprocess.Popen([sys.executable, "-m", "bench.http", "--subscriber", str(port), token, str(count),
                             str(expected), str(timeout)], stdout=subprocess.PIPE, text=True, cwd=ROOT)


async def ws_open(port: int, path: str, token: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A WebSocket opened by hand (RFC 6455's handshake): the reader below is a few lines, not a library's."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write((f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                  f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                  f"Authorization: Bearer {token}\r\n\r\n").encode())
    head = await reader.readuntil(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 101"):
        raise RuntimeError(f"the events WebSocket was refused: {head.splitlines()[0]!r}")
    return reader, writer


async def ws_message(reader: asyncio.StreamReader) -> bytes | None:
    """The next text message, or None once the server closes. The master's frames are unmasked, whole
    (one per batch) and uncompressed (no extension was asked for); pings, which it does not send, are skipped."""
    while True:
        first, second = await reader.readexactly(2)
        length = second & 0x7F
        if length == 126:
            length = int.from_bytes(await reader.readexactly(2), "big")
        elif length == 127:
            length = int.from_bytes(await reader.readexactly(8), "big")
        payload = await reader.readexactly(length)
        opcode = first & 0x0F
        if opcode == 0x8:
            return None
        if opcode == 0x1 and first & 0x80:
            return payload


async def subscribe(port: int, token: str, count: int, expected: int, timeout: float) -> None:
    """The subscriber process's work: open, say so, read ``expected`` events on each, report."""
    sockets = [await ws_open(port, f"/v1/events?tags={EVENT_TAG}", token) for _ in range(count)]
    print(json.dumps({"open": count}), flush=True)
    latencies: list[float] = []
    first = last = 0.0

    async def read(reader: asyncio.StreamReader) -> int:
        nonlocal first, last
        got = 0
        while got < expected:
            message = await ws_message(reader)
            if message is None:
                break
            now = time.time()
            first = first or now
            last = now
            # A message carries the events ready at once: counted by their keys, and only the first
            # (the oldest, the latency sample) parsed: parsing all of them cost these readers a third
            # of a CPU at 100,000 events/s, which the master shares.
            count = message.count(b'{"seq":')
            got += count
            if count:
                first_event = message[len(b'{"events":['):message.find(b'},{"seq":') + 1 or -2]
                latencies.append(now - json.loads(first_event)["ts"])
        return got

    try:
        counts = await asyncio.wait_for(asyncio.gather(*(read(reader) for reader, _ in sockets)), timeout)
    except (TimeoutError, asyncio.IncompleteReadError):
        counts = [-1]
    for _, writer in sockets:
        writer.close()
    print(json.dumps({"received": sum(c for c in counts if c > 0), "short": sum(c < expected for c in counts),
                      "first": first, "last": last, "latencies": latencies}), flush=True)


async def measure_requests(port: int, token: str, requests: int) -> list[tuple[str, int, list[float], float]]:
    """Both endpoints at 1 and 50 clients."""
    results = []
    ping = json.dumps({"target": "*", "fun": "test.ping"}).encode()
    for clients in (1, 50):
        for method, path, body, expect in (("GET", "/v1/agents", b"", 200), ("POST", "/v1/jobs", ping, 202)):
            count = max(clients, requests if clients > 1 else requests // 4)
            say(f"{method} {path}: {count} requests over {clients} client(s)")
            times, wall = await latency(port, token, clients, count, method, path, body, expect)
            results.append((f"{method} {path}", clients, times, wall))
    return results


def measure_events(cluster: Cluster, port: int, token: str, subscribers: int, events: int,
                   rate: float) -> dict[str, Any]:
    """Events to the subscribers; the master's RSS before and with them."""
    master_pid = cluster.master.proc.pid if cluster.master.proc else 0
    rss_before = rss_mb(master_pid)
    per = [subscribers // SUBSCRIBER_PROCESSES + (i < subscribers % SUBSCRIBER_PROCESSES)
           for i in range(SUBSCRIBER_PROCESSES)]
    procs = [subscriber_process(port, token, n, events, 300) for n in per if n]
    for proc in procs:
        assert proc.stdout is not None
        json.loads(proc.stdout.readline())  # its sockets are open
    rss_with = rss_mb(master_pid)
    say(f"{subscribers} subscribers connected; firing {events:,} events at {rate:,.0f} a second")
    started = time.time()
    cluster.cli("run", "hv1", "test.fire_steadily", str(events), f"{events / rate:.3f}", f"tag={EVENT_TAG}",
                "--timeout", "300", timeout=400)
    reports = []
    for proc in procs:
        assert proc.stdout is not None
        reports.append(json.loads(proc.stdout.readline()))
        proc.wait(30)
    latencies = [lat for report in reports for lat in report["latencies"]]
    last = max(report["last"] for report in reports)
    received = sum(report["received"] for report in reports)
    return {"received": received, "expected": events * subscribers, "seconds": last - started,
            "rate": received / max(last - started, 1e-9), "p50": percentile(latencies, 0.5) if latencies else None,
            "p99": percentile(latencies, 0.99) if latencies else None, "short": sum(r["short"] for r in reports),
            "rss_before": rss_before, "rss_with": rss_with, "rss_after": rss_mb(master_pid)}


def render(requests: list[tuple[str, int, list[float], float]], events: dict[str, Any], args: argparse.Namespace,
           load: tuple[str, str]) -> str:
    """The table."""
    lines = ["saltmarsh HTTP API benchmark: a real master, the API on loopback, "
             f"{args.agents} agents on test:///default; every client on the same 2 CPUs",
             f"load averages at start {load[0]}, end {load[1]}", "",
             f"{'REQUEST':<18} {'CLIENTS':>7} {'N':>6} {'P50 MS':>8} {'P95 MS':>8} {'P99 MS':>8} {'REQ/S':>8}"]
    for name, clients, times, wall in requests:
        ms = [t * 1000 for t in times]
        lines.append(f"{name:<18} {clients:>7} {len(ms):>6} {statistics.median(ms):>8.1f} {percentile(ms, 0.95):>8.1f} "
                     f"{percentile(ms, 0.99):>8.1f} {len(ms) / wall:>8.0f}")
    lines += ["", f"events: one agent fired {args.events:,} at {args.rate:,.0f} a second; "
              f"{events['received']:,} of {events['expected']:,} delivered to {args.subscribers} "
              f"WebSocket subscribers in {events['seconds']:.2f} s = {events['rate']:,.0f} events/s in all "
              f"(goal >= 50,000), {events['short']} subscriber(s) short",
              f"delivery latency (event's timestamp to received): p50 "
              f"{(events['p50'] or 0) * 1000:.1f} ms, p99 {(events['p99'] or 0) * 1000:.1f} ms (goal <= 50 ms)",
              f"master RSS: {events['rss_before']:.1f} MiB before, {events['rss_with']:.1f} MiB with "
              f"{args.subscribers} subscribers connected, {events['rss_after']:.1f} MiB after the events"]
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(prog="python -m bench.http", description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=10)
    parser.add_argument("--requests", type=int, default=400, help="requests per endpoint at 50 clients")
    parser.add_argument("--events", type=int, default=20_000, help="events fired (each to every subscriber)")
    parser.add_argument("--subscribers", type=int, default=50)
    parser.add_argument("--rate", type=float, default=2000.0, help="events a second the agent fires (default 2000)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 agents, 100 requests, 500 events, 5 subs")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run it."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--subscriber"]:
        port, token, count, expected, timeout = argv[1:6]
        asyncio.run(subscribe(int(port), token, int(count), int(expected), float(timeout)))
        return 0
    args = parse_args(argv)
    if args.quick:
        args.agents, args.requests, args.events, args.subscribers = 2, 100, 500, 5
    load_start = " ".join(f"{v:.2f}" for v in os.getloadavg())
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="sm-bench-http-") as base:
        cluster = Cluster(Path(base), http={"listen": f"127.0.0.1:{port}"}, log_level="info")
        try:
            cluster.start_master()
            agents = [f"hv{i}" for i in range(1, args.agents + 1)]
            say(f"starting {len(agents)} agents")
            cluster.start_agents(*agents, log_level="info")
            cluster.wait_answering(*agents, timeout=120)
            token = cluster.cli("token", "create", "bench", "--scope",
                                "agents:read,jobs:run,events:read").stdout.splitlines()[0]
            wait_until(lambda: subprocess.run([str(BIN / "python"), "-c", "import socket; socket.create_connection("
                                               f"('127.0.0.1', {port}), 1)"], check=False).returncode == 0,
                       what="the API")
            requests = asyncio.run(measure_requests(port, token, args.requests))
            events = measure_events(cluster, port, token, args.subscribers, args.events, args.rate)
        except BaseException:
            cluster.print_log_tails(daemons=2)
            raise
        finally:
            cluster.stop()
    print(render(requests, events, args, (load_start, " ".join(f"{v:.2f}" for v in os.getloadavg()))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
