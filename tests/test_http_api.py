"""The HTTP API (master/http/): real master and agent processes, real HTTP on a loopback port (urllib).

Tokens are made with the CLI (``saltmarsh token create``) as an operator would. Asserted: every route's
happy path and its refusals in the one error shape; 401 without a token, with an unknown, an expired or
a revoked one (revocation takes effect at the next request); 403 naming the missing scope, and for a
token limited to ``web*`` the agents outside it; tokens survive a master restart; hostile input
(malformed JSON, a body over the bound, bad UTF-8, path traversal, an unknown path or method, a
client that never finishes its request head) is refused and the master keeps serving.
"""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .cluster import Cluster, free_port, wait_until
from .http_client import Api, error_of

pytestmark = pytest.mark.timeout(120)

AGENTS = ("web1", "web2", "db1")
MAX_BODY = 4096
HEADER_TIMEOUT = 2.0


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    port = free_port()
    base = tmp_path_factory.mktemp("http")
    cluster = Cluster(base, http={
        "listen": f"127.0.0.1:{port}", "max_body_bytes": MAX_BODY, "header_timeout_seconds": HEADER_TIMEOUT})
    cluster.start_master()
    try:
        cluster.start_agents(*AGENTS, virt={"vm_dir": str(base / "vms")})
        cluster.wait_answering(*AGENTS)
        wait_until(lambda: _answers(port), what="the HTTP API to listen")
        yield Api(cluster, port)
    finally:
        codes = cluster.stop()
        assert codes["master"] == 0, cluster.master.log()[-3000:]


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def test_no_token_an_unknown_one_or_another_scheme_gets_401_with_the_reason(api: Api) -> None:
    status, body, headers = api.call("GET", "/v1/agents")
    assert status == 401 and error_of(body)[0] == "unauthenticated"
    assert "Bearer" in headers.get("WWW-Authenticate", "")
    assert "Authorization" in error_of(body)[1]
    assert api.call("GET", "/v1/agents", "smt_not-a-token")[0] == 401
    request = urllib.request.Request(api.url + "/v1/agents", headers={"Authorization": "Basic dXNlcjpwdw=="})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code == 401
    wait_until(lambda: "refused: no Authorization header" in api.cluster.master.log(), what="the refusal logged")


def test_a_read_token_lists_and_shows_agents_and_may_not_run_jobs(api: Api) -> None:
    reader = api.token("reader", "agents:read")
    status, agents, _ = api.call("GET", "/v1/agents", reader)
    assert status == 200 and {agent["id"] for agent in agents} == set(AGENTS)
    assert all(agent["state"] == "up" for agent in agents)
    status, one, _ = api.call("GET", "/v1/agents/web1", reader)
    assert status == 200 and one["id"] == "web1"
    status, body, _ = api.call("GET", "/v1/agents/nosuch", reader)
    assert status == 404 and error_of(body)[0] == "not_found"
    status, body, _ = api.call("POST", "/v1/jobs", reader, {"target": "web1", "fun": "test.ping"})
    assert status == 403 and error_of(body) == ("forbidden", "token reader lacks the scope jobs:run")
    assert api.call("GET", "/v1/jobs", reader)[0] == 403
    wait_until(lambda: "http: GET /v1/agents 200 token=reader" in api.cluster.master.log(), what="the access log")


