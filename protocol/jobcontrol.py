"""What both ends agree on about steering jobs: deadlines, the agents' job table, and kills.

A job's deadline is its ``timeout`` (Job.timeout), counted by the agent from the moment it
received the job; queued time counts. When it passes, the agent answers with a failed
return of error type TIMED_OUT and frees the job's worker slot, whatever the function is
doing. ``job.running`` (an agent function, run in the agent's quick lane) returns a list
of RunningJob; ``job.kill JID`` returns a KillReport, and the killed job's own return is a
failed one of error type KILLED.

The error types are plain strings in ErrorInfo.type, like the ``Interrupted`` of a job cut
short by an agent restart (agent/spool.py).
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from .bounds import RETURN_GRACE_SECONDS, TIMED_OUT
from .messages import FunctionName, Jid, Seconds

KILLED = "Killed"

# Where a job is in its agent: waiting for a worker of its lane, running in one, or given up
# on (timed out or killed) while its thread is still inside the call.
JobState = Literal["queued", "running", "abandoned"]
# The agent's two lanes of worker threads: cheap functions never wait behind long jobs.
LaneName = Literal["quick", "jobs"]
KillOutcome = Literal["killed", "not running", "already ended"]


class RunningJob(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """One job an agent holds (the result of ``job.running`` is a list of these).

    ``started`` is when the agent received it (seconds since the epoch), ``elapsed`` how long
    ago that was, ``deadline`` the seconds left before the agent gives up on it (0 once
    abandoned). ``children`` are the pids of child processes it runs (killed with it).
    """

    jid: Jid
    fun: FunctionName
    lane: LaneName
    state: JobState
    started: Seconds
    elapsed: Seconds
    deadline: Seconds = 0.0
    children: Annotated[list[int], msgspec.Meta(max_length=64)] = []
    reason: Annotated[str, msgspec.Meta(max_length=512)] = ""


class KillReport(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """What ``job.kill JID`` did on one agent: killed it (and how), or why there was nothing to kill.

    ``how`` says whether its child processes were killed and the job ended, or its thread was
    abandoned (a Python thread cannot be stopped: it stays inside its call, counted in
    ``abandoned``, and its result is dropped when it comes), or it was still waiting for a worker.
    """

    jid: Jid
    outcome: KillOutcome
    how: Annotated[str, msgspec.Meta(max_length=512)] = ""
    children: Annotated[list[int], msgspec.Meta(max_length=64)] = []
    abandoned: Annotated[int, msgspec.Meta(ge=0)] = 0


__all__ = ["KILLED", "RETURN_GRACE_SECONDS", "TIMED_OUT", "JobState", "KillReport", "LaneName", "RunningJob"]
