"""The network config the bridge state writes, what a bridge state may name, and libvirt_tls's reading.

The bridge itself is made on a real kernel in tests/integration/test_bridge_container.py; here
are the files: networkd's three, and an operator's /etc/network/interfaces rewritten so that a
second rendering is the same text (a second run changes nothing).
"""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from saltmarsh.agent.states.netconfig import Networkd, Plan, render_interfaces, restore_files, snapshot, write_files
from saltmarsh.protocol.states import BridgeState

PLAN = Plan(state="bridge-br0", bridge="br0", device="eth0", mac="52:54:00:12:34:56",
            addresses=("10.0.0.5/24", "10.0.1.5/24"), gateway="10.0.0.1")
INTERFACES = """\
# The loopback network interface
auto lo
iface lo inet loopback

auto eth0
iface eth0 inet static
    address 10.0.0.5/24
    gateway 10.0.0.1
iface eth0 inet6 auto

auto eth1
iface eth1 inet dhcp
"""


@pytest.mark.timeout(30)
def test_networkd_files_make_the_bridge_move_the_addresses_and_sort_first(tmp_path: Path) -> None:
    files = Networkd(tmp_path).files(PLAN)
    names = sorted(path.name for path in files)
    assert names == ["00-saltmarsh-br0.netdev", "00-saltmarsh-br0.network", "00-saltmarsh-eth0.network"]
    netdev, network, port = (files[tmp_path / name] for name in names)
    assert "Kind=bridge" in netdev and "MACAddress=52:54:00:12:34:56" in netdev
    assert "Address=10.0.0.5/24\nAddress=10.0.1.5/24\nGateway=10.0.0.1\n" in network
    assert "[Match]\nName=eth0\n" in port and "Bridge=br0" in port and "Address=" not in port


@pytest.mark.timeout(30)
def test_interfaces_file_gets_the_device_as_a_port_and_the_bridge_once() -> None:
    once = render_interfaces(INTERFACES, PLAN)
    assert render_interfaces(once, PLAN) == once
    lines = once.splitlines()
    assert "iface eth0 inet manual" in lines and "    address 10.0.0.5/24" in lines
    assert not any(line.startswith("iface eth0 inet6") or line == "iface eth0 inet static" for line in lines)
    assert lines.count("auto br0") == 1 and "iface br0 inet static" in lines
    assert "    pre-up ip link set dev eth0 master br0" in lines and "    up ip addr add 10.0.1.5/24 dev br0" in lines
    assert "iface eth1 inet dhcp" in lines and "iface lo inet loopback" in lines  # the rest untouched
    # A device without a stanza of its own gets one (manual), so ifup brings it up as a port.
    bare = render_interfaces("auto lo\niface lo inet loopback\n", PLAN)
    assert "iface eth0 inet manual" in bare.splitlines() and render_interfaces(bare, PLAN) == bare


@pytest.mark.timeout(30)
def test_a_snapshot_restores_files_as_they_were_and_removes_new_ones(tmp_path: Path) -> None:
    old, new = tmp_path / "old.network", tmp_path / "new.network"
    old.write_text("before\n")
    saved = snapshot([old, new])
    write_files({old: "after\n", new: "made\n"})
    restore_files(saved)
    assert old.read_text() == "before\n" and not new.exists()


@pytest.mark.timeout(30)
def test_a_bridge_state_names_interfaces_and_addresses_only() -> None:
    def bridge(**fields: object) -> BridgeState:
        return msgspec.convert({"kind": "bridge", "name": "b", **fields}, BridgeState)
    assert bridge().bridge == "br0" and bridge().rollback_seconds == 60.0
    for bad in ({"device": "-rf"}, {"device": "eth0/../x"}, {"bridge": "a" * 16}, {"addresses": ["10.0.0.1"]},
                {"addresses": ["10.0.0.1/24; reboot"]}, {"rollback_seconds": 0}, {"gateway": "1.2.3.4 dev x"}):
        with pytest.raises(msgspec.ValidationError):
            bridge(**bad)


@pytest.mark.timeout(30)
def test_libvirt_tls_reads_the_agents_files_without_following_links(tmp_path: Path) -> None:
    from saltmarsh.agent.errors import StateError
    from saltmarsh.agent.states.libvirt_tls import FILES, LibvirtTls
    from saltmarsh.agent.states.system import System
    from saltmarsh.protocol.states import LibvirtTlsState

    state = LibvirtTlsState(name="tls", source=str(tmp_path / "agent"), target=str(tmp_path / "etc-pki"))
    kind = LibvirtTls(System())
    with pytest.raises(StateError, match="set libvirt_tls: true"):
        kind.desired(state)
    for name in FILES:
        (tmp_path / "agent" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "agent" / name).write_text(f"{name}\n")
    wanted = kind.desired(state)
    assert wanted["libvirt/private/serverkey.pem"].endswith(" 0600") and wanted["CA/cacert.pem"].endswith(" 0644")
    assert all(kind.current(state)[name] == "-" for name in FILES)
    # The agent's user owns its directory: a link there to a root-only file is refused, not read.
    key = tmp_path / "agent" / "libvirt/private/serverkey.pem"
    key.unlink()
    key.symlink_to("/etc/shadow")
    with pytest.raises(StateError, match=r"serverkey\.pem"):
        kind.desired(state)
