"""Live migration through saltmarsh between two real libvirtd, over TLS certificates from the master's CA."""

from __future__ import annotations

from pathlib import Path

import pytest

from ..cluster import Cluster, EventRecorder, wait_until
from ..realvirt import make_image_dir, remove_image_dir
from ..twohosts import HV_A_ADDRESS, HV_B_ADDRESS, HV_B_HOSTNAME
from .conftest import RealVirt, two_hypervisors_running

pytestmark = pytest.mark.integration

NAMES = {"hva": ["localhost", HV_A_ADDRESS], "hvb": [HV_B_HOSTNAME, HV_B_ADDRESS]}


def test_live_migration_both_ways_with_certificates_from_the_master(real_libvirtd: RealVirt,
                                                                     tmp_path: Path) -> None:
    cluster = Cluster(tmp_path / "cluster", pki={"allowed_names": NAMES},
                      virt={"migration_uris": {"hva": f"qemu+tls://{HV_A_ADDRESS}/system",
                                               "hvb": f"qemu+tls://{HV_B_ADDRESS}/system"},
                            "migration_unsafe": True})
    cluster.start_master()
    images = make_image_dir()
    roots = {host: tmp_path / f"pki-{host}" for host in NAMES}
    try:
        # 1. Each agent makes its own keys and gets them signed through the CSR flow.
        for host in NAMES:
            cluster.start_agent(host, libvirt_tls=True, pki_root=str(roots[host]), tls_names=NAMES[host],
                                libvirt_uri="test:///default")
        cluster.accept(*NAMES)
        for host in NAMES:
            wait_until(lambda h=host: (roots[h] / "libvirt" / "private" / "clientkey.pem").exists())
            cluster.agents[host].stop()
        # 2. Both libvirtd serve TLS with those certificates (and the CA's CRL).
        with two_hypervisors_running(roots["hva"], roots["hvb"], crl_a=roots["hva"] / "CA" / "cacrl.pem",
                                     crl_b=roots["hvb"] / "CA" / "cacrl.pem") as two:
            for host, hv in (("hva", two.a), ("hvb", two.b)):
                cluster.start_agent(host, libvirt_tls=True, pki_root=str(roots[host]), tls_names=NAMES[host],
                                    libvirt_uri=hv.uri, virt={"vm_dir": str(images / "vms"),
                                                              "nic_profiles": {"default": []}})
            cluster.wait_answering(*NAMES)
            wait_until(lambda: all(h.get("libvirt") for h in cluster.cli_json("virt", "host-info").values())
                       and len(cluster.cli_json("virt", "host-info")) == 2, timeout=30, what="both hypervisors")
            vm = f"{real_libvirtd.prefix}mig"
            cluster.cli_json("virt", "init", vm, "1", "128", "--host", "hva", "--timeout", "120")
            recorder = EventRecorder(cluster, "saltmarsh/virt/", idle_timeout=20)
            recorder.ready("hva", "saltmarsh/virt/hva/probe")

            there = cluster.cli("virt", "migrate", vm, "hvb", "--timeout", "120")
            assert f"migrated {vm} from hva to hvb" in there.stdout and "confirmed" in there.stdout
            wait_until(lambda: (vms := cluster.cli_json("virt", "list")).get("hvb", {}).get(vm) == "running"
                       and vm not in vms.get("hva", {}), what="the inventory to name the new host only")

            back = cluster.cli_json("virt", "migrate", vm, "hva", "--timeout", "120")
            assert back["source"] == "hvb" and back["target"] == "hva"
            assert set(back["confirmed"]) == {"source", "target"}
            wait_until(lambda: (vms := cluster.cli_json("virt", "list")).get("hva", {}).get(vm) == "running"
                       and vm not in vms.get("hvb", {}), what="the inventory to name hva again")
            cluster.cli("virt", "purge", vm)
            recorder.close()
            progress = [e for e in recorder.events if e.tag.endswith(f"/migration/{vm}/progress")]
            assert progress, "no migration progress event"
            assert any(e.tag == f"saltmarsh/virt/hvb/domain/{vm}/resumed" or
                       e.tag == f"saltmarsh/virt/hvb/domain/{vm}/started" for e in recorder.events)
    finally:
        cluster.stop()
        remove_image_dir(images)
