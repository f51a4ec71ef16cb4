"""A stand-in for the master's publisher: the same master key and session key, on the same port.

Tests that need a job published twice (which the real master never does) stop the
master, publish through this, and start the master again afterwards.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import zmq

from saltmarsh.pki.keys import Identity
from saltmarsh.protocol.codec import encode
from saltmarsh.protocol.crypto import SessionKey
from saltmarsh.protocol.envelope import seal
from saltmarsh.protocol.messages import Job

from .cluster import Cluster


class StandInPublisher:
    """An XPUB bound on the master's publish port that seals jobs as the master would."""

    def __init__(self, socket: zmq.Socket[bytes], master_key: Identity, session: SessionKey) -> None:
        self._socket = socket
        self._master_key = master_key
        self._session = session

    def wait_for_subscribers(self, topics: set[bytes], timeout: float = 20.0) -> None:
        """Wait until every topic in ``topics`` has been subscribed to (the agents are connected again)."""
        subscribed: set[bytes] = set()
        while not topics <= subscribed:
            assert self._socket.poll(int(timeout * 1000)), f"no subscription to {topics - subscribed} yet"
            subscribed.add(self._socket.recv()[1:])

    def publish(self, topic: bytes, job: Job) -> None:
        """Seal ``job`` with the master's keys (a fresh nonce each time) and publish it on ``topic``."""
        body = self._session.cipher().encrypt(encode(job))
        frame, _ = seal(self._master_key, "master", "job", body, key_id=self._session.key_id)
        self._socket.send_multipart([topic, frame])


@contextlib.contextmanager
def standing_in_for_the_master(cluster: Cluster) -> Iterator[StandInPublisher]:
    """Stop the master, publish in its place, and start it again when the block ends."""
    state = cluster.master_dir / "state" / "pki"
    master_key = Identity.load(state / "master.key")
    session = SessionKey((state / "session.key").read_bytes())
    cluster.master.stop()
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    socket = ctx.socket(zmq.XPUB)
    try:
        socket.bind(f"tcp://127.0.0.1:{cluster.publish_port}")
        yield StandInPublisher(socket, master_key, session)
    finally:
        socket.close(linger=0)
        ctx.term()
    cluster.start_master()
