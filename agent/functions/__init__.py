"""The agent's function registry: ``@function("family.name")``, one module per family.

A function takes a FunctionContext first, then the job's args and kwargs. It
runs in a worker thread, so it may block (libvirt calls do). Its docstring is
what ``sys.doc`` shows. Later families (``virt.*``) register the same way.

``@function(name, quick=True)`` puts a function in the agent's quick lane (agent/lanes.py):
threads of their own, so that a ping, ``sys.*``, ``host.info`` or ``job.*`` never waits
behind long jobs. Only functions that return in milliseconds belong there.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from saltmarsh.protocol.jobcontrol import LaneName
from saltmarsh.protocol.jobproof import JobProof

from ..errors import FunctionError
from ..jobtable import JobTable
from ..tls import LibvirtTls
from ..virt.host import LibvirtHost
from ..virt.images import ImageCache
from ..virt.profiles import VirtConfig

EventSink = Callable[[str, Any], None]


@dataclass(frozen=True)
class MasterAddress:
    """How this agent reaches its master (what a seeded VM's agent is told too)."""

    host: str
    publish_port: int
    request_port: int


@dataclass(frozen=True)
class FunctionContext:
    """What a function may use: who we are, libvirt, the virt settings, how to fire an event, the job table."""

    agent_id: str
    labels: dict[str, str]
    version: str
    fire_event: EventSink
    libvirt: LibvirtHost
    virt: VirtConfig
    images: ImageCache
    master: MasterAddress
    tls: LibvirtTls
    jobs: JobTable
    setup_socket: Path  # the privileged setup helper's socket (host.setup)
    # Blocks until a request to the master is answered (True) or ``seconds`` passed (False): the agent's word,
    # after a network change, that it is not stranded.
    reach_master: Callable[[float], bool]
    # Asks the agent to restart once no job is running, for the reason given (agent/regroup.py).
    restart_when_idle: Callable[[str], None]
    # The job as the master signed it: given to ``proven`` functions only, for the job they run.
    job_proof: JobProof | None = None


Function = Callable[..., Any]
REGISTRY: dict[str, Function] = {}
QUICK: set[str] = set()
PROVEN: set[str] = set()


def function(name: str, *, quick: bool = False, proven: bool = False) -> Callable[[Function], Function]:
    """Register ``fn`` under ``name`` (``family.name``); ``quick`` puts it in the quick lane.

    ``proven``: the function gets its job's signed frame (``ctx.job_proof``) to hand on to a
    process that trusts only the master (the setup helper).
    """

    def register(fn: Function) -> Function:
        if name in REGISTRY:
            raise ValueError(f"function {name} registered twice")
        REGISTRY[name] = fn
        if quick:
            QUICK.add(name)
        if proven:
            PROVEN.add(name)
        return fn

    return register


def lane_of(name: str) -> LaneName:
    """The lane a job of ``name`` runs in; an unknown name fails at once, so it goes in the quick one."""
    return "quick" if name in QUICK or name not in REGISTRY else "jobs"


def call(name: str, ctx: FunctionContext, args: list[Any], kwargs: dict[str, Any]) -> Any:
    """Run the function ``name``; FunctionError if it is unknown or the arguments do not fit."""
    fn = REGISTRY.get(name)
    if fn is None:
        raise FunctionError(f"no function {name!r} on this agent (see sys.list_functions)")
    try:
        _signature(name, fn).bind(ctx, *args, **kwargs)
    except TypeError as exc:
        raise FunctionError(f"{name}{usage(name)}: {exc}") from exc
    if not name.startswith(VIRT_FAMILY):
        return fn(ctx, *args, **kwargs)
    try:
        return fn(ctx, *args, **kwargs)
    finally:
        # A virt function may have changed the VMs, even one that failed half-way: the next
        # inventory check recomputes instead of trusting the digest of the last one.
        ctx.libvirt.touch()


VIRT_FAMILY = "virt."
_SIGNATURES: dict[str, inspect.Signature] = {}


def _signature(name: str, fn: Function) -> inspect.Signature:
    # inspect.signature costs tens of microseconds; a thousand swarm agents each pay it per ping.
    found = _SIGNATURES.get(name)
    if found is None:
        found = _SIGNATURES[name] = inspect.signature(fn)
    return found


def usage(name: str) -> str:
    """The parameters of ``name`` as ``(a, b=1)``, without the context."""
    params = list(inspect.signature(REGISTRY[name]).parameters.values())[1:]
    return "(" + ", ".join(str(p.replace(annotation=inspect.Parameter.empty)) for p in params) + ")"


def load_all() -> None:
    """Import every function module so that its functions register."""
    from ..virt import console, create, inventory, keys, lifecycle, migration, networks, snapshots  # noqa: F401
    from . import event, host, jobs, setup, system, testing  # noqa: F401
