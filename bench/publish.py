"""The publish micro-benchmark: what one call of the master's Publisher.publish costs, broadcast or per agent.

    .venv/bin/python -m bench.publish [--agents 1,50,1000] [--repeat 200] [--subscribers none|agents]

Everything is the master's real code, in this one process: a Publisher (master/wire/publisher.py)
on a real PUB socket bound on 127.0.0.1, a master identity and N agent identities made with
Identity.generate, and the Boxes of a real RequestChannel.peer_cipher (master/wire/request_channel.py).
The Boxes are warmed first (one peer_cipher call per agent), as in a running master, which
computed each agent's Box when the agent authenticated and keeps up to MAX_CIPHERS of them.
For each N it publishes --repeat test.ping Jobs (target ``'hv*'``), after 10 untimed ones, as:

- broadcast: ``publish(job, None)``: one seal with the session key, one send on the broadcast
  topic. The path ``'*'`` takes, and the one every glob and label job took before per-job sealing;
- per agent: ``publish(job, {id: public key} for the N agents)``: one seal with a fresh job key,
  then for each agent one Box wrap of that key and one 3-part send on the agent's own topic: the
  path of every target but ``'*'`` now;
- per agent, cold Boxes: the same after emptying the Box cache, so that each recipient costs an
  X25519 key conversion and Box precomputation too (the first jobs after a master restart); for
  information only.

Each call is timed alone: CPU is time.process_time (the whole process: the event loop's thread
and libzmq's I/O thread), wall is time.perf_counter around ``await publish(...)`` (how long the
master's event loop is held). The table gives the median per job, the per-agent/broadcast ratio
and the extra CPU per recipient. With ``--subscribers none`` (the default) nobody subscribes, so
libzmq matches each topic and drops the message at the publisher: the send-side cost in Python
and libzmq. With ``--subscribers agents`` a child process holds N SUB sockets subscribed as
agents are (broadcast and the agent's own topic), so each job reaches every socket once either
way; after each publish the CPU clock is stopped only once the child reports that every socket
has received the job, so libzmq's I/O thread writing the frames to the N TCP connections is
counted too (waiting for the child's report costs this process no CPU; the wall figure is still
the publish call alone).

Run in a tree from before per-job sealing (Publisher without ``peer_cipher``), the per-agent row
is that tree's path for named agents: the one frame sealed with the session key, sent N times.
The table goes to stdout, progress to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import os
import platform
import select
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import zmq
import zmq.asyncio

from saltmarsh.master.wire.publisher import Publisher, SessionKeys
from saltmarsh.master.wire.request_channel import RequestChannel
from saltmarsh.pki.keys import Identity
from saltmarsh.protocol.jids import new_jid
from saltmarsh.protocol.limits import DEFAULT_LIMITS
from saltmarsh.protocol.messages import Job
from saltmarsh.protocol.targeting import make_target
from saltmarsh.protocol.topics import BROADCAST, agent_topic
from tests.cluster import free_port

WARMUP = 10
MARKER = b"bench.publish marker "
QUIT = b"bench.publish quit"
READY_TIMEOUT = 120.0
ACK_TIMEOUT = 30.0
HEADER = ("N", "BROADCAST CPU", "BROADCAST WALL", "PER-AGENT CPU", "PER-AGENT WALL", "CPU RATIO",
          "CPU PER RECIPIENT", "COLD-BOX CPU")


def say(text: str) -> None:
    """Progress, on stderr so that stdout holds only the table."""
    print(f"[bench.publish] {text}", file=sys.stderr, flush=True)


def agent_ids(count: int) -> list[str]:
    """The agent ids of the benchmark (all match ``'hv*'``)."""
    return [f"hv{i:04d}" for i in range(count)]


def per_job_sealing() -> bool:
    """True if this tree's Publisher seals per job (takes peer_cipher); False for the tree before."""
    return "peer_cipher" in inspect.signature(Publisher.__init__).parameters


@dataclass
class Timings:
    """Per-call CPU and wall seconds of one way of publishing."""

    cpu: list[float] = field(default_factory=list)
    wall: list[float] = field(default_factory=list)

    @property
    def cpu_median(self) -> float:
        return statistics.median(self.cpu) if self.cpu else 0.0

    @property
    def wall_median(self) -> float:
        return statistics.median(self.wall) if self.wall else 0.0


@dataclass
class Figures:
    """Everything measured for one number of agents."""

    agents: int
    broadcast: Timings = field(default_factory=Timings)
    per_agent: Timings = field(default_factory=Timings)
    cold: Timings = field(default_factory=Timings)


