"""Two real libvirtds on one machine (tests/twohosts.py): both answer over libvirt TLS, a running VM live-migrates
peer-to-peer over TLS from hv-a to hv-b and back (native and tunnelled), and foreign or revoked client
certificates are refused."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import libvirt
import pytest

from ..realvirt import TEST_PREFIX, blank_qcow2, make_image_dir, remove_image_dir
from ..twohosts import (
    HV_A_ADDRESS,
    HV_A_UUID,
    HV_B_ADDRESS,
    HV_B_HOSTNAME,
    HV_B_UUID,
    Hypervisor,
    ThrowawayCa,
    TwoHypervisors,
)
from .conftest import two_hypervisors_running

pytestmark = pytest.mark.integration

MIGRATION_TIMEOUT = 60.0  # one migration takes ~2-3 s
BASE_FLAGS = (libvirt.VIR_MIGRATE_LIVE | libvirt.VIR_MIGRATE_PEER2PEER | libvirt.VIR_MIGRATE_PERSIST_DEST
              | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE | libvirt.VIR_MIGRATE_UNSAFE)  # UNSAFE: disk cache isn't 'none'

T = TypeVar("T")


def domain_xml(name: str, domain_type: str, disk: Path) -> str:
    """128 MiB, 1 vCPU, a blank qcow2 disk, no NIC, no graphics (the hosts share one network namespace)."""
    return f"""
<domain type='{domain_type}'>
  <name>{name}</name>
  <memory unit='MiB'>128</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64'>hvm</type><boot dev='hd'/></os>
  <features><acpi/></features>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='{disk}'/>
      <target dev='vda' bus='virtio'/>
    </disk>
  </devices>
