"""``host.setup``: bring this host to the states the master sends, through the privileged setup helper.

The job itself runs in the agent, unprivileged: it checks the request, hands the job as the
master signed it (ctx.job_proof) to the helper
(agent/states/helper.py) and fires ``saltmarsh/host/<id>/setup/<state>`` as each result comes.
It tells the helper the master's address, so that a bridge that moves the route to it is
guarded, and answers the helper's question after such a change by reaching the master again.
"""

from __future__ import annotations

import socket
from typing import Any

import msgspec

from saltmarsh.protocol.codec import to_builtins
from saltmarsh.protocol.states import SetupRequest, StateResult, host_setup_tag

from ..errors import FunctionError, StateError
from ..regroup import missing_groups
from ..states.client import run_via_helper
from ..states.wire import HelperRequest
from . import FunctionContext, function


@function("host.setup", proven=True)
def setup(ctx: FunctionContext, states: list[Any], dry_run: bool = False) -> dict[str, Any]:
    """Apply ``states`` in order (``dry_run``: report what would change, change nothing); each state's result."""
    try:
        msgspec.convert({"states": states, "dry_run": dry_run}, SetupRequest)  # a clear error before the helper
    except msgspec.ValidationError as exc:
        raise FunctionError(f"host.setup: invalid states: {exc}") from exc
    if ctx.job_proof is None:
        raise FunctionError("host.setup runs only as a job the master signed (the helper checks it)")
    request = HelperRequest(proof=ctx.job_proof, master_ip=master_ip(ctx.master.host))
    results: list[dict[str, Any]] = []

    def on_result(result: StateResult) -> None:
        data = to_builtins(result)
        results.append(data)
        ctx.fire_event(host_setup_tag(ctx.agent_id, result.name), data)

    done = run_via_helper(ctx.setup_socket, request, on_result, lambda _state, seconds: ctx.reach_master(seconds))
    if done.error:
        raise StateError(done.error)
    restart = None
    if not dry_run and (groups := missing_groups()):
        # A group_member state gave this user a group (libvirt's): the agent has it from its next start.
        restart = f"to take up the group(s) {', '.join(groups)} host setup gave its user"
        ctx.restart_when_idle(restart)
    return {"os_family": done.os_family, "dry_run": dry_run, "results": results,
            **({"agent_restart": restart} if restart else {})}


def master_ip(host: str) -> str:
    """The master's address as this host reaches it ("" if it does not resolve: then no change is guarded)."""
    try:
        return str(socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)[0][4][0])
    except (OSError, IndexError):
        return ""
