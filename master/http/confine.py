"""Turning a request's path, query and body into the fields of a typed request, and holding a
target-limited token to its agents."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import msgspec

from saltmarsh.protocol.messages import Target
from saltmarsh.protocol.targeting import matches

from ..service.errors import Invalid, NotFound
from .base import ApiError
from .tokens import ApiToken

if TYPE_CHECKING:
    from ..server import Master


def query_value(text: str) -> Any:
    """A query parameter: a number where it reads as one (timeout=5), else the text."""
    try:
        return json.loads(text) if text[:1].isdigit() else text
    except ValueError:
        return text


def confine(master: Master, token: ApiToken, fields: dict[str, Any]) -> None:
    """Hold a target-limited token to its pattern: the request's agents, resolved now, must all fit it.

    The target is replaced by the list of agents it names now, so an agent that joins later under a
    name outside the pattern is never reached through it. Without a target (list everyone) the
    token's pattern becomes the target.
    """
    if not token.target:
        return
    target = fields.get("target")
    if target is None:
        fields["target"] = Target(kind="glob", pattern=token.target)
        return
    if not isinstance(target, Target):
        try:
            target = msgspec.convert(target, Target)
        except msgspec.ValidationError as exc:
            raise ApiError(400, Invalid.code, f"bad target: {exc}") from exc
    named = [key.agent_id for key in master.keys.store.all()
             if matches(target, key.agent_id, master.presence.labels(key.agent_id))]
    outside = [agent for agent in named if not token.may_reach(agent)]
    if outside:
        raise ApiError(403, "forbidden", f"token {token.name} may reach only {token.target!r}, not "
                                         f"{', '.join(sorted(outside)[:10])}")
    if not named:
        raise NotFound("no agent matches the target")
    fields["target"] = Target(kind="list", ids=sorted(named))


def confine_agent(token: ApiToken, agent_id: Any) -> None:
    """Hold a target-limited token to its pattern where a request names one agent (a key, a host)."""
    if token.target and not (isinstance(agent_id, str) and token.may_reach(agent_id)):
        raise ApiError(403, "forbidden", f"token {token.name} may reach only {token.target!r}, not {agent_id!r}")


def confine_vm(master: Master, token: ApiToken, fields: dict[str, Any], creating: bool) -> None:
    """Hold a target-limited token to VMs on its hypervisors: the VM's host (or, creating one, the host
    the request names: placement may not choose one outside the pattern) must fit the pattern."""
    if not token.target:
        return
    if creating:
        host = fields.get("host")
        if not isinstance(host, str) or not token.may_reach(host):
            raise ApiError(403, "forbidden", f"token {token.name} may create VMs only with a host matching "
                                             f"{token.target!r} named in the request")
        return
    name = fields.get("name")
    hosts = master.inventory.locate(name) if isinstance(name, str) else []
    if not hosts:
        raise NotFound(f"no VM named {name!r}")
    outside = [host for host in hosts if not token.may_reach(host)]
    if outside:
        raise ApiError(403, "forbidden", f"token {token.name} may reach only {token.target!r}; VM {name} is on "
                                         f"{', '.join(sorted(outside))}")
