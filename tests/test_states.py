"""Setup states on this machine's real file system, and the commands the package backends build.

The file state writes real files (in the test's directory); the sysctl state reads and writes
a directory standing in for /proc/sys (the real one is the container test's,
tests/integration/test_host_setup_container.py, where only a private network namespace is
touched); the runner's order, watch and dry-run rules are checked with file states. Each
kind is asked the three questions: what is it now, what would change, change it.
"""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from saltmarsh.agent.errors import StateError
from saltmarsh.agent.states import load_all
from saltmarsh.agent.states.files import File
from saltmarsh.agent.states.groups import GroupMember
from saltmarsh.agent.states.packages import Apt, Dnf
from saltmarsh.agent.states.runner import for_family, order_fault, run_setup
from saltmarsh.agent.states.sysctl import Sysctl
from saltmarsh.agent.states.system import System, read_os_release
from saltmarsh.protocol.states import (
    Change,
    FileState,
    GroupMemberState,
    PkgState,
    ServiceState,
    SetupRequest,
    StateResult,
    SysctlState,
)

load_all()


def debian_system(tmp_path: Path) -> System:
    release = tmp_path / "os-release"
    release.write_text('PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\n')
    proc = tmp_path / "proc-sys"
    (proc / "net" / "ipv4").mkdir(parents=True)
    (proc / "net" / "ipv4" / "ip_forward").write_text("0\n")
    return System(proc_sys=proc, sysctl_dir=tmp_path / "sysctl.d", os_release=release)


def run(request: SetupRequest, system: System) -> list[StateResult]:
    results: list[StateResult] = []
    done = run_setup(request, system, results.append)
    assert done.error == ""
    return results


# ---- file ----------------------------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_file_answers_now_would_change_and_changes_atomically(tmp_path: Path) -> None:
    kind = File(System())
    path = tmp_path / "motd"
    state = FileState(name="motd", path=str(path), content="hello\n", mode=0o640)
    assert kind.current(state) == {"content": "-", "mode": "-", "owner": "-"}
    desired = kind.desired(state)
    assert desired["mode"] == "0640" and desired["owner"] == "root:root" and desired["content"].endswith("(6 bytes)")
    kind.apply(state, {"content": Change("-", desired["content"])})
    assert path.read_text() == "hello\n" and oct(path.stat().st_mode & 0o7777) == "0o640"
    assert kind.current(state) == desired
    assert [p.name for p in tmp_path.iterdir()] == ["motd"], "no temporary file is left"


@pytest.mark.timeout(30)
def test_file_dry_run_shows_the_diff_and_changes_nothing_then_a_second_apply_is_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "app.conf"
    path.write_text("port = 1\nname = a\n")
    path.chmod(0o600)
    state = FileState(name="conf", path=str(path), content="port = 2\nname = a\n", mode=0o644)
    system = debian_system(tmp_path)
    [dry] = run(SetupRequest(states=[state], dry_run=True), system)
    assert dry.status == "would_change" and set(dry.changes) == {"content", "mode"}
    assert dry.changes["mode"] == Change("0600", "0644")
    assert "-port = 1" in dry.detail and "+port = 2" in dry.detail
    assert path.read_text() == "port = 1\nname = a\n" and path.stat().st_mode & 0o777 == 0o600
    [applied] = run(SetupRequest(states=[state]), system)
    assert applied.status == "changed" and path.read_text() == "port = 2\nname = a\n"
    assert [r.status for r in run(SetupRequest(states=[state]), system)] == ["unchanged"]
    assert [r.status for r in run(SetupRequest(states=[state], dry_run=True), system)] == ["unchanged"]