def test_a_job_started_over_http_answers_202_and_its_returns_are_waited_for(api: Api) -> None:
    runner = api.token("runner", "jobs:run,jobs:read")
    status, started, _ = api.call("POST", "/v1/jobs", runner, {"target": "*", "fun": "test.ping"})
    assert status == 202 and sorted(started["expected"]) == sorted(AGENTS)
    jid = started["jid"]
    status, outcome, _ = api.call("GET", f"/v1/jobs/{jid}/wait?timeout=20", runner)
    assert status == 200
    assert {agent: ret["result"] for agent, ret in outcome["returns"].items()} == dict.fromkeys(AGENTS, True)
    status, again, _ = api.call("GET", f"/v1/jobs/{jid}", runner)
    assert status == 200 and set(again["returns"]) == set(AGENTS)
    status, body, _ = api.call("GET", "/v1/jobs/00000000000000000000", runner)
    assert status == 404 and error_of(body)[0] == "not_found"
    status, body, _ = api.call("POST", "/v1/jobs", runner, {"target": "web1"})  # no fun
    assert status == 400 and error_of(body)[0] == "invalid"
    status, listed, _ = api.call("GET", "/v1/jobs?limit=5", runner)
    assert status == 200 and jid in json.dumps(listed)


def test_a_token_limited_to_web_agents_reaches_no_other(api: Api) -> None:
    web = api.token("web-only", "jobs:run,jobs:read,agents:read", "--target", "web*")
    status, body, _ = api.call("POST", "/v1/jobs", web, {"target": "*", "fun": "test.ping"})
    assert status == 403 and error_of(body)[0] == "forbidden" and "db1" in error_of(body)[1]
    assert api.call("POST", "/v1/jobs", web, {"target": "db1", "fun": "test.ping"})[0] == 403
    status, started, _ = api.call("POST", "/v1/jobs", web, {"target": "web*", "fun": "test.ping"})
    assert status == 202 and sorted(started["expected"]) == ["web1", "web2"]
    status, agents, _ = api.call("GET", "/v1/agents", web)
    assert status == 200 and sorted(agent["id"] for agent in agents) == ["web1", "web2"]


def test_expired_and_revoked_tokens_get_401_and_tokens_survive_a_master_restart(api: Api) -> None:
    kept = api.token("kept", "agents:read")
    doomed = api.token("doomed", "agents:read")
    made = time.time()
    short = api.token("short", "agents:read", "--ttl", "4")
    assert api.call("GET", "/v1/agents", short)[0] == 200
    wait_until(lambda: api.call("GET", "/v1/agents", short)[0] == 401, timeout=15, interval=0.2,
               what="the 4 s token to expire")
    assert time.time() - made >= 4.0
    status, body, _ = api.call("GET", "/v1/agents", short)
    assert status == 401 and "expired" in error_of(body)[1]

    assert api.call("GET", "/v1/agents", doomed)[0] == 200
    api.cluster.cli("token", "revoke", "doomed")
    revoked = time.monotonic()
    status, body, _ = api.call("GET", "/v1/agents", doomed)
    assert status == 401 and time.monotonic() - revoked < 1.0

    listed = json.loads(api.cluster.cli("token", "list", "--json").stdout)
    assert "doomed" not in {t["name"] for t in listed} and {"kept", "short"} <= {t["name"] for t in listed}
    assert kept not in api.cluster.cli("token", "list").stdout  # only the hash is kept
    stored = (api.cluster.master_dir / "state" / "jobs.sqlite").read_bytes()
    assert kept.encode() not in stored

    assert api.cluster.master.stop() == 0
    api.cluster.start_master()
    wait_until(lambda: _answers(int(api.url.rsplit(":", 1)[1])), what="the API after the restart")
    assert api.call("GET", "/v1/agents", kept)[0] == 200
    assert api.call("GET", "/v1/agents", doomed)[0] == 401
    api.cluster.wait_answering(*AGENTS)


