"""``host setup``: send each targeted hypervisor its profile's states (``host.setup``) and gather what came of them.

The hosts are grouped by profile (``--profile``, else their labels: master/hosts/profile.py) and
each group gets one job, all of them at once. The master only plans and gathers: the states
run on each host, in its privileged setup helper, and their progress comes back as events
(``saltmarsh/host/<id>/setup/<state>``) that the command streams to its caller. An agent whose
setup gave its user a group restarts to take it up (its result says ``agent_restart``); the
command waits for it to say hello again and gives ``agent_back_seconds`` (None: not back in time).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from saltmarsh.protocol.codec import to_builtins
from saltmarsh.protocol.messages import Target
from saltmarsh.protocol.targeting import describe

from ..agents.presence import Presence
from ..errors import CommandError
from ..jobs.router import JobRouter
from .profile import HostProfiles

FUNCTION = "host.setup"
# How long host setup waits for an agent that restarts to take up a new group (agent/regroup.py).
AGENT_BACK_SECONDS = 60.0
BACK_POLL_SECONDS = 0.2


@dataclass(frozen=True)
class SetupPlan:
    """Which hosts get which profile."""

    profiles: dict[str, list[str]]  # profile -> the ids of the hosts that are up
    down: dict[str, tuple[str, str]]  # host -> (profile, why it is not up): not sent a job, not waited for

    @property
    def hosts(self) -> list[str]:
        """Every host the plan sends a job to, sorted."""
        return sorted(host for hosts in self.profiles.values() for host in hosts)


class HostSetup:
    """Plans and runs ``host setup`` over the job router."""

    def __init__(self, jobs: JobRouter, presence: Presence, profiles: HostProfiles) -> None:
        self._jobs = jobs
        self._presence = presence
        self._profiles = profiles

    def plan(self, target: Target, profile: str | None) -> SetupPlan:
        """The profile of each targeted host; CommandError if none matches or the profile is unknown."""
        known = self._profiles.profiles
        if profile is not None and profile not in known:
            raise CommandError(f"no host profile {profile!r} in master.yaml (known: {', '.join(sorted(known))})")
        hosts = self._jobs.expected_agents(target)
        if not hosts:
            raise CommandError(f"no accepted agent matches target {describe(target)}")
        profiles: dict[str, list[str]] = {}
        down: dict[str, tuple[str, str]] = {}
        for host in hosts:
            chosen = profile or self._profiles.profile_for(self._presence.labels(host))
            if self._presence.is_up(host):
                profiles.setdefault(chosen, []).append(host)
            else:  # a setup may take half an hour: waiting that long for a host known to be down helps nobody
                down[host] = (chosen, self._presence.why_silent(host))
        return SetupPlan(profiles, down)

    async def run(self, plan: SetupPlan, dry_run: bool, timeout: float) -> dict[str, Any]:
        """Run every profile's job at once; per host its results, or why it has none."""
        outcomes = await asyncio.gather(*(self._run_profile(name, hosts, dry_run, timeout)
                                          for name, hosts in plan.profiles.items()))
        hosts: dict[str, Any] = {host: {"profile": name, "error": f"not up: {why}"}
                                 for host, (name, why) in plan.down.items()}
        for outcome in outcomes:
            hosts.update(outcome)
        return {"dry_run": dry_run, "hosts": dict(sorted(hosts.items()))}

    async def _run_profile(self, name: str, hosts: list[str], dry_run: bool, timeout: float) -> dict[str, Any]:
        states = to_builtins(self._profiles.profiles[name])
        _jid, returns = await self._jobs.run_and_wait(Target(kind="list", ids=hosts), FUNCTION,
                                                      {"states": states, "dry_run": dry_run}, timeout)
        answered = time.time()
        outcome: dict[str, Any] = {}
        for host in hosts:
            ret = returns.get(host)
            if ret is None:
                outcome[host] = {"profile": name, "error": f"no answer: {self._presence.why_silent(host)}"}
            elif not ret["success"]:
                error = ret.get("error") or {}
                outcome[host] = {"profile": name, "error": f"{error.get('type', 'Error')}: {error.get('message', '')}"}
            else:
                outcome[host] = {"profile": name, **ret["result"]}
        restarting = [host for host, result in outcome.items() if result.get("agent_restart")]
        back = await self._back_after_restart(restarting, answered)
        for host in restarting:
            outcome[host]["agent_back_seconds"] = back.get(host)
        return outcome

    async def _back_after_restart(self, hosts: list[str], since: float) -> dict[str, float]:
        """Wait (at most AGENT_BACK_SECONDS) for agents that restart after their setup to say hello again:
        host setup is over when the host answers jobs again, so the operator's next command reaches it.
        Seconds each took, for those back in time."""
        back: dict[str, float] = {}
        deadline = time.monotonic() + AGENT_BACK_SECONDS
        while len(back) < len(hosts) and time.monotonic() < deadline:
            for host in hosts:
                if host not in back and self._presence.hello_since(host, since):
                    back[host] = round(time.time() - since, 1)
            await asyncio.sleep(BACK_POLL_SECONDS)
        return back
