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


ROUTES = (
    Route("GET", r"/v1/agents", "agent.list", "agents:read", summary="every known agent", targets=True),
    Route("GET", rf"/v1/agents/{SEGMENT}", "agent.show", "agents:read", ("id",), "one agent"),
    Route("GET", r"/v1/keys", "key.list", "keys:read", summary="agent keys by state"),
    Route("GET", r"/v1/jobs", "job.list", "jobs:read", summary="the newest jobs"),
    Route("POST", r"/v1/jobs", "run", "jobs:run", summary="start a job; 202 with its jid", status=202, body=True,
          targets=True),
    Route("GET", r"/v1/jobs/running", "job.running", "jobs:read", summary="jobs the agents still run",
          targets=True),
    Route("GET", rf"/v1/jobs/{SEGMENT}", "job.outcome", "jobs:read", ("jid",),
          "a job's returns so far, and why each missing agent is missing"),
    Route("GET", r"/v1/vms", "virt.list", "vms:read", summary="every hypervisor's VMs by state"),
    Route("GET", r"/v1/hosts", "virt.host_info", "vms:read", summary="every hypervisor's resources"),
    Route("GET", r"/v1/images", "image.list", "images:read", summary="images under the master's file roots"),
    Route("GET", r"/v1/pki", "pki.status", "pki:read", summary="the libvirt CA and the certificates it issued"),
)
# Routes the front end answers itself (no operation behind them).
WAIT_ROUTE = Route("GET", rf"/v1/jobs/{SEGMENT}/wait", "job.outcome", "jobs:read", ("jid",),
                   "a job's returns once every awaited agent answered or ?timeout=S passed")