class Drain:
    """A child process with one SUB socket per agent, subscribed as the agent is; reports what arrived."""

    def __init__(self, endpoint: str, count: int) -> None:
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "bench.publish", "--drain-endpoint", endpoint, "--drain-agents", str(count)],
            stdout=subprocess.PIPE, cwd=Path(__file__).resolve().parent.parent,
        )
        assert self._proc.stdout is not None
        self._fd = self._proc.stdout.fileno()
        self._buffer = b""
        self._seq = 0
        self.jobs = 0  # jobs published since the sockets were all subscribed

    def _line(self, timeout: float) -> str | None:
        """The child's next line, or None after ``timeout`` seconds (read unbuffered, so select sees it all)."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            ready, _, _ = select.select([self._fd], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                return None
            chunk = os.read(self._fd, 65536)
            if not chunk:
                raise RuntimeError(f"the drain process ended (exit {self._proc.poll()})")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line.decode().strip()

    def wait_ready(self) -> None:
        """Wait for the child's sockets to connect."""
        if self._line(READY_TIMEOUT) != "ready":
            raise RuntimeError("the drain process did not start")

    async def subscribed(self, socket: zmq.asyncio.Socket) -> None:
        """Send markers on broadcast until every SUB socket has received one (its subscriptions are in)."""
        while True:
            self._seq += 1
            await socket.send_multipart([BROADCAST, MARKER + str(self._seq).encode()])
            while (line := self._line(0.2)) is not None:
                if line == "marker":
                    return

    async def delivered(self) -> None:
        """Count one more published job; return once every SUB socket has received it."""
        self.jobs += 1
        while True:
            line = self._line(ACK_TIMEOUT)
            if line is None:
                raise RuntimeError(f"job {self.jobs} did not reach every socket in {ACK_TIMEOUT} s")
            if line.startswith("jobs ") and int(line.split()[1]) >= self.jobs:
                return

    async def close(self, socket: zmq.asyncio.Socket) -> None:
        """Tell the child to stop, and reap it."""
        await socket.send_multipart([BROADCAST, QUIT])
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()


def drain(endpoint: str, count: int) -> int:
    """The child: N SUB sockets; print 'ready', 'marker' once all have one, then 'jobs K' as all have K."""
    ctx = zmq.Context()
    sockets = []
    poller = zmq.Poller()
    for agent_id in agent_ids(count):
        sock = ctx.socket(zmq.SUB)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SUBSCRIBE, BROADCAST)
        sock.setsockopt(zmq.SUBSCRIBE, agent_topic(agent_id))
        sock.connect(endpoint)
        poller.register(sock, zmq.POLLIN)
        sockets.append(sock)
    index = {sock: i for i, sock in enumerate(sockets)}
    jobs = [0] * count
    marked = [False] * count
    all_marked = False
    reported = 0
    print("ready", flush=True)
    while True:
        for sock, _ in poller.poll(1000):
            while True:
                try:
                    parts = sock.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                if parts[0] == BROADCAST and parts[1] == QUIT:
                    ctx.destroy(linger=0)
                    return 0
                if parts[0] == BROADCAST and parts[1].startswith(MARKER):
                    marked[index[sock]] = True
                elif all_marked:
                    jobs[index[sock]] += 1
        if not all_marked and all(marked):
            all_marked = True
            print("marker", flush=True)
        lowest = min(jobs)
        if lowest > reported:
            reported = lowest
            print(f"jobs {reported}", flush=True)


async def timed(call: Callable[[], Awaitable[None]], after: Callable[[], Awaitable[None]] | None,
                into: Timings, before: Callable[[], None] | None = None) -> None:
    """Time one call: wall of the call alone, CPU until ``after`` (the drain's ack) has returned too."""
    if before is not None:
        before()
    cpu0, wall0 = time.process_time(), time.perf_counter()
    await call()
    wall1 = time.perf_counter()
    if after is not None:
        await after()
    cpu1 = time.process_time()
    into.cpu.append(cpu1 - cpu0)
    into.wall.append(wall1 - wall0)


async def measure(agents: int, args: argparse.Namespace, tmp: Path) -> Figures:
    """All figures for one N, on a fresh Publisher."""
    figures = Figures(agents)
    ctx = zmq.asyncio.Context()
    master = Identity.generate()
    sessions = SessionKeys(tmp / f"session-{agents}.key")
    new_style = per_job_sealing()
    channel = RequestChannel(ctx, master, lambda _agent_id: None, DEFAULT_LIMITS)
    if new_style:
        publisher = Publisher(ctx, master, sessions, DEFAULT_LIMITS, channel.peer_cipher)
    else:
        publisher = Publisher(ctx, master, sessions, DEFAULT_LIMITS)  # type: ignore[call-arg]
    port = free_port()
    publisher.bind("127.0.0.1", port)
    socket = publisher._socket  # the markers must follow the jobs on the same socket
    ids = agent_ids(agents)
    recipients = {agent_id: Identity.generate().public_key for agent_id in ids}
    for key in recipients.values():
        channel.peer_cipher(key)  # warm, as in a running master
    target = make_target("hv*")
    per_agent_arg: object = recipients if new_style else ids

    def job() -> Job:
        return Job(jid=new_jid(), fun="test.ping", target=target, timeout=5.0)

    drainer: Drain | None = None
    after: Callable[[], Awaitable[None]] | None = None
    try:
        if args.subscribers == "agents":
            drainer = Drain(f"tcp://127.0.0.1:{port}", agents)
            drainer.wait_ready()
            await drainer.subscribed(socket)
            after = drainer.delivered

        async def broadcast() -> None:
            await publisher.publish(job(), None)

        async def per_agent() -> None:
            await publisher.publish(job(), per_agent_arg)  # type: ignore[arg-type]

        def cool() -> None:
            channel._ciphers.clear()  # the cache a restarted master starts with

        ways: list[tuple[str, Callable[[], Awaitable[None]], Timings, Callable[[], None] | None]] = [
            ("broadcast", broadcast, figures.broadcast, None),
            ("per agent", per_agent, figures.per_agent, None),
        ]
        if new_style and not args.no_cold:
            ways.append(("per agent, cold Boxes", per_agent, figures.cold, cool))
        for name, call, into, before in ways:
            say(f"N={agents}: {name}, {WARMUP} untimed + {args.repeat} timed")
            scratch = Timings()
            for _ in range(WARMUP):
                await timed(call, after, scratch, before)
            for _ in range(args.repeat):
                await timed(call, after, into, before)
        for key in recipients.values():
            channel.peer_cipher(key)
    finally:
        if drainer is not None:
            await drainer.close(socket)
        publisher.close()
        ctx.destroy(linger=0)
    return figures


