"""Host commands: host.setup (streams each state's progress as it is done)."""

from __future__ import annotations

from typing import Any

import msgspec

from saltmarsh.protocol.messages import Interval, Target
from saltmarsh.protocol.states import host_setup_tag

from . import STREAM_GRACE_SECONDS, CommandContext, command, parse_args


class SetupArgs(msgspec.Struct, forbid_unknown_fields=True):
    """``host setup`` arguments."""

    target: Target
    profile: str | None = None
    dry_run: bool = False
    timeout: Interval = 1800.0


@command("host.setup")
async def setup(ctx: CommandContext, args: dict[str, Any]) -> dict[str, Any]:
    """Bring the targeted hosts to their profiles (dry_run: only say what would change); per host, each state.

    The caller is streamed ``saltmarsh/host/<id>/setup/<state>`` of the targeted hosts as they come.
    """
    a = parse_args(args, SetupArgs)
    service = ctx.master.host_setup
    plan = service.plan(a.target, a.profile)
    for host in plan.hosts:
        ctx.subscribe(host_setup_tag(host, ""), a.timeout + STREAM_GRACE_SECONDS)
    return await service.run(plan, a.dry_run, a.timeout)
