"""Fixtures for bench/virt.py: libvirt test-driver node files, random images, timed CLI runs.

The node file follows libvirt's test driver (src/test/test_driver.c, testParseNodeInfo and
testParseDomains; examples/xml/test/testnodeinline.xml): a ``<node>`` root whose ``<cpu>`` gives
nodes x sockets x cores x threads CPUs, whose ``<memory>`` is in KiB, and whose inline
``<domain type='test'>`` children start running unless they say otherwise.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import time
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

from tests.cluster import BIN

HOST_CPUS = 16  # 1 NUMA node x 2 sockets x 4 cores x 2 threads
HOST_MEMORY_KIB = 64 * 1024 * 1024  # 64 GiB
VM_VCPUS = 2
VM_MEMORY_KIB = 1024 * 1024  # 1 GiB
BRIDGE = "br0"
MIB = 1024 * 1024


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    """Append ``<tag attrs>text</tag>`` to ``parent`` and return it."""
    element = ET.SubElement(parent, tag, attrs)
    if text is not None:
        element.text = text
    return element


def vm_name(agent_id: str, index: int) -> str:
    """m0-vm05 and the like."""
    return f"{agent_id}-vm{index:02d}"


def domain_element(agent_id: str, index: int, disk_dir: Path) -> ET.Element:
    """One test-driver domain: 2 vCPU, 1 GiB, one qcow2 disk, one bridge NIC, one VNC console."""
    name = vm_name(agent_id, index)
    dom = ET.Element("domain", {"type": "test"})
    _sub(dom, "name", name)
    _sub(dom, "uuid", str(uuid.uuid5(uuid.NAMESPACE_DNS, f"{name}.bench.saltmarsh")))
    _sub(dom, "memory", str(VM_MEMORY_KIB), unit="KiB")
    _sub(dom, "currentMemory", str(VM_MEMORY_KIB), unit="KiB")
    _sub(dom, "vcpu", str(VM_VCPUS))
    os_el = _sub(dom, "os")
    _sub(os_el, "type", "hvm")
    devices = _sub(dom, "devices")
    disk = _sub(devices, "disk", type="file", device="disk")
    _sub(disk, "driver", name="qemu", type="qcow2")
    _sub(disk, "source", file=str(disk_dir / f"{name}.qcow2"))
    _sub(disk, "target", dev="vda", bus="virtio")
    nic = _sub(devices, "interface", type="bridge")
    _sub(nic, "mac", address=f"52:54:00:{int(agent_id[1:]) % 256:02x}:00:{index:02x}")
    _sub(nic, "source", bridge=BRIDGE)
    _sub(nic, "model", type="virtio")
    _sub(devices, "graphics", type="vnc", port=str(5900 + index), listen="127.0.0.1")
    return dom


def node_tree(agent_id: str, vms: int, disk_dir: Path) -> ET.ElementTree:
    """A test-driver ``<node>``: 16 CPUs, 64 GiB and ``vms`` running domains."""
    node = ET.Element("node")
    cpu = _sub(node, "cpu")
    for tag, value in (("mhz", "2400"), ("model", "x86_64"), ("nodes", "1"), ("sockets", "2"), ("cores", "4"),
                       ("threads", "2"), ("active", str(HOST_CPUS))):
        _sub(cpu, tag, value)
    _sub(node, "memory", str(HOST_MEMORY_KIB))
    for index in range(vms):
        node.append(domain_element(agent_id, index, disk_dir))
    tree = ET.ElementTree(node)
    ET.indent(tree)
    return tree


def write_node_file(directory: Path, agent_id: str, vms: int) -> Path:
    """Write ``directory/node.xml`` for ``agent_id`` (and its VMs' qcow2 disks); return its absolute path."""
    disks = directory.resolve() / "disks"
    disks.mkdir(parents=True, exist_ok=True)
    for index in range(vms):
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disks / f"{vm_name(agent_id, index)}.qcow2"),
                        "8G"], check=True, capture_output=True, timeout=30)
    path = directory.resolve() / "node.xml"
    node_tree(agent_id, vms, disks).write(path, encoding="utf-8", xml_declaration=True)
    return path


def verify_node_file(path: Path, agent_id: str, vms: int) -> None:
    """Open the file with libvirt-python and check the host and that every domain runs as built."""
    import libvirt

    conn = libvirt.open(f"test://{path}")
    try:
        _model, memory_mib, cpus, *_ = conn.getInfo()
        if cpus != HOST_CPUS or memory_mib != HOST_MEMORY_KIB // 1024:
            raise RuntimeError(f"{path}: host has {cpus} CPUs and {memory_mib} MiB, not {HOST_CPUS} and 65536")
        domains = {d.name(): d for d in conn.listAllDomains(0)}
        expected = {vm_name(agent_id, i) for i in range(vms)}
        if set(domains) != expected:
            raise RuntimeError(f"{path}: domains {sorted(domains)} differ from {sorted(expected)}")
        for name, dom in domains.items():
            state, max_kib, _cur, vcpus, _time = dom.info()
            if state != libvirt.VIR_DOMAIN_RUNNING or vcpus != VM_VCPUS or max_kib != VM_MEMORY_KIB:
                raise RuntimeError(f"{path}: {name} is state {state} with {vcpus} vCPU, {max_kib} KiB")
    finally:
        conn.close()


def write_random_file(path: Path, size: int, chunk: int = 8 * MIB) -> Path:
    """``size`` bytes of os.urandom at ``path``, written in chunks (never all in memory)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as out:
        left = size
        while left:
            n = min(chunk, left)
            out.write(os.urandom(n))
            left -= n
    return path


# ---- timed CLI runs -------------------------------------------------------------------------


@dataclass
class Timing:
    """Wall times of repeated runs of one command, and the last run's output."""

    seconds: list[float] = field(default_factory=list)
    stdout: str = ""

    @property
    def median(self) -> float:
        """Median wall time."""
        return statistics.median(self.seconds)

    def text(self) -> str:
        """'0.123 s (0.110–0.140)', or just '0.123 s' for one run."""
        if len(self.seconds) == 1:
            return f"{self.seconds[0]:.3f} s"
        return f"{self.median:.3f} s ({min(self.seconds):.3f}–{max(self.seconds):.3f})"


def cli_argv(master_dir: Path, *args: str) -> list[str]:
    """The exact command that is timed: ``saltmarsh -c MASTER_DIR ARGS``."""
    return [str(BIN / "saltmarsh"), "-c", str(master_dir), *args]


def run_timed(argv: list[str], timeout: float = 600.0) -> tuple[float, subprocess.CompletedProcess[str]]:
    """Run ``argv`` once; its wall time (process start included) and result; RuntimeError unless exit 0."""
    started = time.perf_counter()
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[3:])} exited {result.returncode}: {result.stderr[-2000:]}"
                           f"{result.stdout[-2000:]}")
    return elapsed, result


def time_cli(master_dir: Path, args: list[str], repeat: int, warmup: int = 1) -> Timing:
    """Wall time of ``saltmarsh ARGS`` ``repeat`` times, after ``warmup`` untimed runs."""
    timing = Timing()
    for i in range(warmup + repeat):
        elapsed, result = run_timed(cli_argv(master_dir, *args))
        if i >= warmup:
            timing.seconds.append(elapsed)
        timing.stdout = result.stdout
    return timing
