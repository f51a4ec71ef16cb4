"""libvirt TLS certificates: CSR flow over the request channel, libvirt's file layout, refusals, revocation."""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from saltmarsh.pki.ca import CertificateAuthority
from saltmarsh.pki.ca_settings import CaSettings
from saltmarsh.pki.csr import build_csr, new_key
from saltmarsh.pki.errors import CsrRefused

from .cluster import Cluster, EventRecorder, wait_until

LAYOUT = ["CA/cacert.pem", "CA/cacrl.pem", "libvirt/servercert.pem", "libvirt/private/serverkey.pem",
          "libvirt/clientcert.pem", "libvirt/private/clientkey.pem"]


@pytest.fixture
def pki_cluster(tmp_path: Path) -> Any:
    cluster = Cluster(tmp_path / "c", pki={"allowed_names": {"hv1": ["localhost", "127.0.0.1"]}})
    cluster.start_master()
    yield cluster
    cluster.stop()


def _load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_agent_gets_its_certificates_at_start_in_libvirts_layout(pki_cluster: Cluster, tmp_path: Path) -> None:
    recorder = EventRecorder(pki_cluster, "saltmarsh/")
    root = tmp_path / "pki-hv1"
    pki_cluster.start_agents("hv1", libvirt_tls=True, pki_root=str(root), tls_names=["localhost", "127.0.0.1"])
    wait_until(lambda: all((root / f).exists() for f in LAYOUT), what="libvirt's TLS files")
    for private in ("libvirt/private/serverkey.pem", "libvirt/private/clientkey.pem"):
        assert stat.S_IMODE((root / private).stat().st_mode) == 0o600
    ca, server, client = (_load(root / f) for f in ("CA/cacert.pem", "libvirt/servercert.pem",
                                                      "libvirt/clientcert.pem"))
    assert server.issuer == ca.subject and client.issuer == ca.subject
    sans = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(sans.get_values_for_type(x509.DNSName)) == {"hv1", "localhost"}
    assert [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert ExtendedKeyUsageOID.SERVER_AUTH in server.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.CLIENT_AUTH in client.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    # The agent's private keys never left it: the master holds only its own keys and the CA's.
    master_keys = [p.name for p in (pki_cluster.master_dir / "state").rglob("*.key")]
    assert sorted(master_keys) == ["ca.key", "master.key", "session.key"]
    status = pki_cluster.cli_json("pki", "status")
    assert {(c["agent"], c["usage"]) for c in status["certificates"]} == {("hv1", "server"), ("hv1", "client")}
    # virt.keys issues again: a renewal, with its own event.
    renewed = pki_cluster.cli_json("run", "hv1", "virt.keys")["hv1"]
    assert renewed["names"] == ["hv1", "localhost", "127.0.0.1"]
    wait_until(lambda: "saltmarsh/pki/hv1/cert/renewed" in recorder.tags())
    assert "saltmarsh/pki/hv1/cert/issued" in recorder.tags()


def test_csr_for_a_name_the_agent_does_not_own_is_refused(pki_cluster: Cluster, tmp_path: Path) -> None:
    pki_cluster.start_agents("hv2", pki_root=str(tmp_path / "pki-hv2"), tls_names=["hv1", "127.0.0.1"])
    result = pki_cluster.cli("run", "hv2", "virt.keys", "--json", check=False)
    error = json.loads(result.stdout)["hv2"]["error"]
    assert result.returncode == 1 and error["type"] == "CertificateRefused"
    assert "asks for 'hv1', '127.0.0.1', which it may not use" in error["message"]
    assert "refused certificate request: CSR from hv2 asks for 'hv1'" in pki_cluster.master.log()
    assert not (tmp_path / "pki-hv2" / "libvirt").exists()


def test_deleting_a_key_revokes_its_certificates(pki_cluster: Cluster, tmp_path: Path) -> None:
    root = tmp_path / "pki-hv1"
    pki_cluster.start_agents("hv1", "hv3", libvirt_tls=True, pki_root=str(root), tls_names=["localhost"],
                             tls_check_seconds=0.5)
    wait_until(lambda: (root / "libvirt/servercert.pem").exists())
    serial = _load(root / "libvirt/servercert.pem").serial_number
    pki_cluster.cli("key", "delete", "hv3")  # hv3 never asked for certificates: nothing to revoke
    pki_cluster.cli("key", "reject", "hv1")
    status = pki_cluster.cli_json("pki", "status")["certificates"]
    assert all(c["revoked"] for c in status if c["agent"] == "hv1")
    ca_dir = pki_cluster.master_dir / "state" / "pki" / "ca"
    ca = CertificateAuthority(ca_dir, CaSettings())
    crl = x509.load_pem_x509_crl(ca.crl_pem())
    assert crl.get_revoked_certificate_by_serial_number(serial) is not None
    assert "revoked 2 libvirt certificates of hv1" in pki_cluster.master.log()


def test_ca_refuses_malformed_and_forged_csrs(tmp_path: Path) -> None:
    ca = CertificateAuthority(tmp_path / "ca", CaSettings())
    assert stat.S_IMODE((tmp_path / "ca" / "ca.key").stat().st_mode) == 0o600
    with pytest.raises(CsrRefused, match="malformed CSR"):
        ca.issue(b"-----BEGIN CERTIFICATE REQUEST-----\ngarbage\n-----END CERTIFICATE REQUEST-----\n", "hv1",
                 "server", {"hv1"})
    good = build_csr(new_key(), ["hv1"])
    forged = good.replace(good.splitlines()[3], good.splitlines()[3][:-4] + b"AAAA")
    with pytest.raises(CsrRefused):
        ca.issue(forged, "hv1", "server", {"hv1"})
    assert ca.issued() == []


def test_renewal_is_due_after_two_thirds_of_the_lifetime(tmp_path: Path) -> None:
    import datetime

    from saltmarsh.agent.tls import LibvirtTls

    ca = CertificateAuthority(tmp_path / "ca", CaSettings())
    tls = LibvirtTls(tmp_path / "pki", ["hv1"], request=lambda message, timeout: None,  # type: ignore[arg-type,return-value]
                     renew_fraction=2 / 3)
    assert tls.renewal_due()  # nothing issued yet
    cert = ca.issue(build_csr(new_key(), ["hv1"]), "hv1", "server", {"hv1"}, days=3)
    tls.files["server_cert"].parent.mkdir(parents=True)
    tls.files["server_cert"].write_bytes(cert)
    start = _load(tls.files["server_cert"]).not_valid_before_utc
    assert not tls.renewal_due(start + datetime.timedelta(days=1.9))
    assert tls.renewal_due(start + datetime.timedelta(days=2.1))


def test_revoked_then_reaccepted_agent_gets_new_certificates(pki_cluster: Cluster, tmp_path: Path) -> None:
    root = tmp_path / "pki-hv1"
    pki_cluster.start_agents("hv1", libvirt_tls=True, pki_root=str(root), tls_names=["localhost"],
                             tls_check_seconds=0.5)
    wait_until(lambda: (root / "libvirt/servercert.pem").exists())
    first = _load(root / "libvirt/servercert.pem").serial_number
    pki_cluster.cli("key", "reject", "hv1")
    pki_cluster.cli("key", "accept", "hv1")
    wait_until(lambda: _load(root / "libvirt/servercert.pem").serial_number != first, timeout=20,
               what="new certificates after the revocation")
    crl = x509.load_pem_x509_crl((root / "CA/cacrl.pem").read_bytes())
    assert crl.get_revoked_certificate_by_serial_number(first) is not None
    assert crl.get_revoked_certificate_by_serial_number(_load(root / "libvirt/servercert.pem").serial_number) is None
    assert "this host's libvirt certificates are revoked; requesting new ones" in pki_cluster.agents["hv1"].log()


def test_the_libvirtd_admin_uri_follows_the_libvirt_uri() -> None:
    from saltmarsh.agent.tls import admin_uri_for

    assert admin_uri_for("qemu:///system") == "libvirtd:///system"
    assert (admin_uri_for("qemu+unix:///system?socket=/x/run/libvirt-sock")
            == "libvirtd:///system?socket=/x/run/libvirt-admin-sock")
    # Nothing to reload: libvirt's test driver, or a libvirtd on another host.
    assert admin_uri_for("test:///default") == "" and admin_uri_for("qemu+tls://hv2/system") == ""


def test_a_failed_libvirtd_reload_is_logged_not_raised(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    import logging

    from saltmarsh.agent.tls import LibvirtTls

    socket = tmp_path / "no-such-admin-sock"
    tls = LibvirtTls(tmp_path / "pki", ["hv1"], request=lambda message, timeout: None,  # type: ignore[arg-type,return-value]
                     renew_fraction=2 / 3, admin_uri=f"libvirtd:///system?socket={socket}")
    with caplog.at_level(logging.WARNING, logger="saltmarsh.agent.tls"):
        assert tls.reload_libvirtd() is False  # the real virt-admin, against a daemon that is not there
    assert "libvirtd did not reload its TLS files" in caplog.text and str(socket) in caplog.text


def test_pki_init_makes_the_ca_without_a_master_and_keeps_it(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path, pki={"ca_common_name": "lab CA", "ca_days": 30})  # never started
    first = cluster.cli("pki", "init").stdout
    assert first.startswith("CA CN=lab CA,O=saltmarsh in "), first
    ca_dir = cluster.master_dir / "state" / "pki" / "ca"
    key = next(p for p in ca_dir.iterdir() if p.suffix == ".key")
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE(ca_dir.stat().st_mode) == 0o700
    fingerprint = first.splitlines()[1]
    assert fingerprint.startswith("sha256 ") and len(fingerprint.split()[1]) == 95  # 32 bytes as aa:bb:…
    assert cluster.cli("pki", "init").stdout == first  # the same CA, not a new one


def test_the_crl_is_the_same_bytes_until_a_revocation_changes_it(tmp_path: Path) -> None:
    ca = CertificateAuthority(tmp_path / "ca", CaSettings())
    first = ca.crl_pem()
    assert ca.crl_pem() == first  # fetched again: nothing a host would see as changed
    assert CertificateAuthority(tmp_path / "ca", CaSettings()).crl_pem() == first  # a master restart too
    cert = x509.load_pem_x509_certificate(ca.issue(build_csr(new_key(), ["hv1"]), "hv1", "server", {"hv1"}))
    assert ca.crl_pem() == first  # issuing revokes nothing
    assert ca.revoke_agent("hv1") == [cert.serial_number]
    changed = ca.crl_pem()
    assert changed != first
    assert x509.load_pem_x509_crl(changed).get_revoked_certificate_by_serial_number(cert.serial_number) is not None
    assert ca.crl_pem() == changed
    (tmp_path / "ca" / "crl.pem").write_bytes(b"not a crl")  # a damaged file is signed again, not served
    assert x509.load_pem_x509_crl(ca.crl_pem()).get_revoked_certificate_by_serial_number(cert.serial_number)
