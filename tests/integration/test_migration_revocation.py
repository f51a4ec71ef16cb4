"""A revoked libvirt certificate makes a real migration fail with one clear line, and the VM stays where it was.

Both libvirtds use libvirt's default certificate locations (``etc_pki``), so the agents' reloads
(``virt-admin server-update-tls`` after a CRL change or new certificates) reach them. Revocation is the
master's: rejecting an agent's key revokes its certificates. The agent is accepted again at once, but keeps
its revoked certificates until its next check (an hour away here), which is the window the test uses.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ..cluster import wait_until
from ..twohosts import HV_A_ADDRESS, HV_B_ADDRESS
from .conftest import RealVirt, SaltmarshOnTwoHosts, saltmarsh_on_two_hosts

pytestmark = pytest.mark.integration


def _revoke(env: SaltmarshOnTwoHosts, agent: str) -> None:
    """Reject the agent's key (the master revokes its certificates) and accept it again."""
    before = _revoked_serials(env, agent)
    env.cluster.cli("key", "reject", agent)
    wait_until(lambda: _revoked_serials(env, agent) > before, what=f"{agent}'s certificates to be revoked")
    env.cluster.cli("key", "accept", agent)
    env.cluster.wait_answering(agent)


def _revoked_serials(env: SaltmarshOnTwoHosts, agent: str) -> set[str]:
    certificates = env.cluster.cli_json("pki", "status")["certificates"]
    return {c["serial"] for c in certificates if c["agent"] == agent and c["revoked"]}


def _stays_on(env: SaltmarshOnTwoHosts, vm: str, agent: str) -> None:
    """The VM still runs on its source: in the inventory and in that libvirtd, and not on the other."""
    with env.hypervisor(agent).connection() as conn:
        assert conn.lookupByName(vm).isActive()
    other = "hvb" if agent == "hva" else "hva"
    with env.hypervisor(other).connection() as conn:
        assert vm not in [d.name() for d in conn.listAllDomains()]
    assert env.cluster.cli_json("virt", "list")[agent][vm] == "running"


def _one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip() and not line.startswith("\r")]
    assert len(lines) == 1, stderr
    return lines[0]


@pytest.mark.timeout(300)
def test_a_revoked_certificate_fails_the_migration_with_a_clear_line(real_libvirtd: RealVirt,
                                                                     tmp_path: Path) -> None:
    with saltmarsh_on_two_hosts(tmp_path, etc_pki=True, agent_settings={"tls_check_seconds": 3600}) as env:
        cluster = env.cluster
        vm = f"{real_libvirtd.prefix}revoked"
        cluster.cli_json("virt", "init", vm, "1", "128", "--host", "hva", "--timeout", "120")

        # 1. The target's certificate is revoked; the source learns it from the CRL (checked now, not in 5 min).
        _revoke(env, "hvb")
        check = env.run("hva", "virt.tls_check")
        assert check["crl_changed"] and check["libvirtd_reloaded"], check
        refused = cluster.cli("virt", "migrate", vm, "hvb", "--timeout", "120", check=False)
        assert refused.returncode == 1
        line = _one_line(refused.stderr)
        assert f"the target {HV_B_ADDRESS}'s libvirt certificate" in line and "was revoked by the master's CA" in line
        _stays_on(env, vm, "hva")

        # 2. New certificates for the target: its libvirtd serves them without a restart, the migration works.
        issued = env.run("hvb", "virt.keys")
        assert issued["libvirtd_reloaded"], issued
        moved = cluster.cli_json("virt", "migrate", vm, "hvb", "--timeout", "120")
        assert moved["source"] == "hva" and set(moved["confirmed"]) == {"source", "target"}
        wait_until(lambda: cluster.cli_json("virt", "list").get("hvb", {}).get(vm) == "running",
                   what="the inventory to name hvb")

        # 3. The source's certificate is revoked: the target's libvirtd refuses it once its CRL is reloaded.
        _revoke(env, "hvb")
        log_from = env.two.a.log_size()
        check = env.run("hva", "virt.tls_check")
        assert check["crl_changed"] and check["libvirtd_reloaded"], check
        refused = cluster.cli("virt", "migrate", vm, "hva", "--timeout", "120", check=False)
        assert refused.returncode == 1
        line = _one_line(refused.stderr)
        assert "this hypervisor's own libvirt certificate is revoked by the master's CA" in line, line
        assert "revoked" in env.two.a.log_since(log_from), "hv-a's libvirtd did not refuse a revoked certificate"
        _stays_on(env, vm, "hvb")
        assert HV_A_ADDRESS in line  # the line names where it was going
        cluster.cli("virt", "purge", vm)
