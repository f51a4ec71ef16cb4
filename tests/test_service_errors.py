"""The service layer's typed errors: each kind reachable through a real master, and mapped once.

A real master and three agents on libvirt's test:///default driver (tests/conftest.py: cloud);
each request goes over the control socket as the CLI sends it, and the client raises the kind
the service raised, from the code in the reply. The mapping tables are checked as data.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import zmq

from saltmarsh.master.control.client import MasterClient
from saltmarsh.master.errors import CommandError
from saltmarsh.master.service.errors import (
    HTTP_STATUS,
    KINDS,
    Conflict,
    InternalError,
    Invalid,
    NotFound,
    Refused,
    TimedOut,
    Unavailable,
    error_for,
)
from saltmarsh.master.service.types.hosts import MaintenanceRequest
from saltmarsh.master.service.types.images import ImageListRequest
from saltmarsh.master.service.types.jobs import JobRequest, KillRequest, OutcomeRequest, RunRequest
from saltmarsh.master.service.types.keys import TokenRequest
from saltmarsh.master.service.types.vms import InitRequest, MigrateRequest, OpRequest
from saltmarsh.protocol.codec import decode, encode
from saltmarsh.protocol.targeting import make_target

from .cluster import Cluster

EVERY_KIND = (NotFound, Conflict, Unavailable, TimedOut, Refused, Invalid, InternalError)


def test_each_kind_has_its_own_code_an_http_status_and_comes_back_as_itself() -> None:
    codes = [kind.code for kind in EVERY_KIND]
    assert len(set(codes)) == len(codes)
    assert set(KINDS) == set(codes) == set(HTTP_STATUS)
    assert HTTP_STATUS == {"not_found": 404, "conflict": 409, "unavailable": 503, "timed_out": 504,
                           "refused": 422, "invalid": 400, "internal": 500}
    for kind in EVERY_KIND:
        rebuilt = error_for(kind.code, "why")
        assert type(rebuilt) is kind and isinstance(rebuilt, CommandError) and str(rebuilt) == "why"
    unknown = error_for("from_a_newer_master", "why")  # a client older than its master still says why
    assert type(unknown) is CommandError and unknown.code == "refused" and str(unknown) == "why"


@pytest.mark.timeout(120)
def test_every_kind_is_reachable_over_the_control_socket(cloud: Cluster) -> None:
    with MasterClient(cloud.control_socket) as client:
        assert client.request(ImageListRequest()) == []  # no file_roots: an empty catalog, not an error
        with pytest.raises(NotFound, match=r"^no job 1{20} in the job cache$"):
            client.request(JobRequest("1" * 20))
        with pytest.raises(Invalid, match=r"^a join token's ttl must be more than 0"):
            client.request(TokenRequest("new1", ttl=0.0))
        with pytest.raises(Invalid, match=r"^unknown command 'no.such'$"):
            client.call("no.such")
        with pytest.raises(Invalid, match=r"^bad arguments: "):
            client.call("key.list", bogus=1)
        # libvirt's test driver gives every host a VM named "test": by name, it is ambiguous.
        with pytest.raises(Conflict, match=r"^VM name 'test' is ambiguous"):
            client.request(OpRequest("info", "test"))
        with pytest.raises(Conflict, match=r"^a VM named 'test' already exists"):
            client.request(InitRequest("test", 1, 64))
        with pytest.raises(Unavailable, match=r"^no hypervisor can hold huge "):
            client.request(InitRequest("huge", 16, 1 << 20))
        client.request(InitRequest("app1", 1, 64, host="hv2"))
        client.request(MaintenanceRequest("hv3", "on"))
        with pytest.raises(Refused, match=r"^target hv3 is in maintenance$"):
            client.request(MigrateRequest("app1", "hv3", dry_run=True))
        # A job every agent answered is killed nowhere.
        started = client.run(make_target("hv1"), "test.ping", [], {})
        assert started.complete
        with pytest.raises(Conflict, match=r"is not running anywhere"):
            client.request(KillRequest(started.jid))
        # A hypervisor that stops answering (stopped, not yet known to be down) times out.
        cloud.agents["hv2"].pause()
        try:
            with pytest.raises(TimedOut, match=r"^hypervisor hv2 did not answer virt.vm_info app1 within 1 s$"):
                client.request(OpRequest("info", "app1", timeout=1.0))
        finally:
            cloud.agents["hv2"].resume()


@pytest.mark.timeout(90)
def test_the_outcome_of_a_job_is_the_services_answer(cloud: Cluster) -> None:
    """``job.outcome``: what every front end is told of a job, the same whoever asks."""
    cloud.agents["hv3"].pause()
    try:
        with MasterClient(cloud.control_socket) as client:
            outcome = client.run(make_target("*"), "test.ping", [], {}, 1.0)
            told = client.request(OutcomeRequest(outcome.jid))
    finally:
        cloud.agents["hv3"].resume()
    assert not outcome.complete and set(outcome.answered) == {"hv1", "hv2"}
    assert set(outcome.missing) == {"hv3"} and outcome.missing["hv3"] == told["silent"]["hv3"]
    assert set(told["returns"]) == {"hv1", "hv2"} and told["expected"] == ["hv1", "hv2", "hv3"]
    assert RunRequest("test.ping", make_target("*")).timeout == 10.0  # the one default, the CLI's too


@pytest.mark.timeout(60)
def test_the_cli_prints_the_code_of_a_refusal_with_json(cloud: Cluster) -> None:
    result = cloud.cli("key", "finger", "nosuch", "--json", check=False)
    assert result.returncode == 1
    assert result.stderr.splitlines() == ["saltmarsh: no key for agent 'nosuch'"]
    assert json.loads(result.stdout) == {"error": {"code": "not_found", "message": "no key for agent 'nosuch'"}}
    human = cloud.cli("key", "finger", "nosuch", check=False)
    assert (human.returncode, human.stdout) == (1, "")  # without --json the one line is all there is


def test_every_request_type_has_its_operation_and_every_operation_its_help() -> None:
    import importlib
    import pkgutil

    from saltmarsh.master.service import types
    from saltmarsh.master.service.registry import OPERATIONS, load_all
    from saltmarsh.master.service.types import Request

    load_all()
    for module in pkgutil.iter_modules(types.__path__):
        importlib.import_module(f"{types.__name__}.{module.name}")
    kinds = {kind.command: kind for kind in _subclasses(Request)}
    assert set(kinds) == set(OPERATIONS)  # a request nobody answers, or an operation without its type, is a bug
    for command, op in OPERATIONS.items():
        assert op.request is kinds[command] and op.run.__doc__ and op.request.__doc__, command


def _subclasses(kind: type) -> list[type]:
    found = []
    for sub in kind.__subclasses__():
        found += [sub, *_subclasses(sub)]
    return found


@pytest.mark.timeout(60)
def test_the_control_socket_sends_the_code_beside_the_line(cluster: Cluster, zctx: zmq.Context[Any]) -> None:
    """Raw frames, as any client of the socket sees them: a code for a refusal read or unread."""
    client = zctx.socket(zmq.DEALER)
    client.setsockopt(zmq.LINGER, 0)
    client.connect(f"ipc://{cluster.control_socket}")
    try:
        replies = {}
        for request in ({"id": 1, "cmd": "job.show", "args": {"jid": "2" * 20}},  # read: the service's NotFound
                        {"id": 2, "cmd": "job.list", "args": {"limit": 0}},      # read: out of bounds
                        {"id": 3, "cmd": 5},                                     # unread: no schema fits
                        {"id": 4, "cmd": "key.list"}):
            client.send(encode(request))
            assert client.poll(5000), request
            reply = decode(client.recv(), dict[str, Any])
            replies[reply["id"]] = (reply["ok"], reply.get("code"))
    finally:
        client.close()
    assert replies == {1: (False, "not_found"), 2: (False, "invalid"), 3: (False, "refused"), 4: (True, "")}