def test_hostile_input_is_refused_and_the_master_keeps_serving(api: Api) -> None:
    runner = api.token("hostile", "jobs:run,agents:read")
    status, body, _ = api.call("POST", "/v1/jobs", runner, b"{not json")
    assert status == 400 and error_of(body)[0] == "invalid"
    status, body, _ = api.call("POST", "/v1/jobs", runner, b"\xff\xfe{}")
    assert status == 400 and error_of(body)[0] == "invalid"
    status, body, _ = api.call("POST", "/v1/jobs", runner, b"[1, 2]")
    assert status == 400
    status, body, _ = api.call("POST", "/v1/jobs", runner, b"{" + b" " * MAX_BODY + b"}")
    assert status == 413 and error_of(body)[0] == "too_large"
    port = int(api.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as huge:  # declared huge: answered from its head
        huge.sendall(b"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + runner.encode()
                     + b"\r\nContent-Length: 1000000000\r\n\r\n{")
        assert huge.recv(4096).startswith(b"HTTP/1.1 413")
    status, body, _ = api.call("GET", "/v1/agents?target=%ff", runner)
    assert status == 400 and "UTF-8" in error_of(body)[1]
    for path in ("/v1/agents/..%2F..%2Fetc%2Fpasswd", "/v1/agents/%2e%2e", "/v1/agents/a%00b"):
        status, body, _ = api.call("GET", path, runner)
        assert status in (400, 404) and error_of(body)[0] in ("invalid", "not_found"), (path, body)
    status, body, _ = api.call("GET", "/v1/nothing-here", runner)
    assert status == 404 and error_of(body)[0] == "not_found"
    status, body, _ = api.call("DELETE", "/v1/agents", runner)
    assert status == 405 and error_of(body)[0] == "method_not_allowed"

    # A client that never finishes its request head is cut off; others are served meanwhile.
    with socket.create_connection(("127.0.0.1", port), timeout=HEADER_TIMEOUT * 5) as slow:
        slow.sendall(b"GET /v1/agents HTTP/1.1\r\nHost: x\r\n")
        assert api.call("GET", "/v1/agents", runner)[0] == 200
        started = time.monotonic()
        assert slow.recv(1) == b""  # closed by the master
        assert time.monotonic() - started <= HEADER_TIMEOUT * 3
    assert api.cluster.master.alive()
    assert api.call("GET", "/v1/agents", runner)[0] == 200


def test_the_api_refuses_a_non_loopback_address_at_start(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path, http={"listen": "0.0.0.0:4680"})
    done = cluster.cli("key", "list", check=False)  # the CLI reads the same master.yaml
    assert done.returncode != 0 and "loopback" in done.stderr


def test_the_openapi_document_names_every_route_with_its_scope(api: Api) -> None:
    from saltmarsh.master.http.openapi import openapi_path
    from saltmarsh.master.http.routes import OPERATION_ROUTES, ROUTES, WAIT_ROUTE

    status, doc, _ = api.call("GET", "/v1/openapi.json")
    assert status == 200 and doc["openapi"].startswith("3.")
    for route in (*ROUTES, WAIT_ROUTE, *OPERATION_ROUTES):
        operation = doc["paths"][openapi_path(route)][route.method.lower()]
        assert operation["x-saltmarsh-scope"] == route.scope
        assert str(route.status) in operation["responses"]
    run = doc["paths"]["/v1/jobs"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert "#/components/schemas/" in run["$ref"]
    assert {"fun", "target"} <= set(doc["components"]["schemas"][run["$ref"].rsplit("/", 1)[1]]["required"])


def test_every_route_without_parameters_answers_a_token_with_its_scope(api: Api) -> None:
    from saltmarsh.master.http.routes import ROUTES

    plain = [route for route in ROUTES if route.method == "GET" and not route.params]
    everything = api.token("all-read", ",".join(sorted({route.scope for route in plain})))
    for route in plain:
        status, body, _ = api.call("GET", route.path, everything)
        assert status == 200, (route.path, body)
        assert not (isinstance(body, dict) and "error" in body), (route.path, body)
    status, body, _ = api.call("GET", "/v1/hosts", api.token("jobs-only", "jobs:read"))
    assert status == 403 and error_of(body)[1].endswith("vms:read")


def _samples(text: str) -> dict[str, float]:
    """``name{labels}`` -> value of every sample line of a Prometheus text page."""
    found = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            series, _, value = line.rpartition(" ")
            found[series] = float(value)
    return found


def test_metrics_in_prometheus_format_for_a_metrics_token_only(api: Api) -> None:
    import zmq

    watcher = api.token("prometheus", "metrics:read")
    runner = api.token("metrics-runner", "jobs:run,jobs:read")
    assert api.call("GET", "/v1/agents", watcher)[0] == 403  # a monitoring token reads nothing else
    assert api.call("GET", "/metrics", runner)[0] == 403
    status, body, _ = api.call("GET", "/metrics")
    assert status == 401 and error_of(body)[0] == "unauthenticated"

    jid = api.call("POST", "/v1/jobs", runner, {"target": "*", "fun": "test.ping"})[1]["jid"]
    api.call("GET", f"/v1/jobs/{jid}/wait?timeout=20", runner)
    with zmq.Context() as ctx, ctx.socket(zmq.DEALER) as bad:  # a frame the request channel must refuse
        bad.setsockopt(zmq.LINGER, 0)
        bad.connect(f"tcp://127.0.0.1:{api.cluster.request_port}")
        bad.send(b"not an envelope")
        time.sleep(0.01)  # let libzmq hand the frame over before the socket closes

    def page() -> dict[str, float]:
        request = urllib.request.Request(api.url + "/metrics", headers={"Authorization": f"Bearer {watcher}"})
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            return _samples(response.read().decode())

    def counted() -> dict[str, float] | None:
        samples = page()
        return samples if any(k.startswith("saltmarsh_request_rejections_total{") for k in samples) else None

    samples = wait_until(counted, what="the rejection counted")
    assert samples['saltmarsh_agents{state="up"}'] == len(AGENTS)
    assert samples['saltmarsh_job_returns_total{fun="test.ping",outcome="success"}'] >= len(AGENTS)
    assert samples['saltmarsh_job_duration_seconds_count{fun="test.ping"}'] >= len(AGENTS)
    assert samples['saltmarsh_job_duration_seconds_bucket{fun="test.ping",le="+Inf"}'] >= len(AGENTS)
    assert samples["saltmarsh_events_total"] > 0
    assert samples["saltmarsh_migrations_in_progress"] == 0
    for agent in AGENTS:  # libvirt's test driver: one running VM ("test") per hypervisor
        assert samples[f'saltmarsh_hypervisor_free_memory_mib{{hypervisor="{agent}"}}'] > 0
        assert samples[f'saltmarsh_vms{{hypervisor="{agent}",state="running"}}'] >= 1
        assert f'saltmarsh_vms{{hypervisor="{agent}",state="shutoff"}}' in samples  # every state, zero or not
    wait_until(lambda: "http: GET /metrics 200 token=prometheus" in api.cluster.master.log(), what="the access log")


def test_with_tls_the_api_serves_a_certificate_from_the_masters_ca(tmp_path: Path) -> None:
    import ssl

    from saltmarsh.master.config import load_master_config

    port = free_port()
    cluster = Cluster(tmp_path, http={"listen": f"127.0.0.1:{port}", "tls": True})
    cluster.start_master()
    try:
        wait_until(lambda: _answers(port), what="the HTTPS API")
        token = cluster.cli("token", "create", "tls", "--scope", "agents:read").stdout.splitlines()[0]
        ca = cluster.master_dir / "state" / "pki" / "ca" / "ca.crt"
        context = ssl.create_default_context(cafile=str(ca))
        for host in ("127.0.0.1", "localhost"):  # both are among the certificate's names
            request = urllib.request.Request(f"https://{host}:{port}/v1/agents",
                                             headers={"Authorization": f"Bearer {token}"})
            with urllib.request.urlopen(request, timeout=10, context=context) as response:
                assert response.status == 200 and json.loads(response.read()) == []
        key = cluster.master_dir / "state" / "pki" / "http" / "api.key"
        assert key.stat().st_mode & 0o777 == 0o600
        with pytest.raises(urllib.error.URLError):  # no trust in the CA: refused by the client
            urllib.request.urlopen(f"https://127.0.0.1:{port}/v1/openapi.json", timeout=10,
                                   context=ssl.create_default_context())
        with pytest.raises((urllib.error.URLError, ConnectionError)):  # plain HTTP gets no answer
            urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/openapi.json", timeout=10)
        first = (cluster.master_dir / "state" / "pki" / "http" / "api.crt").read_bytes()
        assert cluster.master.stop() == 0
        cluster.start_master()  # the certificate is kept across a restart, not issued again
        wait_until(lambda: _answers(port), what="the HTTPS API again")
        assert (cluster.master_dir / "state" / "pki" / "http" / "api.crt").read_bytes() == first
    finally:
        cluster.stop()
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "master.yaml").write_text(f"http: {{listen: '0.0.0.0:{port}', tls: true}}\n")
    settings = load_master_config(tmp_path / "other").http
    assert settings is not None and settings.tls is not None  # any address, once it is TLS


def test_keys_over_http_accept_a_pending_agent_and_show_fingerprints(api: Api) -> None:
    admin = api.token("key-admin", "keys:read,keys:write")
    reader = api.token("key-reader", "keys:read")
    api.cluster.start_agent("late1")
    wait_until(lambda: "late1" in api.call("GET", "/v1/keys", reader)[1]["pending"], what="late1 pending")
    status, body, _ = api.call("POST", "/v1/keys/late1/accept", reader)
    assert status == 403 and error_of(body)[1].endswith("keys:write")
    assert api.call("POST", "/v1/keys/late1/accept", admin)[0] == 200
    assert "late1" in api.call("GET", "/v1/keys", reader)[1]["accepted"]
    api.cluster.wait_answering("late1")
    status, finger, _ = api.call("GET", "/v1/keys/late1/finger", reader)
    assert status == 200 and "late1" in json.dumps(finger)
    assert api.call("GET", "/v1/finger", reader)[0] == 200
    status, issued, _ = api.call("POST", "/v1/keys/guest9/token", admin, {"ttl": 60})
    assert status == 200 and "guest9" in json.dumps(issued)
    assert api.cluster.agents.pop("late1").stop() == 0
    assert api.call("DELETE", "/v1/keys/late1", admin)[0] == 200
    assert "late1" not in json.dumps(api.call("GET", "/v1/keys", reader)[1])
    status, body, _ = api.call("DELETE", "/v1/keys/late1", admin)
    assert status == 404 and error_of(body)[0] == "not_found"


def test_vm_calls_run_as_operations_seen_only_by_their_token(api: Api) -> None:
    admin = api.token("vm-admin", "vms:read,vms:write")
    other = api.token("vm-other", "vms:read,vms:write")
    web = api.token("vm-web", "vms:read,vms:write", "--target", "web*")
    status, started, _ = api.call("POST", "/v1/vms", admin, {"name": "h1", "cpus": 1, "memory_mib": 64,
                                                             "host": "web1"})
    assert status == 202 and started["operation"]["status"] == "running", started
    op_id = started["operation"]["id"]
    status, done, _ = api.call("GET", f"/v1/operations/{op_id}/wait?timeout=60", admin)
    assert status == 200 and done["status"] == "succeeded", done["error"]
    assert api.call("GET", f"/v1/operations/{op_id}", other)[0] == 404  # another token's: not shown
    status, body, _ = api.call("DELETE", f"/v1/operations/{op_id}", admin)
    assert status == 409 and error_of(body)[0] == "conflict"  # it has ended

    status, started, _ = api.call("POST", "/v1/vms/h1/stop", admin)
    assert status == 202
    done = api.call("GET", f"/v1/operations/{started['operation']['id']}/wait?timeout=60", admin)[1]
    assert done["status"] == "succeeded", done
    # The inventory learns the new state from libvirt's own event, a moment after the operation's return.
    wait_until(lambda: api.call("GET", "/v1/vms/query?name=h1", admin)[1]["web1"]["vm_info"]["h1"]["state"]
               == "shutoff", what="h1 shut off in the inventory")

    # A migration to a host that does not exist fails, and says why, in the one error shape.
    started = api.call("POST", "/v1/vms/h1/migrate", admin, {"target": "nosuch"})[1]
    failed = api.call("GET", f"/v1/operations/{started['operation']['id']}/wait?timeout=60", admin)[1]
    assert failed["status"] == "failed" and failed["error"]["code"] in ("not_found", "refused", "unavailable"), failed

    # A token limited to web* reaches h1 (on web1) but may not create a VM without naming its host.
    assert api.call("GET", "/v1/vms/h1/console", web)[0] in (200, 404, 422, 503)
    status, body, _ = api.call("POST", "/v1/vms", web, {"name": "h2", "cpus": 1, "memory_mib": 64})
    assert status == 403 and "host" in error_of(body)[1]
    status, body, _ = api.call("POST", "/v1/vms", web, {"name": "h2", "cpus": 1, "memory_mib": 64, "host": "db1"})
    assert status == 403
    started = api.call("POST", "/v1/vms/h1/purge", admin)[1]
    assert api.call("GET", f"/v1/operations/{started['operation']['id']}/wait?timeout=60", admin)[1]["status"] \
        == "succeeded"
    status, body, _ = api.call("POST", "/v1/vms/h1/start", web)
    assert status == 404 and error_of(body)[0] == "not_found"  # purged: no such VM


def _sse_until(api: Api, token: str, query: str, last_tag_suffix: str, timeout: float = 30) -> list[dict[str, Any]]:
    """The events an SSE subscription replays and streams, up to the first whose tag ends with the suffix."""
    request = urllib.request.Request(f"{api.url}/v1/events?{query}", headers={"Authorization": f"Bearer {token}"})
    events: list[dict[str, Any]] = []
    with urllib.request.urlopen(request, timeout=timeout) as stream:
        while not events or not events[-1]["tag"].endswith(last_tag_suffix):
            line = stream.readline().decode()
            assert line, "the stream ended first"
            if line.startswith("data: "):
                events.append(json.loads(line[6:]))
    return events


def test_jobs_are_killed_and_batches_rolled_over_http(api: Api) -> None:
    runner = api.token("killer-runner", "jobs:run,jobs:read,events:read")
    killer = api.token("killer", "jobs:write")
    jid = api.call("POST", "/v1/jobs", runner, {"target": "db1", "fun": "test.sleep", "args": [600],
                                                "timeout": 600})[1]["jid"]
    wait_until(lambda: [r["jid"] for r in api.call("GET", "/v1/jobs/running?target=db1", runner)[1]["running"]
                        .get("db1", [])] == [jid] or None, what="the sleep running on db1")
    status, body, _ = api.call("POST", f"/v1/jobs/{jid}/kill", runner, {})
    assert status == 403 and "jobs:write" in error_of(body)[1]
    status, body, _ = api.call("POST", f"/v1/jobs/{jid}/kill", killer, {"target": "db1"})
    assert status == 200 and body["reports"]["db1"]["outcome"] == "killed", body
    ret = api.call("GET", f"/v1/jobs/{jid}/wait?timeout=20", runner)[1]["returns"]["db1"]
    assert ret["error"]["type"] == "Killed", ret

    status, started, _ = api.call("POST", "/v1/batches", runner, {"target": "*", "fun": "test.ping",
                                                                  "batch": {"count": 1}})
    assert status == 202 and started["size"] == 1 and sorted(started["expected"]) == sorted(AGENTS), started
    events = _sse_until(api, runner, f"tags=saltmarsh/batch/{started['batch']}/*&since=1", "/done")
    rets = [e["agent"] for e in events if "/ret/" in e["tag"]]
    assert sorted(rets) == sorted(AGENTS) and not events[-1]["data"]["not_started"], events
    # One at a time: each agent's start comes after the previous agent's return.
    kinds = [e["tag"].split("/")[3] for e in events if e["tag"].split("/")[3] in ("start", "ret")]
    assert kinds == ["start", "ret"] * len(AGENTS), kinds
    status, body, _ = api.call("POST", "/v1/batches", runner, {"target": "*", "fun": "test.ping", "batch": {}})
    assert status == 400 and error_of(body)[0] == "invalid"


def test_hosts_go_in_maintenance_and_agents_change_role_only_within_a_tokens_target(api: Api) -> None:
    hosts = api.token("hosts-admin", "hosts:write,agents:write,vms:read")
    web = api.token("hosts-web", "hosts:write,agents:read", "--target", "web*")
    status, body, _ = api.call("POST", "/v1/hosts/web2/maintenance", hosts, {"state": "on"})
    assert status == 200 and body == {"host": "web2", "maintenance": True}, body
    status, body, _ = api.call("POST", "/v1/hosts/db1/maintenance", web, {"state": "on"})
    assert status == 403 and "db1" in error_of(body)[1]
    assert api.call("POST", "/v1/hosts/web2/maintenance", web, {"state": "off"})[1]["maintenance"] is False
    status, body, _ = api.call("POST", "/v1/hosts/web2/maintenance", hosts, {"state": "sideways"})
    assert status == 400 and error_of(body)[0] == "invalid"
    assert api.call("GET", "/v1/agents/db1", web)[0] == 403  # one agent named in the path: held to web*
    assert api.call("GET", "/v1/agents/web1", web)[0] == 200
    status, body, _ = api.call("POST", "/v1/agents/db1/role", hosts, {"role": "guest"})
    assert status == 200 and body == {"id": "db1", "role": "guest"}, body
    assert "db1" not in api.call("GET", "/v1/hosts", hosts)[1]  # a guest is no hypervisor
    assert api.call("POST", "/v1/agents/db1/role", hosts, {"role": "hypervisor"})[1]["role"] == "hypervisor"
    wait_until(lambda: "db1" in api.call("GET", "/v1/hosts", hosts)[1] or None, what="db1 a hypervisor again")


HOSTILE_SEGMENTS = ("..%2F..%2Fetc%2Fpasswd", "%2e%2e", "a%00b", "%ff%fe", "x" * 300, "%0d%0aSet-Cookie:%20a=b")


def test_every_path_parameter_refuses_traversal_and_garbage_in_the_one_error_shape(api: Api) -> None:
    from saltmarsh.master.http.routes import ROUTES, SEGMENT
    from saltmarsh.master.http.scopes import SCOPES

    everything = api.token("hostile-all", ",".join(sorted(SCOPES)))
    checked = 0
    for route in ROUTES:
        if SEGMENT not in route.path:
            continue
        for segment in HOSTILE_SEGMENTS:
            path = route.path.replace(SEGMENT, segment)
            status, body, _ = api.call(route.method, path, everything, {} if route.method == "POST" else None)
            if status == 202 and "operation" in body:  # validated later, on the way: it must fail, not act
                op = api.call("GET", f"/v1/operations/{body['operation']['id']}/wait?timeout=30", everything)[1]
                assert op["status"] == "failed" and op["error"]["code"] != "internal", (path, op)
            else:
                assert 400 <= status < 500, (route.method, path, status, body)
                assert error_of(body)[0] != "internal", (path, body)
            checked += 1
    assert checked == len(HOSTILE_SEGMENTS) * sum(SEGMENT in route.path for route in ROUTES) > 0
    assert api.cluster.master.alive() and "Traceback" not in api.cluster.master.log()
    assert api.call("GET", "/v1/agents", everything)[0] == 200
