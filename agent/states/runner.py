"""Runs a SetupRequest's states in order: for each, what is it now, what would change, change it, check it.

A state whose facets all match is ``unchanged``, with no command run to change it; a dry run
stops at ``would_change``; an applied state is read again and is ``changed`` only if nothing
differs any more (else ``failed``, with what is left). A failed state does not stop the run:
the others still report, except those that watch it, which fail with it (a service is not
restarted onto a config that did not get written). Kinds that react to a watch (services) add
a ``restart`` change when a watched state changed or would change in this run. A guarded
network change that was undone (RolledBack) is ``rolled_back``, and its watchers fail as for
a failed state.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import msgspec

from saltmarsh.protocol.states import Change, PkgState, SetupDone, SetupRequest, State, StateResult, Status

from ..errors import RolledBack, StateError
from . import KINDS, Kind, load_all
from .services import RESTART
from .system import System

log = logging.getLogger(__name__)

OnResult = Callable[[StateResult], None]


def run_setup(request: SetupRequest, system: System, on_result: OnResult) -> SetupDone:
    """Run every state of ``request`` that is for this host, giving each result to ``on_result`` as it is known."""
    load_all()
    try:
        family = system.os_family()
    except StateError as exc:
        return SetupDone(error=str(exc))
    states = for_family(request.states, family)
    fault = order_fault(states)
    if fault:
        return SetupDone(os_family=family, error=fault)
    outcome: dict[str, str] = {}
    kinds: dict[type[Any], Kind[Any]] = {}
    for state in states:
        result = run_state(state, system, kinds, outcome, request.dry_run)
        outcome[state.name] = result.status
        log.info("state %s (%s): %s%s", state.name, result.kind, result.status,
                 f": {result.reason}" if result.reason else "")
        on_result(result)
    return SetupDone(os_family=family)


def for_family(states: list[State], family: str) -> list[State]:
    """The states for a host of ``family``: the other family's packages left out, and watches of them too."""
    other = {s.name for s in states if isinstance(s, PkgState) and s.os_family not in (None, family)}
    return [msgspec.structs.replace(s, watch=[w for w in s.watch if w not in other]) if set(s.watch) & other else s
            for s in states if s.name not in other]


def order_fault(states: list[State]) -> str:
    """Why the states cannot run in this order (a name twice, a watch of no earlier state), or ""."""
    seen: set[str] = set()
    for state in states:
        if state.name in seen:
            return f"two states are named {state.name!r}"
        missing = [name for name in state.watch if name not in seen]
        if missing:
            return f"state {state.name!r} watches {', '.join(missing)}, which is no state before it"
        seen.add(state.name)
    return ""


def run_state(state: State, system: System, kinds: dict[type[Any], Kind[Any]], outcome: dict[str, str],
              dry_run: bool) -> StateResult:
    """One state: read it, compare, and (unless ``dry_run``) apply and read it again."""
    kind_name = type(state).__struct_config__.tag
    started = time.monotonic()

    def result(status: Status, changes: dict[str, Change] | None = None, **extra: Any) -> StateResult:
        return StateResult(name=state.name, kind=str(kind_name), status=status,
                           changes=changes or {}, seconds=round(time.monotonic() - started, 3), **extra)

    failed = [name for name in state.watch if outcome.get(name) in ("failed", "rolled_back")]
    if failed:
        return result("failed", reason=f"watched state {', '.join(failed)} failed")
    changes: dict[str, Change] = {}
    detail = ""
    try:
        kind = kinds.get(type(state))
        if kind is None:
            kind = kinds[type(state)] = KINDS[type(state)](system)
        changes = differences(kind.current(state), kind.desired(state))
        touched = [name for name in state.watch if outcome.get(name) in ("changed", "would_change")]
        if touched and kind.restarts(state) and "running" not in changes:
            changes[RESTART] = Change("-", f"{', '.join(touched)} changed")
        if not changes:
            return result("unchanged")
        detail = kind.detail(state, changes)
        if dry_run:
            return result("would_change", changes, detail=detail)
        kind.apply(state, changes)
        left = differences(kind.current(state), kind.desired(state))
        if left:
            still = ", ".join(f"{facet} is {change.old}" for facet, change in left.items())
            return result("failed", left, detail=detail, reason=f"still differs after applying: {still}")
        return result("changed", changes, detail=detail)
    except RolledBack as exc:
        return result("rolled_back", changes, detail=detail, reason=str(exc))
    except StateError as exc:
        return result("failed", reason=str(exc))


def differences(now: dict[str, str], wanted: dict[str, str]) -> dict[str, Change]:
    """The facets whose value now is not the wanted one."""
    return {facet: Change(now.get(facet, "-"), value) for facet, value in wanted.items() if now.get(facet) != value}
