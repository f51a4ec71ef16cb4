"""Placement (master/cloud/placement.py) in-process: filters with their reasons, weighers, reservations.

Beside the end-to-end tests of ``virt init`` (tests/test_controller.py): the same rules, on a
real Inventory in a real SQLite file, without daemons.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from saltmarsh.master.cloud.inventory import Inventory
from saltmarsh.master.cloud.placement import Placement, Request
from saltmarsh.master.store.jobcache import JobCache

NODE = {"memory_mib": 4096, "cpus": 4}


def _vm(name: str, memory: int, cpus: int, state: str = "running") -> dict[str, object]:
    return {"name": name, "state": state, "cpu": cpus, "memory_mib": memory, "current_memory_mib": memory}


@pytest.fixture
def inventory(tmp_path: Path) -> Inventory:
    cache = JobCache(tmp_path / "cache.sqlite")
    inv = Inventory(cache, lambda _agent: False)
    inv.apply_snapshot("big", {"available": True, "node_info": NODE, "vm_info": {}})
    inv.apply_snapshot("busy", {"available": True, "node_info": NODE,
                                "vm_info": {"a": _vm("a", 1024, 1), "b": _vm("b", 512, 1, "shutoff")}})
    inv.apply_snapshot("small", {"available": True, "node_info": {"memory_mib": 1024, "cpus": 1}, "vm_info": {}})
    return inv


def _placement(inventory: Inventory, down: set[str] | None = None,
               labels: dict[str, dict[str, str]] | None = None) -> Placement:
    return Placement(inventory, lambda host: host not in (down or set()), lambda host: (labels or {}).get(host, {}))


@pytest.mark.timeout(10)
def test_most_free_memory_wins_and_every_candidate_is_listed(inventory: Inventory) -> None:
    decision = _placement(inventory).decide(Request("vm1", 1, 2048))
    assert decision.choice == "big"
    # fitting hosts first, most free memory first; a dropped host comes last with its reason
    assert [(c.host, c.freemem, c.dropped) for c in decision.candidates] == [
        ("big", 4096, ""), ("busy", 3072, ""), ("small", 1024, "only 1024 MiB free, needs 2048")]
    assert decision.candidates[1].vms == 2  # a stopped VM is a VM, though it holds no memory


@pytest.mark.timeout(10)
def test_ties_go_to_the_host_with_fewer_vms_then_by_id(tmp_path: Path) -> None:
    inv = Inventory(JobCache(tmp_path / "c.sqlite"), lambda _agent: False)
    for host, vms in (("b", {"x": _vm("x", 0, 0, "shutoff")}), ("c", {}), ("a", {})):
        inv.apply_snapshot(host, {"available": True, "node_info": NODE, "vm_info": vms})
    assert _placement(inv).decide(Request("vm", 1, 128)).choice == "a"


@pytest.mark.timeout(10)
def test_each_filter_says_why(inventory: Inventory) -> None:
    inventory.set_maintenance("busy", True)
    inventory.apply_snapshot("small", {"available": False, "error": "connection refused"})
    placement = _placement(inventory, down={"big"}, labels={"busy": {"zone": "a"}})
    reasons = {c.host: c.dropped for c in placement.decide(Request("vm", 1, 128)).candidates}
    assert reasons == {"big": "agent offline", "busy": "in maintenance",
                       "small": "libvirt unavailable: connection refused"}
    inventory.set_maintenance("busy", False)
    reasons = {c.host: c.dropped for c in placement.decide(Request("vm", 1, 128, {"zone": "b"})).candidates}
    assert reasons["busy"] == "labels do not match {'zone': 'b'}"
    assert _placement(inventory).decide(Request("vm", 8, 128)).candidates[0].dropped == "only 4 CPUs free, needs 8"
    named = _placement(inventory).decide(Request("vm", 1, 128, host="busy"))
    assert named.choice == "busy"
    assert {c.host: c.dropped for c in named.candidates}["big"] == "not the requested host busy"


@pytest.mark.timeout(10)
def test_reservations_keep_two_inits_off_one_slot_until_released(inventory: Inventory) -> None:
    placement = _placement(inventory)
    first = placement.reserve(Request("one", 1, 3000))
    second = placement.reserve(Request("two", 1, 3000))
    assert (first.choice, second.choice) == ("big", "busy")  # big's 4096 MiB hold one of them only
    assert placement.reserve(Request("three", 1, 3000)).choice is None
    # a dry run reserves nothing
    assert placement.decide(Request("four", 1, 1000)).choice == "big"
    assert placement.decide(Request("four", 1, 1000)).choice == "big"
    placement.release("big", "one")
    assert placement.decide(Request("five", 1, 3000)).choice == "big"


@pytest.mark.timeout(10)
def test_a_reserved_vm_the_inventory_holds_is_not_counted_twice(inventory: Inventory) -> None:
    placement = _placement(inventory)
    assert placement.reserve(Request("one", 1, 3000)).choice == "big"
    inventory.apply_domain_info("big", "one", _vm("one", 3000, 1))  # its definition reached the inventory
    big = next(c for c in placement.decide(Request("x", 1, 1)).candidates if c.host == "big")
    assert (big.freemem, big.vms) == (1096, 1)
