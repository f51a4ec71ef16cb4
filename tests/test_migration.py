"""virt migrate: target checks, dry runs, and a failed migration that leaves the VM where it was.

Live migration itself needs two real libvirtd with TLS (tests/integration); libvirt's test driver
cannot migrate, which is exactly what the failure test relies on.
"""

from __future__ import annotations

import datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from saltmarsh.agent.virt.migration import explain

from .cluster import Cluster, wait_until


def _vm_on(cloud: Cluster, host: str, name: str = "mig1") -> None:
    cloud.cli_json("virt", "init", name, "1", "128", "--host", host)
    wait_until(lambda: name in cloud.cli_json("virt", "list")[host])


def test_dry_run_shows_the_plan(cloud: Cluster) -> None:
    _vm_on(cloud, "hv1")
    plan = cloud.cli_json("virt", "migrate", "mig1", "hv2", "--dry-run")
    assert plan["source"] == "hv1" and plan["target"] == "hv2" and plan["target_uri"] == "qemu+tls://hv2/system"
    assert plan["memory_mib"] == 128 and plan["tunnelled"] is False


def test_unfit_targets_are_refused_with_one_clear_line(cloud: Cluster) -> None:
    _vm_on(cloud, "hv1")
    cases = {
        ("mig1", "hv1"): "mig1 already runs on hv1",
        ("mig1", "nowhere"): "no hypervisor 'nowhere' in the inventory",
        ("ghost", "hv2"): "no VM named 'ghost' on any hypervisor",
    }
    cloud.cli("host", "maintenance", "on", "hv3")
    cases[("mig1", "hv3")] = "target hv3 is in maintenance"
    for (vm, target), message in cases.items():
        result = cloud.cli("virt", "migrate", vm, target, check=False)
        assert result.returncode == 1 and message in result.stderr, (vm, target, result.stderr)
    cloud.cli_json("virt", "init", "fat", "1", "1000", "--host", "hv2")
    short = cloud.cli("virt", "migrate", "mig1", "hv2", check=False)
    assert short.returncode == 1 and "target hv2 has 24 MiB free, mig1 needs 128" in short.stderr


def test_without_a_client_certificate_the_failure_says_so_and_the_vm_stays(cloud: Cluster) -> None:
    _vm_on(cloud, "hv1")
    result = cloud.cli("virt", "migrate", "mig1", "hv2", check=False)
    assert result.returncode == 1
    assert "virt.migrate mig1 on hv1 failed: LibvirtFailure: migrate to qemu+tls://hv2/system mig1:" in result.stderr
    assert "this hypervisor has no libvirt client certificate" in result.stderr
    assert cloud.cli_json("virt", "list")["hv1"]["mig1"] == "running"
    assert "mig1" not in cloud.cli_json("virt", "list")["hv2"]


def test_expired_certificate_and_libvirts_own_refusal_are_named(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path / "c", pki={"allowed_names": {"src": ["localhost"]}})
    cluster.start_master()
    try:
        root = tmp_path / "pki-src"
        cluster.start_agents("src", "dst", libvirt_tls=True, pki_root=str(root), tls_names=["localhost"],
                             virt={"vm_dir": str(tmp_path / "vms")})
        wait_until(lambda: (root / "libvirt" / "clientcert.pem").exists())
        wait_until(lambda: len(cluster.cli_json("virt", "host-info")) == 2)
        _vm_on(cluster, "src")
        # A valid certificate: libvirt itself refuses (the test driver cannot migrate), in its own words.
        refused = cluster.cli("virt", "migrate", "mig1", "dst", check=False)
        assert refused.returncode == 1 and "migrate to qemu+tls://dst/system" in refused.stderr
        assert "not supported" in refused.stderr and "no libvirt client certificate" not in refused.stderr
        # An expired client certificate: named before libvirt is even asked.
        (root / "libvirt" / "clientcert.pem").write_bytes(_expired_certificate())
        expired = cluster.cli("virt", "migrate", "mig1", "dst", check=False)
        assert expired.returncode == 1 and "libvirt client certificate expired on" in expired.stderr
        assert cluster.cli_json("virt", "list")["src"]["mig1"] == "running"
    finally:
        cluster.stop()


def test_tls_refusals_are_explained() -> None:
    message = explain("Unable to read TLS confirmation: Input/output error")
    assert message.startswith("TLS refused:") and message.endswith("Input/output error")
    assert explain("internal error: something else") == "internal error: something else"


def _expired_certificate() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "src")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=30))
            .not_valid_after(now - datetime.timedelta(days=1)).sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM)


def test_the_target_qemu_listens_on_the_address_the_source_connects_to() -> None:
    from saltmarsh.master.cloud.migration import listen_address_for, migrate_uri_for

    for uri, address in (("qemu+tls://127.0.0.2/system", "127.0.0.2"), ("qemu+tls://hv2.example:16515/system",
                                                                           "hv2.example")):
        assert listen_address_for(uri) == address and migrate_uri_for(uri) == f"tcp://{address}"
