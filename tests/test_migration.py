"""virt migrate: target checks, dry runs, and a failed migration that leaves the VM where it was.

Live migration itself needs two real libvirtd with TLS (tests/integration); libvirt's test driver
cannot migrate, which is exactly what the failure test relies on.
"""

from __future__ import annotations

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


def test_failed_migration_names_libvirts_reason_and_leaves_the_vm(cloud: Cluster) -> None:
    _vm_on(cloud, "hv1")
    result = cloud.cli("virt", "migrate", "mig1", "hv2", check=False)
    assert result.returncode == 1
    assert "virt.migrate mig1 on hv1 failed: LibvirtFailure: migrate to qemu+tls://hv2/system mig1:" in result.stderr
    assert cloud.cli_json("virt", "list")["hv1"]["mig1"] == "running"
    assert "mig1" not in cloud.cli_json("virt", "list")["hv2"]
