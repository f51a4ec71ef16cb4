"""``saltmarsh host setup`` end to end on this machine: a real master, agent and setup helper as processes.

The states here are files in the test's own directory (the container test,
tests/integration/test_host_setup_container.py, runs every kind on a real Debian host). The
agent runs as root here, so the helper is told to serve root; the peer-credential check
itself is shown by connecting as ``nobody`` to a socket whose file modes would let it in.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
import yaml

from saltmarsh.agent.states.wire import HelperReply, HelperRequest, frame, recv_frame
from saltmarsh.master.config import load_master_config
from saltmarsh.pki.keys import Identity
from saltmarsh.protocol.codec import decode, encode
from saltmarsh.protocol.crypto import SessionCipher
from saltmarsh.protocol.digest import digest
from saltmarsh.protocol.envelope import NONCE_SIZE, SignedHeader, sign_frame
from saltmarsh.protocol.errors import ConfigError
from saltmarsh.protocol.jobproof import JobProof
from saltmarsh.protocol.messages import Job, Target
from saltmarsh.protocol.states import FileState, SetupRequest
from saltmarsh.protocol.version import PROTOCOL_VERSION

from .cluster import BIN, Cluster, Daemon, free_port, wait_until
from .http_client import Api, error_of


def profiles(root: Path) -> dict[str, Any]:
    files = [{"kind": "file", "name": f"conf-{n}", "path": str(root / f"conf-{n}"), "content": f"value {n}\n",
              "mode": 0o640} for n in (1, 2)]
    nothing: dict[str, Any] = {"packages": {"debian": [], "redhat": []}, "groups": {}, "sysctls": {}, "services": [],
                              "bridge": None}
    broken = {"kind": "file", "name": "broken", "path": str(root / "no-dir" / "f"), "content": "x"}
    return {"by_label": [{"labels": {"role": "lab"}, "profile": "lab"}],
            "profiles": {"lab": {**nothing, "states": files},
                         "broken": {**nothing, "states": [files[0], broken, files[1]]}}}


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[tuple[Cluster, Path, Daemon]]:
    if os.geteuid() != 0:
        pytest.skip("the helper is started as root, as its unit does")
    root = tmp_path / "host"
    root.mkdir()
    cluster = Cluster(tmp_path, host=profiles(root), http={"listen": f"127.0.0.1:{free_port()}"})
    helper_dir = tmp_path / "helper"
    helper_dir.mkdir()
    sock = tmp_path / "run" / "setup.sock"
    (helper_dir / "setup-helper.yaml").write_text(yaml.safe_dump(
        {"socket": str(sock), "agent_user": "root", "root_dir": "state", "log_level": "debug",
         "master_key_file": str(tmp_path / "agents" / "hv1" / "state" / "pki" / "master.pub")}))
    helper = Daemon("helper", helper_dir, [str(BIN / "saltmarsh-setup-helper"), "-c", str(helper_dir)])
    helper.start()
    try:
        wait_until(sock.exists, what="the helper's socket")
        cluster.start_master()
        cluster.start_agents("hv1", labels={"role": "lab"}, setup_socket=str(sock))
        yield cluster, root, helper
    finally:
        cluster.stop()
        assert helper.stop() == 0
        assert not sock.exists()


def setup_json(cluster: Cluster, *words: str) -> tuple[int, dict[str, Any]]:
    result = cluster.cli("host", "setup", "hv1", *words, "--json", check=False)
    return result.returncode, json.loads(result.stdout)


@pytest.mark.timeout(120)
def test_dry_run_then_apply_then_nothing_to_change(lab: tuple[Cluster, Path, Daemon]) -> None:
    cluster, root, _helper = lab
    code, dry = setup_json(cluster, "--dry-run")
    host = dry["hosts"]["hv1"]
    assert code == 0 and dry["dry_run"] and host["profile"] == "lab"  # chosen by the host's label
    assert [(r["name"], r["status"]) for r in host["results"]] == [("conf-1", "would_change"),
                                                                   ("conf-2", "would_change")]
    assert host["results"][0]["changes"]["mode"] == ["-", "0640"]
    assert sorted(p.name for p in root.iterdir()) == [], "the dry run wrote nothing"

    human = cluster.cli("host", "setup", "hv1")
    assert "hv1: conf-1 changed" in human.stderr and "hv1: conf-2 changed" in human.stderr  # progress events
    assert "hv1 (profile lab, debian):" in human.stdout and "    changed       conf-1" in human.stdout
    assert "mode: - -> 0640" in human.stdout and "0 unchanged, 0 would change, 2 changed, 0 failed" in human.stdout
    assert (root / "conf-1").read_text() == "value 1\n" and (root / "conf-1").stat().st_mode & 0o777 == 0o640

    for extra in ((), ("--dry-run",)):
        code, again = setup_json(cluster, *extra)
        assert code == 0 and [r["status"] for r in again["hosts"]["hv1"]["results"]] == ["unchanged", "unchanged"]

    (root / "conf-2").write_text("edited by hand\n")
    human = cluster.cli("host", "setup", "hv1", "--dry-run")
    assert "    unchanged     conf-1" in human.stdout and "    would change  conf-2" in human.stdout
    assert "        | -edited by hand" in human.stdout and "        | +value 2" in human.stdout
    assert (root / "conf-2").read_text() == "edited by hand\n"


@pytest.mark.timeout(120)
def test_host_setup_over_http_is_an_operation_with_the_same_results(lab: tuple[Cluster, Path, Daemon]) -> None:
    cluster, root, _helper = lab
    assert cluster.http_listen is not None
    api = Api(cluster, int(cluster.http_listen.rsplit(":", 1)[1]))
    admin = api.token("setup-admin", "hosts:write,vms:read")
    status, body, _ = api.call("POST", "/v1/hosts/setup", api.token("setup-vms", "vms:write"), {"target": "hv1"})
    assert status == 403 and "hosts:write" in error_of(body)[1]

    def setup(**body: Any) -> dict[str, Any]:
        status, started, _ = api.call("POST", "/v1/hosts/setup", admin, {"target": "hv1", **body})
        assert status == 202 and started["operation"]["command"] == "host.setup", started
        done = api.call("GET", f"/v1/operations/{started['operation']['id']}/wait?timeout=60", admin)[1]
        assert done["status"] == "succeeded", done
        return dict(done["result"]["hosts"]["hv1"])

    dry = setup(dry_run=True)
    assert [(r["name"], r["status"]) for r in dry["results"]] == [("conf-1", "would_change"),
                                                                  ("conf-2", "would_change")]
    assert not list(root.iterdir()), "the dry run wrote nothing"
    assert [r["status"] for r in setup()["results"]] == ["changed", "changed"]
    assert (root / "conf-2").read_text() == "value 2\n"
    assert [r["status"] for r in setup(dry_run=True)["results"]] == ["unchanged", "unchanged"]
    status, body, _ = api.call("POST", "/v1/hosts/setup", admin, {"target": "hv1", "profile": "nope"})
    assert status == 202
    failed = api.call("GET", f"/v1/operations/{body['operation']['id']}/wait?timeout=60", admin)[1]
    assert failed["status"] == "failed" and "nope" in failed["error"]["message"], failed


@pytest.mark.timeout(120)
def test_a_failed_state_exits_1_with_its_reason_and_the_others_still_run(lab: tuple[Cluster, Path, Daemon]) -> None:
    cluster, _root, _helper = lab
    code, result = setup_json(cluster, "--profile", "broken")
    assert code == 1
    by_name = {r["name"]: r for r in result["hosts"]["hv1"]["results"]}
    assert [by_name[n]["status"] for n in ("conf-1", "broken", "conf-2")] == ["changed", "failed", "changed"]
    reason = by_name["broken"]["reason"]
    assert "cannot write in" in reason and "No such file or directory" in reason
    human = cluster.cli("host", "setup", "hv1", "--profile", "broken", check=False)
    assert human.returncode == 1 and "    failed        broken: " in human.stdout


@pytest.mark.timeout(120)
def test_unknown_profile_and_no_matching_host_are_refused(lab: tuple[Cluster, Path, Daemon]) -> None:
    cluster, _root, _helper = lab
    result = cluster.cli("host", "setup", "hv1", "--profile", "nope", check=False)
    assert result.returncode == 1
    assert "no host profile 'nope' in master.yaml (known: broken, default, lab)" in result.stderr
    result = cluster.cli("host", "setup", "nobody", check=False)
    assert result.returncode == 1 and "no accepted agent matches" in result.stderr


@pytest.mark.timeout(120)
def test_without_a_helper_the_host_fails_and_says_why(cluster: Cluster, tmp_path: Path) -> None:
    cluster.start_agents("hv2", setup_socket=str(tmp_path / "no-helper.sock"))
    result = cluster.cli("host", "setup", "hv2", "--dry-run", check=False)
    assert result.returncode == 1
    assert "hv2 (profile default): failed: HelperUnavailable: no setup helper at" in result.stdout
    assert "is saltmarsh-setup-helper running on this host?" in result.stdout


@pytest.mark.timeout(60)
def test_the_helper_refuses_other_uids_and_malformed_requests(lab: tuple[Cluster, Path, Daemon]) -> None:
    _cluster, root, helper = lab
    sock = Path(yaml.safe_load((helper.config_dir / "setup-helper.yaml").read_text())["socket"])
    assert oct(sock.stat().st_mode & 0o777) == "0o660" and oct(sock.parent.stat().st_mode & 0o777) == "0o750"
    # Opened wide on purpose: what stops nobody now is the peer-credential check alone.
    sock.parent.chmod(0o755)
    sock.chmod(0o666)
    request = frame(encode(SetupRequest(states=[])))
    # The test's directories are root's alone (0700): the probe enters the socket's directory as root,
    # then becomes nobody and connects by the relative name.
    probe = (f"import os,socket,sys; os.chdir({str(sock.parent)!r}); os.setgroups([]); os.setgid(65534); "
             f"os.setuid(65534); s=socket.socket(socket.AF_UNIX); s.connect({sock.name!r}); s.sendall({request!r}); "
             "sys.stdout.write(repr(s.recv(4096)))")
    nobody = subprocess.run(["/usr/bin/python3", "-c", probe], capture_output=True, text=True, timeout=30, check=True)
    assert "refused: uid 65534 is not the agent's" in nobody.stdout
    wait_until(lambda: "DENIED uid 65534" in helper.log(), what="the refusal in the helper's log")
    with socket.socket(socket.AF_UNIX) as raw:  # root (the agent's uid here), but not a SetupRequest
        raw.connect(str(sock))
        raw.sendall(frame(encode({"states": [{"kind": "shell", "name": "x", "command": "id"}]})))
        answer = raw.recv(4096)
    assert b"refused: " in answer and struct.unpack(">I", answer[:4])[0] == len(answer) - 4
    assert "DENIED pid" in helper.log() and sorted(p.name for p in root.iterdir()) == []


@pytest.mark.timeout(30)
def test_host_profiles_are_checked_when_the_config_is_read(tmp_path: Path) -> None:
    default = load_master_config(tmp_path).host.profiles["default"]
    assert [s.name for s in default] == ["pkg-debian", "pkg-redhat", "group-libvirt-saltmarsh",
                                         "sysctl-net.ipv4.ip_forward", "bridge-br0", "service-libvirtd.service"]
    assert (default[4].bridge, default[4].device, default[4].rollback_seconds) == ("br0", "eth0", 60.0)
    assert default[0].packages == ["libvirt-daemon-system", "libvirt-clients", "qemu-system-x86", "qemu-utils"]
    assert default[1].packages == ["libvirt", "qemu-kvm", "qemu-img"]
    assert default[-1].watch == ["pkg-debian", "pkg-redhat"]
    (tmp_path / "master.yaml").write_text(yaml.safe_dump({"host": {"profiles": {"tls": {"libvirt_tls": True}}}}))
    tls = load_master_config(tmp_path).host.profiles["tls"]
    assert [s.name for s in tls][-3:] == ["bridge-br0", "libvirt-tls", "service-libvirtd.service"]
    for host, error in (({"by_label": [{"labels": {"a": "b"}, "profile": "none"}]}, "no profile 'none'"),
                        ({"profiles": {"p": {"states": [{"kind": "shell", "name": "x"}]}}}, "Invalid value 'shell'"),
                        ({"profiles": {"p": {"packages": {"debian": ["-y"]}}}}, "matching regex"),
                        ({"profiles": {"p": {"sysctls": {"x": "1"}}}}, "matching regex"),
                        ({"profiles": {"p": {"bridge": {"device": "-rf"}}}}, "matching regex"),
                        ({"profiles": {"p": {"bridge": {"rollback_seconds": 0}}}}, "Expected `float` >"),
                        ({"profiles": {"p": {"states": [{"kind": "file", "name": "pkg-debian", "path": "/x",
                                                          "content": ""}]}}}, "two states named pkg-debian")):
        (tmp_path / "master.yaml").write_text(yaml.safe_dump({"host": host}))
        with pytest.raises(ConfigError, match=error):
            load_master_config(tmp_path)


@pytest.mark.timeout(10)
def test_an_agent_may_fire_setup_progress_for_itself_only() -> None:
    from saltmarsh.protocol.states import host_setup_tag
    from saltmarsh.protocol.tags import agent_tag_fault

    assert agent_tag_fault("hv1", host_setup_tag("hv1", "pkg-debian")) == ""
    assert "not one it may fire" in agent_tag_fault("hv1", host_setup_tag("hv2", "pkg-debian"))
    assert "not one it may fire" in agent_tag_fault("hv1", "saltmarsh/host/hv1/../hv2/setup/x")


@pytest.mark.timeout(120)
def test_a_host_that_is_down_is_named_at_once_not_waited_for(lab: tuple[Cluster, Path, Daemon]) -> None:
    cluster, _root, _helper = lab
    cluster.agents["hv1"].stop()
    # Until the master has missed three heartbeats, hv1 is still up: it is sent the job, which times out.
    wait_until(lambda: "not up" in cluster.cli("host", "setup", "hv1", "--dry-run", "--timeout", "2",
                                               check=False).stdout,
               timeout=30, interval=0.5, what="the master to see hv1 down")
    result = cluster.cli("host", "setup", "hv1", "--timeout", "600", check=False, timeout=60)
    assert result.returncode == 1 and "hv1 (profile lab): failed: not up: " in result.stdout


def signed_job(signer: Identity, states: list[dict[str, Any]], jid: str, age: float = 0.0) -> JobProof:
    """A host.setup job sealed and signed as the master publishes it (master/wire/publisher.py), ``age`` s old."""
    key = os.urandom(32)
    job = Job(jid=jid, fun="host.setup", target=Target(kind="list", ids=["hv1"]),
              kwargs={"states": states, "dry_run": False})
    body = SessionCipher(key).encrypt(encode(job))
    header = SignedHeader(PROTOCOL_VERSION, Job.KIND, "master", time.time() - age, os.urandom(NONCE_SIZE), b"", b"",
                          digest(body))
    return JobProof(frame=sign_frame(signer, header, body), key=key)


def ask_helper(sock: Path, body: bytes) -> list[HelperReply]:
    """Send one request frame as this process (root: the agent's uid here) and read every reply."""
    replies = []
    with socket.socket(socket.AF_UNIX) as raw:
        raw.settimeout(30)
        raw.connect(str(sock))
        raw.sendall(frame(body))
        while (reply := recv_frame(raw)) is not None:
            replies.append(decode(reply, HelperReply, "reply"))
    return replies


@pytest.mark.timeout(120)
def test_the_helper_runs_only_fresh_master_signed_jobs_and_each_once(lab: tuple[Cluster, Path, Daemon],
                                                                     tmp_path: Path) -> None:
    cluster, root, helper = lab
    assert cluster.cli("run", "hv1", "test.ping").returncode == 0  # the agent has pinned the master's key
    sock = Path(yaml.safe_load((helper.config_dir / "setup-helper.yaml").read_text())["socket"])
    master = Identity.load_or_create(cluster.master_dir / "state" / "pki" / "master.key")
    state = [{"kind": "file", "name": "f", "path": str(root / "written"), "content": "root wrote this\n"}]

    def refusal(body: bytes) -> str:
        replies = ask_helper(sock, body)
        assert len(replies) == 1 and replies[0].done is not None and not (root / "written").exists()
        return replies[0].done.error

    # What anything running as the agent's user could send: its own states, or a job it signed itself.
    assert refusal(encode(SetupRequest(states=msgspec.convert(state, list[FileState])))).startswith("refused: ")
    forged = signed_job(Identity.generate(), state, "20260101000000000001")
    assert "not a job signed by the master" in refusal(encode(HelperRequest(proof=forged)))
    wait_until(lambda: "DENIED pid" in helper.log() and "not a job signed by the master" in helper.log(),
               what="the refusal logged with its reason")
    stale = signed_job(master, state, "20260101000000000002", age=3600)
    assert "outside the 600 s window" in refusal(encode(HelperRequest(proof=stale)))
    # The master's own job runs once; the same bytes again are a replay.
    good = encode(HelperRequest(proof=signed_job(master, state, "20260101000000000003")))
    replies = ask_helper(sock, good)
    assert [r.result.status for r in replies if r.result] == ["changed"] and replies[-1].done.error == ""
    assert (root / "written").read_text() == "root wrote this\n"
    (root / "written").unlink()
    assert "already served: a replay" in refusal(good)
    assert "already served: a replay" in helper.log()
