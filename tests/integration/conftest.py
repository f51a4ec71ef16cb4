"""Fixtures for integration tests against a real system libvirtd + QEMU (see tests/realvirt.py).

Tests here skip only where neither root nor /dev/kvm is available; any other failure to start libvirtd
is a test error.

``two_hypervisors`` (tests/twohosts.py) gives two TLS-listening libvirtds instead. It replaces the plain
system libvirtd for the duration of its test: the session-wide ``real_libvirtd`` daemon, if it started one,
is stopped first and started again afterwards, so the two kinds never run at the same time. If a libvirtd that
the tests did not start is running, ``two_hypervisors`` tests skip (like test_libvirtd_restart).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from ..cluster import Cluster, wait_until
from ..netns_bridge import NetnsBridge, NetnsCluster
from ..realvirt import IMAGES_DIR, TEST_PREFIX, RealLibvirtd, blank_qcow2, make_image_dir, remove_image_dir
from ..twohosts import (
    HV_A_ADDRESS,
    HV_B_ADDRESS,
    HV_B_HOSTNAME,
    Hypervisor,
    OtherLibvirtdRunning,
    ThrowawayCa,
    TwoHypervisors,
    plain_libvirtd_paused,
)
from .guest_image import build_guest_image

if TYPE_CHECKING:
    import libvirt


class RealVirt:
    """What the ``real_libvirtd`` fixture yields."""

    def __init__(self, daemon: RealLibvirtd) -> None:
        self.daemon = daemon
        self.uri = daemon.uri  # "qemu:///system"
        self.domain_type = daemon.domain_type  # "kvm" when QEMU can use /dev/kvm, else "qemu" (TCG)
        self.prefix = TEST_PREFIX  # name test domains with it: whatever is left is removed at the end
        self._image_dirs: list[Path] = []

    def open(self) -> libvirt.virConnect:
        """A new connection; the caller closes it."""
        return self.daemon.open()

    def connection(self) -> contextlib.AbstractContextManager[libvirt.virConnect]:
        """A context manager yielding a connection, closed on exit."""
        return self.daemon.connection()

    def image_dir(self) -> Path:
        """A fresh directory under /var/lib/libvirt/images readable by QEMU; removed at session end."""
        path = make_image_dir()
        self._image_dirs.append(path)
        return path

    @staticmethod
    def blank_qcow2(path: Path | str, size: str = "64M") -> Path:
        return blank_qcow2(path, size)

    def cleanup(self) -> None:
        self.daemon.remove_test_domains(self.prefix)
        for path in self._image_dirs:
            remove_image_dir(path)
        self._image_dirs.clear()


@pytest.fixture(scope="session")
def real_libvirtd() -> Iterator[RealVirt]:
    """A real libvirtd at qemu:///system, started for the session unless one was already running."""
    reason = RealLibvirtd.skip_reason()
    if reason:
        pytest.skip(reason)
    daemon = RealLibvirtd().start()  # LibvirtdError here is a test error, not a skip
    rv = RealVirt(daemon)
    try:
        yield rv
    finally:
        try:
            rv.cleanup()
        finally:
            daemon.stop()


@pytest.fixture(scope="session")
def guest_image() -> Path:
    """A file root holding ``debian-12.qcow2``, built from this tree once per session (see guest_image.py)."""
    return build_guest_image()


@pytest.fixture
def image_dir(real_libvirtd: RealVirt) -> Iterator[Path]:
    """A per-test directory for disk images that QEMU can read; removed after the test."""
    path = make_image_dir()
    try:
        yield path
    finally:
        remove_image_dir(path)


@pytest.fixture
def libvirt_ca() -> ThrowawayCa:
    """A throwaway CA (ECDSA P-256, like pki/ca.py) for libvirt TLS certificates."""
    return ThrowawayCa()


@contextlib.contextmanager
def two_hypervisors_running(pki_a: Path, pki_b: Path, **kwargs: Any) -> Iterator[TwoHypervisors]:
    """TwoHypervisors started with the tests' plain libvirtd paused; skips if a foreign libvirtd runs."""
    reason = RealLibvirtd.skip_reason()
    if reason:
        pytest.skip(reason)
    with plain_libvirtd_paused():
        hv = TwoHypervisors(pki_a, pki_b, **kwargs)
        try:
            hv.start()  # LibvirtdError here is a test error, not a skip
        except OtherLibvirtdRunning as e:
            pytest.skip(str(e))
        try:
            yield hv
        finally:
            hv.stop()


@pytest.fixture
def two_hypervisors(libvirt_ca: ThrowawayCa, tmp_path: Path) -> Iterator[TwoHypervisors]:
    """hv-a (qemu:///system, TLS qemu+tls://127.0.0.1/system) and hv-b (own namespace, qemu+tls://127.0.0.2/system),
    with certificates from ``libvirt_ca``; everything is stopped and removed after the test."""
    pki_a = libvirt_ca.host_pki(tmp_path / "pki-hv-a", "hv-a", ["localhost", HV_A_ADDRESS])
    pki_b = libvirt_ca.host_pki(tmp_path / "pki-hv-b", "hv-b", [HV_B_HOSTNAME, HV_B_ADDRESS])
    with two_hypervisors_running(pki_a.root, pki_b.root) as hv:
        yield hv


