"""A libvirt connection that stops answering is found out and replaced; the job stuck on it times out.

The agent talks to the real libvirtd (its test driver, ``test+unix:///default``) through a Unix-socket
proxy that the test can freeze: the connection the agent holds then carries nothing either way, the
way a connection to a libvirtd stuck on a QEMU monitor or a hung storage pool looks from the agent,
while new connections still pass.
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

from ..cluster import Cluster, wait_until
from ..realvirt import LIBVIRTD_SOCK
from .conftest import RealVirt

pytestmark = pytest.mark.integration


class FreezingProxy:
    """Forwards each connection to ``upstream``; ``freeze()`` holds every byte of those made so far."""

    def __init__(self, path: Path, upstream: Path) -> None:
        self.path, self._upstream = path, upstream
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._server.bind(str(path))
        self._server.listen(16)
        self._gates: list[threading.Event] = []
        self._sockets: list[socket.socket] = [self._server]
        threading.Thread(target=self._accept, name="proxy", daemon=True).start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):  # the server socket closed: the test is over
            while True:
                client, _ = self._server.accept()
                upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                upstream.connect(str(self._upstream))
                gate = threading.Event()
                gate.set()
                self._gates.append(gate)
                self._sockets += [client, upstream]
                for src, dst in ((client, upstream), (upstream, client)):
                    threading.Thread(target=self._pump, args=(src, dst, gate), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket, gate: threading.Event) -> None:
        with contextlib.suppress(OSError):  # either end closed
            while data := src.recv(65536):
                gate.wait()
                dst.sendall(data)

    def freeze(self) -> None:
        """Stop forwarding on every connection made so far (new ones still pass)."""
        for gate in self._gates:
            gate.clear()

    def close(self) -> None:
        """Let the held bytes go and close everything."""
        for gate in self._gates:
            gate.set()
        for sock in self._sockets:
            sock.close()


@contextlib.contextmanager
def proxy_to_libvirtd(path: Path) -> Iterator[FreezingProxy]:
    proxy = FreezingProxy(path, LIBVIRTD_SOCK)
    try:
        yield proxy
    finally:
        proxy.close()


@pytest.mark.timeout(180)
def test_a_wedged_libvirt_connection_is_replaced_and_its_stuck_job_times_out(
    real_libvirtd: RealVirt, tmp_path: Path,
) -> None:
    cluster = Cluster(tmp_path / "cluster")
    cluster.start_master()
    with proxy_to_libvirtd(tmp_path / "libvirt.sock") as proxy:
        uri = f"test+unix:///default?socket={proxy.path}"
        try:
            cluster.start_agents("kvm1", libvirt_uri=uri)
            assert cluster.cli_json("run", "kvm1", "virt.list_domains") == {"kvm1": ["test"]}
            log = cluster.agents["kvm1"].log
            opened = log().count(f"libvirt connection to {uri} open")
            proxy.freeze()
            frozen = time.monotonic()
            stuck = cluster.cli("run", "kvm1", "virt.list_domains", "--timeout", "8", "--json", check=False)
            assert stuck.returncode == 1
            assert json.loads(stuck.stdout)["_missing"]["kvm1"].startswith(
                "timed out on the agent: virt.list_domains ran past its 8 s deadline: its thread is abandoned")
            how = wait_until(lambda: ("a probe" if f"libvirt connection to {uri} is wedged" in log() else
                                      "keepalive" if f"libvirt connection to {uri} closed" in log() else ""),
                             timeout=40, what="the agent to find the connection wedged")
            found = time.monotonic() - frozen
            # New calls go to a new connection, which the frozen one does not hold up.
            answer = wait_until(lambda: cluster.cli_json("run", "kvm1", "virt.list_domains", "--timeout", "10")
                                .get("kvm1") == ["test"], timeout=60, interval=1, what="libvirt to answer again")
            assert answer and log().count(f"libvirt connection to {uri} open") > opened
            print(f"\nconnection frozen: found wedged by {how} after {found:.1f} s, answering again on a new "
                  f"connection after {time.monotonic() - frozen:.1f} s")
            info = cluster.cli_json("run", "kvm1", "host.info")["kvm1"]
            assert info["libvirt"]["available"] is True
        finally:
            cluster.stop()