</domain>"""


def bounded(what: str, call: Callable[[], T], timeout: float, on_timeout: Callable[[], None] | None = None) -> T:
    """``call()`` in a thread, failing the test (after ``on_timeout``) if it takes over ``timeout`` s."""
    result: list[T] = []
    error: list[BaseException] = []

    def run() -> None:
        try:
            result.append(call())
        except BaseException as e:
            error.append(e)

    t = threading.Thread(target=run, name=what, daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        if on_timeout is not None:
            on_timeout()
        pytest.fail(f"{what} took over {timeout:.0f} s")
    if error:
        raise error[0]
    return result[0]


def migrate(hv: TwoHypervisors, src: Hypervisor, dst: Hypervisor, name: str, tunnelled: bool) -> float:
    """Live-migrate ``name`` src -> dst peer-to-peer over TLS; check where it runs; the seconds it took."""
    flags = BASE_FLAGS | (libvirt.VIR_MIGRATE_TUNNELLED if tunnelled else 0)
    # Native: QEMU streams straight to dst's QEMU on loopback; without a URI dst would offer its hostname.
    params = {} if tunnelled else {libvirt.VIR_MIGRATE_PARAM_URI: dst.migration_uri,
                                   libvirt.VIR_MIGRATE_PARAM_LISTEN_ADDRESS: dst.address}
    dest_uri = hv.dest_uri(src, dst)  # qemu+tls://<dst>/system?pkipath=<src's client certs>
    old_pid = src.qemu_pid(name)
    assert old_pid is not None, f"{name} has no QEMU on {src.name}"
    with src.connection() as sconn:
        dom = sconn.lookupByName(name)

        def abort() -> None:
            with src.connection() as c:
                c.lookupByName(name).abortJob()

        t0 = time.monotonic()
        bounded(f"migrating {name} {src.name} -> {dst.name}", lambda: dom.migrateToURI3(dest_uri, params, flags),
                MIGRATION_TIMEOUT, abort)
        took = time.monotonic() - t0
    with dst.connection() as dconn:
        moved = dconn.lookupByName(name)
        assert moved.state()[0] == libvirt.VIR_DOMAIN_RUNNING, moved.state()
        assert moved.isPersistent()
    with src.connection() as sconn, pytest.raises(libvirt.libvirtError) as gone:
        sconn.lookupByName(name)
    assert gone.value.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN
    new_pid = dst.qemu_pid(name)
    assert new_pid is not None and new_pid != old_pid
    assert src.qemu_pid(name) is None
    deadline = time.monotonic() + 10
    while Path(f"/proc/{old_pid}").exists() and time.monotonic() < deadline:  # reaped by its libvirtd
        time.sleep(0.05)
    assert not Path(f"/proc/{old_pid}/exe").exists(), f"the source QEMU (pid {old_pid}) still runs"
    return took


def test_two_hosts_answer_over_tls_and_live_migrate_both_ways(two_hypervisors: TwoHypervisors) -> None:
    hv = two_hypervisors
    a, b = hv.a, hv.b
    print(f"\nstarted in {hv.timings['start']:.2f} s (hv-a {hv.timings['hv-a']:.2f} s, hv-b {hv.timings['hv-b']:.2f} s,"
          f" {a.domain_type}/{b.domain_type})")
    assert a.domain_type == b.domain_type

    # Each host answers over TLS (with either host's client certificate) and is a different host.
    expected = {a: (socket.gethostname(), HV_A_UUID), b: (HV_B_HOSTNAME, HV_B_UUID)}
    for host in hv.hosts:
        for creds in hv.hosts:
            conn = libvirt.open(host.tls_uri(creds.client_pkipath))
            try:
                assert conn.getHostname() == expected[host][0]
                assert f"<uuid>{expected[host][1]}</uuid>" in conn.getCapabilities()
            finally:
                conn.close()
        with host.connection() as conn:  # and locally
            assert conn.getHostname() == expected[host][0]
    assert expected[a][0] != expected[b][0]
    assert a.tls_uri() == f"qemu+tls://{HV_A_ADDRESS}/system" and b.tls_uri() == f"qemu+tls://{HV_B_ADDRESS}/system"

    image_dir = make_image_dir()  # /var/lib/libvirt/images/...: the same directory for both hosts
    name = f"{TEST_PREFIX}mig"
    try:
        disk = blank_qcow2(image_dir / "disk.qcow2", "64M")
        with a.connection() as conn:
            dom = conn.defineXML(domain_xml(name, a.domain_type, disk))
            dom.create()
            assert dom.state()[0] == libvirt.VIR_DOMAIN_RUNNING
        timings = {}
        for tunnelled in (False, True):
            kind = "tunnelled" if tunnelled else "native"
            timings[f"{kind} hv-a -> hv-b"] = migrate(hv, a, b, name, tunnelled)
            timings[f"{kind} hv-b -> hv-a"] = migrate(hv, b, a, name, tunnelled)
        print("migrations: " + ", ".join(f"{k} {v:.2f} s" for k, v in timings.items()))
        with a.connection() as conn:
            conn.lookupByName(name).destroy()
    finally:
        remove_image_dir(image_dir)  # the fixture's stop() destroys and undefines whatever is left


def _client_dir(path: Path, ca_bundle: bytes, cert_key: tuple[bytes, bytes, int]) -> Path:
    """A flat pkipath directory: cacert.pem (maybe several CAs), clientcert.pem, clientkey.pem."""
    path.mkdir(mode=0o700)
    (path / "cacert.pem").write_bytes(ca_bundle)
    (path / "clientcert.pem").write_bytes(cert_key[0])
    (path / "clientkey.pem").write_bytes(cert_key[1])
    return path


def _refused(host: Hypervisor, uri: str, server_says: str) -> str:
    """Opening ``uri`` fails; the server's log says ``server_says`` about it. The client's error message."""
    offset = host.log_size()
    with pytest.raises(libvirt.libvirtError) as e:
        libvirt.open(uri).close()
    deadline = time.monotonic() + 5
    while server_says not in host.log_since(offset) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server_says in host.log_since(offset), host.log_since(offset)
    assert "authentication failed: Failed to verify peer's certificate" in host.log_since(offset)
    return str(e.value)


# What the client sees when the *server* refuses its certificate: the server just closes the connection.
SERVER_REFUSED = "Unable to read TLS confirmation: Input/output error"


def test_tls_refuses_foreign_and_revoked_client_certificates(libvirt_ca: ThrowawayCa, tmp_path: Path) -> None:
    revoked = libvirt_ca.issue("revoked client", "client", [])
    libvirt_ca.revoke(revoked[2])
    crl = tmp_path / "cacrl.pem"
    crl.write_bytes(libvirt_ca.crl_pem())
    pki_a = libvirt_ca.host_pki(tmp_path / "pki-hv-a", "hv-a", ["localhost", HV_A_ADDRESS])
    pki_b = libvirt_ca.host_pki(tmp_path / "pki-hv-b", "hv-b", [HV_B_HOSTNAME, HV_B_ADDRESS])
    real_ca = libvirt_ca.cert_pem
    other_ca = ThrowawayCa("another CA")
    impostor_ca = ThrowawayCa()  # the same subject name as libvirt_ca, but its own key
    assert impostor_ca.cert.subject == libvirt_ca.cert.subject
    # These clients trust the real CA too (so they accept the server), but their certificates are foreign.
    other = _client_dir(tmp_path / "other", real_ca + other_ca.cert_pem, other_ca.issue("c", "client", []))
    impostor = _client_dir(tmp_path / "impostor", real_ca + impostor_ca.cert_pem,
                           impostor_ca.issue("c", "client", []))
    banned = _client_dir(tmp_path / "revoked", real_ca, revoked)
    # This one trusts only another CA: the *client* refuses the server.
    distrust = _client_dir(tmp_path / "distrust", other_ca.cert_pem, other_ca.issue("c", "client", []))
    with two_hypervisors_running(pki_a.root, pki_b.root, crl_a=crl, crl_b=crl) as hv:
        for host in hv.hosts:
            libvirt.open(host.tls_uri(host.client_pkipath)).close()  # a good certificate still works
            # GnuTLS sends no certificate whose issuer the server did not name as acceptable:
            assert _refused(host, host.tls_uri(other),
                            "Unable to verify TLS peer: No certificate was found.") == SERVER_REFUSED
            assert _refused(host, host.tls_uri(impostor),
                            "Certificate failed validation: The certificate hasn't got a known issuer."
                            ) == SERVER_REFUSED
            assert _refused(host, host.tls_uri(banned),
                            "Certificate failed validation: The certificate has been revoked.") == SERVER_REFUSED
            with pytest.raises(libvirt.libvirtError, match="authentication failed: Failed to verify peer's cert"):
                libvirt.open(host.tls_uri(distrust)).close()

        # A peer-to-peer migration whose source presents a foreign certificate fails the same way, and the
        # domain keeps running where it was.
        image_dir = make_image_dir()
        name = f"{TEST_PREFIX}refused"
        try:
            disk = blank_qcow2(image_dir / "disk.qcow2", "64M")
            with hv.a.connection() as conn:
                dom = conn.defineXML(domain_xml(name, hv.a.domain_type, disk))
                dom.create()
                params = {libvirt.VIR_MIGRATE_PARAM_URI: hv.b.migration_uri,
                          libvirt.VIR_MIGRATE_PARAM_LISTEN_ADDRESS: hv.b.address}
                with pytest.raises(libvirt.libvirtError) as e:
                    bounded("a refused migration", lambda: dom.migrateToURI3(hv.b.tls_uri(impostor), params,
                                                                             BASE_FLAGS), MIGRATION_TIMEOUT)
                assert str(e.value) == SERVER_REFUSED
                assert dom.state()[0] == libvirt.VIR_DOMAIN_RUNNING and dom.isPersistent()
            with hv.b.connection() as conn:
                assert conn.listAllDomains(0) == []
        finally:
            remove_image_dir(image_dir)
