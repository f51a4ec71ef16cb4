"""The API's routes: each a method and a path under /v1/, the service operation it calls, and its scope.

A route's request is built from its path parameters, its query string and its JSON body, in that
order of precedence (a path parameter can't be overridden by the body), then decoded into the
operation's typed request, which validates every field (master/service/types/). ``status`` is what
a success answers: 202 for a job started and left running (its result is at /v1/jobs/<jid>).
"""

from __future__ import annotations

from dataclasses import dataclass

# A path parameter: one segment, no '/', and nothing percent-decoded into one (tornado's groups).
SEGMENT = r"([^/]+)"


@dataclass(frozen=True)
class Route:
    """One endpoint."""

    method: str
    path: str  # a regex with SEGMENT groups, in the order of ``params``
    command: str  # the service operation (master/service/registry.py)
    scope: str  # what the token needs (master/http/scopes.py)
    params: tuple[str, ...] = ()  # the request fields the path's groups fill
    summary: str = ""
    status: int = 200
    body: bool = False  # whether the request takes a JSON body
    targets: bool = False  # whether the request names agents (checked against a token's target pattern)
    vm: bool = False  # whether the request names a VM (its hypervisor is checked against a token's target)
    operation: bool = False  # runs as an operation: 202 with its id at once (master/http/operations.py)
    agent: str = ""  # the request field naming one agent (checked against a token's target pattern)


ROUTES = (
    Route("GET", r"/v1/agents", "agent.list", "agents:read", summary="every known agent", targets=True),
    Route("GET", rf"/v1/agents/{SEGMENT}", "agent.show", "agents:read", ("id",), "one agent", agent="id"),
    Route("POST", rf"/v1/agents/{SEGMENT}/role", "host.role", "agents:write", ("id",),
          "make an agent a hypervisor or a guest (body.role)", body=True, agent="id"),
    Route("GET", r"/v1/keys", "key.list", "keys:read", summary="agent keys by state"),
    Route("GET", r"/v1/jobs", "job.list", "jobs:read", summary="the newest jobs"),
    Route("POST", r"/v1/jobs", "run", "jobs:run", summary="start a job; 202 with its jid", status=202, body=True,
          targets=True),
    Route("GET", r"/v1/jobs/running", "job.running", "jobs:read", summary="jobs the agents still run",
          targets=True),
    Route("POST", r"/v1/batches", "run.batch", "jobs:run",
          summary="roll a job over the target, body.batch (N or P%) at a time; 202 with the batch id (its progress "
                  "is at /v1/events?tags=saltmarsh/batch/<batch>/*)", status=202, body=True, targets=True),
    Route("POST", rf"/v1/jobs/{SEGMENT}/kill", "job.kill", "jobs:write", ("jid",),
          "kill a running job on body.target, or on every agent still running it", body=True, targets=True),
    Route("GET", rf"/v1/jobs/{SEGMENT}", "job.outcome", "jobs:read", ("jid",),
          "a job's returns so far, and why each missing agent is missing"),
    Route("GET", r"/v1/vms", "virt.list", "vms:read", summary="every hypervisor's VMs by state"),
    Route("GET", r"/v1/hosts", "virt.host_info", "vms:read", summary="every hypervisor's resources"),
    Route("POST", r"/v1/hosts/setup", "host.setup", "hosts:write",
          summary="bring the targeted hosts to their profiles (body.dry_run: only say what would change; an "
                  "operation, its progress at /v1/events?tags=saltmarsh/host/*)", status=202, body=True,
          targets=True, operation=True),
    Route("POST", rf"/v1/hosts/{SEGMENT}/maintenance", "host.maintenance", "hosts:write", ("host",),
          "put a hypervisor in maintenance or take it out (body.state: on or off)", body=True, agent="host"),
    Route("GET", r"/v1/images", "image.list", "images:read", summary="images under the master's file roots"),
    Route("GET", r"/v1/pki", "pki.status", "pki:read", summary="the libvirt CA and the certificates it issued"),
    Route("GET", r"/v1/finger", "key.finger", "keys:read", summary="the master's and every agent's fingerprint"),
    Route("GET", rf"/v1/keys/{SEGMENT}/finger", "key.finger", "keys:read", ("id",), "one agent key's fingerprint",
          agent="id"),
    Route("POST", rf"/v1/keys/{SEGMENT}/accept", "key.accept", "keys:write", ("id",), "accept a pending key",
          agent="id"),
    Route("POST", rf"/v1/keys/{SEGMENT}/reject", "key.reject", "keys:write", ("id",), "reject a key", agent="id"),
    Route("DELETE", rf"/v1/keys/{SEGMENT}", "key.delete", "keys:write", ("id",), "delete a key", agent="id"),
    Route("POST", rf"/v1/keys/{SEGMENT}/token", "key.token", "keys:write", ("id",),
          "a one-time join token for an agent id", body=True, agent="id"),
    Route("GET", r"/v1/vms/query", "virt.query", "vms:read", summary="VMs in detail (?name= for one)"),
    Route("POST", r"/v1/vms", "virt.init", "vms:write", summary="create a VM (an operation)", status=202, body=True,
          operation=True),
    Route("GET", rf"/v1/vms/{SEGMENT}/console", "virt.console_log", "vms:read", ("name",),
          "the tail of a VM's serial console (?lines=)", vm=True),
    Route("POST", rf"/v1/vms/{SEGMENT}/migrate", "virt.migrate", "vms:write", ("name",),
          "live-migrate a VM to body.target (an operation; DELETE aborts it)", status=202, body=True, vm=True,
          operation=True),
    Route("POST", rf"/v1/vms/{SEGMENT}/migrate/abort", "virt.migrate_abort", "vms:write", ("name",),
          "abort a VM's running migration", vm=True),
    Route("POST", rf"/v1/vms/{SEGMENT}/{SEGMENT}", "virt.op", "vms:write", ("name", "op"),
          "start, shutdown, stop, reboot, reset, pause, resume, purge, info or vnc (an operation)", status=202,
          body=True, vm=True, operation=True),
)
# Routes the front end answers itself (no service operation of their own behind them).
WAIT_ROUTE = Route("GET", rf"/v1/jobs/{SEGMENT}/wait", "job.outcome", "jobs:read", ("jid",),
                   "a job's returns once every awaited agent answered or ?timeout=S passed")
# An operation is seen by the token that started it, whatever its scopes now.
OPERATION_ROUTES = (
    Route("GET", rf"/v1/operations/{SEGMENT}", "operation.show", "", ("id",), "an operation: status, result, error"),
    Route("DELETE", rf"/v1/operations/{SEGMENT}", "operation.cancel", "", ("id",),
          "cancel an operation where it can be (a migration is aborted)"),
    Route("GET", rf"/v1/operations/{SEGMENT}/wait", "operation.wait", "", ("id",),
          "an operation once it ended, or after ?timeout=S"),
)
