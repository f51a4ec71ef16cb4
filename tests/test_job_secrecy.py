"""A job's contents reach only its targets (issue 10, part 1).

A spy holds everything a real accepted agent holds: hv3's own Ed25519 key (read
from the real agent's root_dir), the Box it shares with the master, and the
publish session key. It subscribes to every topic and tries to open every
frame the master publishes. It reads the one job aimed at everyone (the
control that shows it is able to), and nothing of the jobs aimed at others:
neither the function nor the arguments, by any key it has.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import pytest
import zmq

from saltmarsh.protocol.codec import decode
from saltmarsh.protocol.crypto import SessionKey
from saltmarsh.protocol.envelope import Header, parse_outer, verify
from saltmarsh.protocol.errors import ProtocolError
from saltmarsh.protocol.jobseal import PRIVATE_JOB_KIND, job_cipher, unwrap_job_key
from saltmarsh.protocol.limits import Limits
from saltmarsh.protocol.messages import Job

from .cluster import Cluster, wait_until
from .wire import agent_identity, box, master_identity, session_key_bytes


class Spy:
    """A SUB socket on every topic, opening frames with every key one accepted agent holds."""

    def __init__(self, ctx: zmq.Context[Any], cluster: Cluster, victim_keys_of: str) -> None:
        self.master_public = master_identity(cluster.master_dir).public_key
        self.box = box(agent_identity(cluster.agents[victim_keys_of]), self.master_public)
        self.session = SessionKey(session_key_bytes(cluster.master_dir))
        self.socket = ctx.socket(zmq.SUB)
        self.socket.setsockopt(zmq.SUBSCRIBE, b"")
        self.socket.connect(f"tcp://127.0.0.1:{cluster.publish_port}")
        self.frames: list[tuple[list[bytes], Header]] = []
        self.opened: list[Job] = []

    def drain(self, seconds: float) -> None:
        """Receive for ``seconds``, trying every key on every frame."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            if not self.socket.poll(int(left * 1000)):
                break
            parts = self.socket.recv_multipart()
            header = verify(parse_outer(parts[1], Limits()), self.master_public)
            self.frames.append((parts, header))
            job = self._try_open(parts, header)
            if job is not None:
                self.opened.append(job)

    def _try_open(self, parts: list[bytes], header: Header) -> Job | None:
        attempts = [lambda: self.session.cipher().decrypt(header.body)]
        for wrapped in parts[2:]:
            attempts.append(lambda w=wrapped: job_cipher(unwrap_job_key(self.box, w, header.nonce))
                            .decrypt(header.body))
        for attempt in attempts:
            try:
                return decode(attempt(), Job, "job")
            except ProtocolError:
                continue
        return None

    def close(self) -> None:
        """Close the socket."""
        self.socket.close(linger=0)


def test_an_accepted_agent_learns_nothing_of_jobs_aimed_at_others(cluster: Cluster, zctx: zmq.Context[Any]) -> None:
    cluster.start_agent("hv1", labels={"role": "hv"})
    cluster.start_agent("hv2", labels={"role": "hv"})
    cluster.start_agent("web3", labels={"role": "web"})
    cluster.accept("hv1", "hv2", "web3")
    spy = Spy(zctx, cluster, victim_keys_of="web3")
    try:
        # The control: the job for everyone is web3's to read, and the spy does read it.
        def spy_reads_broadcast() -> bool:
            cluster.cli("run", "*", "test.echo", "for-everyone", "--timeout", "5")
            spy.drain(0.3)
            return any(job.args == ["for-everyone"] for job in spy.opened)
        wait_until(spy_reads_broadcast, timeout=20, interval=0.1, what="the spy to be subscribed")

        secrets = {f"secret-{kind}-{uuid.uuid4().hex}": kind for kind in ("id", "list", "glob", "labels")}
        by_kind = {kind: secret for secret, kind in secrets.items()}
        runs = {
            "id": cluster.cli("run", "hv1", "test.echo", by_kind["id"], "--json"),
            "list": cluster.cli("run", "-L", "hv1,hv2", "test.echo", by_kind["list"], "--json"),
            "glob": cluster.cli("run", "hv*", "test.echo", by_kind["glob"], "--json"),
            "labels": cluster.cli("run", "-l", "role=hv", "test.echo", by_kind["labels"], "--json"),
        }
        before = len(spy.frames)
        spy.drain(1.0)

        private = [(parts, header) for parts, header in spy.frames[before:] if header.kind == PRIVATE_JOB_KIND]
        # hv1 got four jobs and hv2 three: the spy was in place to see every frame of them...
        assert len(private) == 7, [(p[0], h.kind) for p, h in spy.frames[before:]]
        assert {parts[0] for parts, _ in private} == {b"@hv1\x00", b"@hv2\x00"}
        # ... and opened none of them, by the session key or by its own Box.
        assert [job.args for job in spy.opened if job.args != ["for-everyone"]] == []
        for parts, _header in private:
            raw = b"".join(parts)
            assert b"test.echo" not in raw and not any(s.encode() in raw for s in secrets)
        # The targets themselves did read and run them: the secrecy costs no delivery.
        assert {kind: sorted(json.loads(run.stdout)) for kind, run in runs.items()} == {
            "id": ["hv1"], "list": ["hv1", "hv2"], "glob": ["hv1", "hv2"], "labels": ["hv1", "hv2"]}
        for kind, run in runs.items():
            assert set(json.loads(run.stdout).values()) == {by_kind[kind]}, kind
    finally:
        spy.close()


def test_a_job_key_wrapped_for_one_agent_opens_for_no_other(cluster: Cluster, zctx: zmq.Context[Any]) -> None:
    cluster.start_agent("hv1")
    cluster.start_agent("hv2")
    cluster.accept("hv1", "hv2")
    hv1, hv2 = (Spy(zctx, cluster, victim_keys_of=a) for a in ("hv1", "hv2"))
    try:
        def both_see_a_job_for_hv1() -> bool:
            cluster.cli("run", "hv1", "test.ping")
            hv1.drain(0.3)
            hv2.drain(0.3)
            return any(h.kind == PRIVATE_JOB_KIND for _, h in hv2.frames)
        wait_until(both_see_a_job_for_hv1, timeout=20, interval=0.1, what="the spies to be subscribed")
        cluster.cli("run", "hv1", "test.echo", "second")
        hv1.drain(0.5)
        hv2.drain(0.5)
        # hv1's keys open hv1's jobs; hv2's keys (its Box, the session key) open none of the same frames.
        assert {job.fun for job in hv1.opened} == {"test.ping", "test.echo"}
        assert hv2.opened == []
        frames = [(p, h) for p, h in hv2.frames if h.kind == PRIVATE_JOB_KIND]
        assert len(frames) >= 2
        (parts, header), (_, other) = frames[-2], frames[-1]
        with pytest.raises(ProtocolError):
            unwrap_job_key(hv2.box, parts[2], header.nonce)
        # A wrapped key moved to another frame is refused even by the agent it was made for.
        assert unwrap_job_key(hv1.box, parts[2], header.nonce)
        with pytest.raises(ProtocolError):
            unwrap_job_key(hv1.box, parts[2], other.nonce)
    finally:
        hv1.close()
        hv2.close()
