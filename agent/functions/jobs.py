"""``job.*``: the jobs this agent holds, and ending one (Salt's saltutil.running and kill_job).

Both run in the quick lane, so they answer while every worker of the jobs lane is stuck.
"""

from __future__ import annotations

import re

from saltmarsh.protocol.jobcontrol import KillReport, RunningJob

from ..errors import FunctionError
from ..jobtable import current_job
from . import FunctionContext, function

JID = re.compile(r"^[0-9]{20,26}\Z")


@function("job.running", quick=True)
def running(ctx: FunctionContext) -> list[RunningJob]:
    """Every job this agent holds, oldest first: queued, running, or abandoned in a stuck call."""
    me = current_job()
    return ctx.jobs.running(exclude=me.job.jid if me is not None else "")


@function("job.kill", quick=True)
def kill(ctx: FunctionContext, jid: str) -> KillReport:
    """End job ``jid``: its child processes are killed, or its thread is abandoned; its return says Killed."""
    if not JID.match(str(jid)):
        raise FunctionError(f"{str(jid)[:64]!r} is not a job id")
    return ctx.jobs.kill(str(jid))