# Certificate names of the two saltmarsh hypervisors "hva" (hv-a, 127.0.0.1) and "hvb" (hv-b, 127.0.0.2).
SALTMARSH_NAMES = {"hva": ["localhost", HV_A_ADDRESS], "hvb": [HV_B_HOSTNAME, HV_B_ADDRESS]}


class SaltmarshOnTwoHosts:
    """A master and agents "hva" and "hvb" driving the two real libvirtds, with certificates from the master's CA."""

    def __init__(self, cluster: Cluster, two: TwoHypervisors, images: Path, roots: dict[str, Path]) -> None:
        self.cluster, self.two, self.images, self.roots = cluster, two, images, roots

    def hypervisor(self, agent: str) -> Hypervisor:
        """The libvirtd that agent drives."""
        return self.two.a if agent == "hva" else self.two.b

    def run(self, agent: str, function: str, *args: str, timeout: float = 60) -> Any:
        """Run an agent function and return its result (the CLI's ``run --json``)."""
        out = self.cluster.cli_json("run", "-L", agent, function, *args, "--timeout", str(timeout))
        return out[agent]


@contextlib.contextmanager
def saltmarsh_on_two_hosts(tmp_path: Path, *, etc_pki: bool = False, agent_settings: dict[str, object] | None = None,
                           vm_dirs: dict[str, Path] | None = None, virt_settings: dict[str, object] | None = None,
                           master_settings: dict[str, object] | None = None,
                           bridge: NetnsBridge | None = None) -> Iterator[SaltmarshOnTwoHosts]:
    """Master + agents hva/hvb on TwoHypervisors, each agent's libvirt certificates made by the CSR flow.

    The agents first get their certificates while driving libvirt's test driver (the libvirtds need them to
    start), then run against the real daemons; VM disks go to ``vm_dirs[agent]``, else to a directory both
    hosts share. With ``etc_pki`` each libvirtd sees its agent's ``pki_root`` at
    /etc/pki (see TwoHypervisors), so that the agent's ``virt-admin server-update-tls`` reloads take effect.
    ``virt_settings`` are merged over the agents' ``virt:`` section, ``master_settings`` over master.yaml.
    With ``bridge`` every daemon (master, agents, both libvirtds) runs inside its network namespace.
    """
    settings = {"pki": {"allowed_names": SALTMARSH_NAMES},
                "virt": {"migration_uris": {"hva": f"qemu+tls://{HV_A_ADDRESS}/system",
                                            "hvb": f"qemu+tls://{HV_B_ADDRESS}/system"},
                         "migration_unsafe": True}, **(master_settings or {})}
    cluster = (NetnsCluster(tmp_path / "cluster", bridge, **settings) if bridge
               else Cluster(tmp_path / "cluster", **settings))
    cluster.start_master()
    images = make_image_dir()
    roots = {host: tmp_path / f"pki-{host}" for host in SALTMARSH_NAMES}
    try:
        for host in SALTMARSH_NAMES:
            cluster.start_agent(host, libvirt_tls=True, pki_root=str(roots[host]), tls_names=SALTMARSH_NAMES[host],
                                libvirt_uri="test:///default")
        cluster.accept(*SALTMARSH_NAMES)
        for host in SALTMARSH_NAMES:
            wait_until(lambda h=host: (roots[h] / "libvirt" / "pkipath" / "cacrl.pem").exists())
            cluster.agents[host].stop()
        crls = {} if etc_pki else {"crl_a": roots["hva"] / "CA" / "cacrl.pem",
                                   "crl_b": roots["hvb"] / "CA" / "cacrl.pem"}
        with two_hypervisors_running(roots["hva"], roots["hvb"], etc_pki=etc_pki,
                                     launcher=bridge.exec_prefix if bridge else (), **crls) as two:
            for host, hv in (("hva", two.a), ("hvb", two.b)):
                cluster.start_agent(host, libvirt_tls=True, pki_root=str(roots[host]), tls_names=SALTMARSH_NAMES[host],
                                    libvirt_uri=hv.uri, virt={"vm_dir": str((vm_dirs or {}).get(host, images / "vms")),
                                                              "image_dirs": [str(IMAGES_DIR)],
                                                              "nic_profiles": {"default": []},
                                                              **(virt_settings or {})},
                                    **(agent_settings or {}))
            cluster.wait_answering(*SALTMARSH_NAMES)
            wait_until(lambda: all(h.get("libvirt") for h in cluster.cli_json("virt", "host-info").values())
                       and len(cluster.cli_json("virt", "host-info")) == 2, timeout=30, what="both hypervisors")
            yield SaltmarshOnTwoHosts(cluster, two, images, roots)
    finally:
        cluster.stop()
        remove_image_dir(images)