@pytest.mark.timeout(30)
def test_file_mode_only_change_keeps_the_inode_and_a_symlink_is_replaced_not_followed(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_text("x")
    path.chmod(0o600)
    inode = path.stat().st_ino
    system = debian_system(tmp_path)
    [result] = run(SetupRequest(states=[FileState(name="f", path=str(path), content="x")]), system)
    assert result.status == "changed" and set(result.changes) == {"mode"} and path.stat().st_ino == inode
    target = tmp_path / "target"
    target.write_text("keep me")
    link = tmp_path / "link"
    link.symlink_to(target)
    [result] = run(SetupRequest(states=[FileState(name="l", path=str(link), content="new")]), system)
    assert result.status == "changed" and not link.is_symlink() and link.read_text() == "new"
    assert target.read_text() == "keep me"


@pytest.mark.timeout(30)
def test_file_secret_has_no_diff_and_a_missing_owner_or_directory_fails_with_the_reason(tmp_path: Path) -> None:
    path = tmp_path / "key"
    path.write_text("old secret")
    system = debian_system(tmp_path)
    [dry] = run(SetupRequest(states=[FileState(name="k", path=str(path), content="new secret", secret=True)],
                             dry_run=True), system)
    assert dry.status == "would_change" and dry.detail == "" and "secret" not in str(dry.changes)
    states = [FileState(name="a", path=str(tmp_path / "a"), content="1", owner="no-such-user"),
              FileState(name="b", path=str(tmp_path / "missing" / "b"), content="2"),
              FileState(name="c", path=str(tmp_path / "c"), content="3")]
    results = {r.name: r for r in run(SetupRequest(states=states), system)}
    assert results["a"].status == "failed" and "no user 'no-such-user'" in results["a"].reason
    assert results["b"].status == "failed" and "cannot write in" in results["b"].reason
    assert results["c"].status == "changed", "the other states still run"
    assert not (tmp_path / "a").exists()


# ---- sysctl ----------------------------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_sysctl_sets_the_value_and_persists_it_once(tmp_path: Path) -> None:
    system = debian_system(tmp_path)
    kind = Sysctl(system)
    state = SysctlState(name="fwd", key="net.ipv4.ip_forward", value="1")
    assert kind.current(state) == {"value": "0", "persisted": "-"}
    [result] = run(SetupRequest(states=[state]), system)
    assert result.status == "changed" and result.changes == {
        "value": Change("0", "1"), "persisted": Change("-", "net.ipv4.ip_forward = 1")}
    assert (system.proc_sys / "net/ipv4/ip_forward").read_text() == "1\n"
    conf = system.sysctl_dir / "60-saltmarsh-net.ipv4.ip_forward.conf"
    assert conf.read_text() == "net.ipv4.ip_forward = 1\n" and oct(conf.stat().st_mode & 0o777) == "0o644"
    assert [r.status for r in run(SetupRequest(states=[state]), system)] == ["unchanged"]
    with pytest.raises(StateError, match=r"no kernel parameter net\.ipv4\.nothing"):
        kind.current(SysctlState(name="x", key="net.ipv4.nothing", value="1"))


# ---- group_member ----------------------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_group_member_reads_the_group_database() -> None:
    kind = GroupMember(System())
    assert kind.current(GroupMemberState(name="g", user="root", group="no-such-group")) == {
        "member": "no group no-such-group"}
    assert kind.current(GroupMemberState(name="g", user="no-such-user", group="root")) == {
        "member": "no user no-such-user"}
    with pytest.raises(StateError, match="cannot add"):
        kind.apply(GroupMemberState(name="g", user="root", group="no-such-group"),
                   {"member": Change("no group no-such-group", "yes")})


# ---- pkg: the commands each backend builds, and how it reads the answers ----------------------------


@pytest.mark.timeout(30)
def test_apt_builds_its_commands_and_reads_dpkg_query() -> None:
    apt = Apt()
    assert apt.query(["hello", "tree"]) == ["dpkg-query", "-W", "-f=${Package}\\t${db:Status-Abbrev}\\n",
                                            "hello", "tree"]
    assert apt.installed("hello\tii \ntree\tun \nlibc6:amd64\tii \nold\trc \n") == {"hello", "libc6"}
    update, install = apt.install(["hello"])
    assert update == ["apt-get", "-q", "update"]
    assert install[:2] == ["apt-get", "-q"] and install[-3:] == ["--no-install-recommends", "install", "hello"]
    assert "Dpkg::Options::=--force-confold" in install
    assert apt.remove(["hello"])[0][-2:] == ["remove", "hello"]


@pytest.mark.timeout(30)
def test_dnf_builds_its_commands_and_reads_rpm() -> None:
    dnf = Dnf()
    assert dnf.query(["libvirt", "qemu-kvm"]) == ["rpm", "-q", "--qf", "%{NAME}\\n", "libvirt", "qemu-kvm"]
    assert dnf.installed("libvirt\npackage qemu-kvm is not installed\n") == {"libvirt"}
    assert dnf.install(["libvirt", "qemu-kvm"]) == [
        ["dnf", "-y", "-q", "--setopt=install_weak_deps=False", "install", "libvirt", "qemu-kvm"]]
    assert dnf.remove(["qemu-kvm"]) == [["dnf", "-y", "-q", "remove", "qemu-kvm"]]


@pytest.mark.timeout(30)
def test_package_names_cannot_be_options() -> None:
    for name in ("-y", "--allow-unauthenticated", "a b", "x;rm"):
        with pytest.raises(msgspec.ValidationError):
            msgspec.convert({"kind": "pkg", "name": "p", "packages": [name]}, PkgState)


# ---- the runner: families, order, watch ---------------------------------------------------------------


@pytest.mark.timeout(30)
def test_os_family_comes_from_os_release(tmp_path: Path) -> None:
    release = tmp_path / "os-release"
    release.write_text('ID="rocky"\nID_LIKE="rhel centos fedora"\n')
    assert System(os_release=release).os_family() == "redhat"
    release.write_text("ID=ubuntu\nID_LIKE=debian\n")
    assert System(os_release=release).os_family() == "debian"
    release.write_text("ID=arch\n")
    with pytest.raises(StateError, match="neither a Debian nor a Red Hat"):
        System(os_release=release).os_family()
    assert read_os_release(release) == {"ID": "arch"}


@pytest.mark.timeout(30)
def test_a_host_keeps_its_own_familys_packages_and_drops_watches_of_the_others() -> None:
    states = [PkgState(name="pkg-debian", packages=["a"], os_family="debian"),
              PkgState(name="pkg-redhat", packages=["b"], os_family="redhat"),
              ServiceState(name="svc", unit="x.service", watch=["pkg-debian", "pkg-redhat"])]
    kept = for_family(states, "debian")  # type: ignore[arg-type]
    assert [s.name for s in kept] == ["pkg-debian", "svc"] and kept[1].watch == ["pkg-debian"]
    assert order_fault(kept) == ""
    assert "watches nothing-before" in order_fault([ServiceState(name="s", unit="u", watch=["nothing-before"])])
    twice = [FileState(name="a", path="/x", content=""), FileState(name="a", path="/y", content="")]
    assert "two states are named 'a'" in order_fault(twice)  # type: ignore[arg-type]


@pytest.mark.timeout(30)
def test_a_state_watching_a_failed_state_fails_with_it(tmp_path: Path) -> None:
    system = debian_system(tmp_path)
    states = [FileState(name="bad", path=str(tmp_path / "none" / "f"), content="x"),
              FileState(name="after", path=str(tmp_path / "g"), content="y", watch=["bad"])]
    results = run(SetupRequest(states=states), system)
    assert [(r.name, r.status) for r in results] == [("bad", "failed"), ("after", "failed")]
    assert results[1].reason == "watched state bad failed" and not (tmp_path / "g").exists()


@pytest.mark.timeout(30)
def test_a_run_that_cannot_start_says_why(tmp_path: Path) -> None:
    system = debian_system(tmp_path)
    system.os_release.unlink()
    done = run_setup(SetupRequest(states=[]), system, lambda result: None)
    assert "cannot be read" in done.error