def us(seconds: float) -> str:
    """Microseconds, for the table."""
    return f"{seconds * 1e6:,.1f} µs"


def rows_for(f: Figures) -> tuple[str, ...]:
    """One table row per N."""
    b, p = f.broadcast, f.per_agent
    ratio = f"{p.cpu_median / b.cpu_median:,.1f}x" if b.cpu_median > 0 else "—"
    per_recipient = us((p.cpu_median - b.cpu_median) / f.agents)
    cold = us(f.cold.cpu_median) if f.cold.cpu else "—"
    return (str(f.agents), us(b.cpu_median), us(b.wall_median), us(p.cpu_median), us(p.wall_median), ratio,
            per_recipient, cold)


def render(figures: list[Figures], args: argparse.Namespace) -> str:
    """The table, with the conditions above it."""
    rows = [HEADER, *(rows_for(f) for f in figures)]
    widths = [max(len(r[c]) for r in rows) for c in range(len(HEADER))]

    def line(row: tuple[str, ...]) -> str:
        return "  ".join(cell.rjust(w) for cell, w in zip(row, widths, strict=True))

    if per_job_sealing():
        path = "per agent = publish(job, {id: key}): fresh job key, one Box wrap and one send per agent (warm Boxes)"
    else:
        path = "per agent = publish(job, [ids]) of the tree before per-job sealing: one session-key seal, N sends"
    subscribers = ("no subscriber (libzmq drops at the publisher)" if args.subscribers == "none" else
                   "N SUB sockets in a child process (as agents subscribe), CPU until every one has the job")
    out = [
        "saltmarsh publish micro-benchmark: Publisher.publish of a test.ping Job on a PUB socket on 127.0.0.1",
        f"machine: {os.cpu_count()} CPUs, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}, zmq {zmq.zmq_version()}, "
        f"load average {os.getloadavg()[0]:.2f} at the end",
        f"median per job of {args.repeat} timed calls (after {WARMUP} untimed); CPU = process_time of the "
        f"whole process, wall = the publish call; {subscribers}",
        f"broadcast = publish(job, None), the path of '*' (and of globs and labels before); {path}",
        "",
        line(rows[0]),
        "  ".join("-" * w for w in widths),
        *(line(r) for r in rows[1:]),
    ]
    return "\n".join(out)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(prog="python -m bench.publish", description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", default="1,50,1000", help="comma-separated numbers of agents (default 1,50,1000)")
    parser.add_argument("--repeat", type=int, default=200, help="timed publishes per N and way (default 200)")
    parser.add_argument("--subscribers", choices=("none", "agents"), default="none",
                        help="none: nobody subscribes (default); agents: N SUB sockets in a child process")
    parser.add_argument("--no-cold", action="store_true", help="skip the cold-Box row")
    parser.add_argument("--drain-endpoint", help=argparse.SUPPRESS)
    parser.add_argument("--drain-agents", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    try:
        args.agent_counts = [int(a) for a in args.agents.split(",") if a.strip()]
    except ValueError:
        parser.error(f"--agents takes numbers separated by commas, not {args.agents!r}")
    if not args.agent_counts or min(args.agent_counts) < 1 or args.repeat < 1:
        parser.error("--agents and --repeat must be positive")
    return args


async def run(args: argparse.Namespace) -> list[Figures]:
    """Measure every N."""
    with tempfile.TemporaryDirectory(prefix="bench-publish-") as tmp:
        return [await measure(n, args, Path(tmp)) for n in args.agent_counts]


def main(argv: list[str] | None = None) -> int:
    """Measure every N, then print the table."""
    args = parse_args(argv)
    if args.drain_endpoint:
        return drain(args.drain_endpoint, args.drain_agents)
    figures = asyncio.run(run(args))
    print(render(figures, args), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
