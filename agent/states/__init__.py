"""Hypervisor setup states, one module per kind, each registered by subclassing Kind.

A kind answers the three questions of a state (protocol/states.py holds the requests):
``current`` what it is now, ``desired`` what it should be (both as named facets of text, so
the difference is a plain comparison), and ``apply`` make it so. The runner (runner.py) asks
them in that order, and asks ``current`` again after ``apply``: a state that still differs
has failed, whatever its commands said. These run in the privileged helper (helper.py),
never in the agent's own jobs.
"""

from __future__ import annotations

from typing import Any, ClassVar, Generic, TypeVar

from saltmarsh.protocol.states import Change, StateBase

from .system import System

S = TypeVar("S", bound=StateBase)
Facets = dict[str, str]
ABSENT = "-"


class Kind(Generic[S]):
    """Base of the state kinds: subclass with ``request = TheStateStruct`` to register."""

    request: ClassVar[type[StateBase]]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.request in KINDS:
            raise ValueError(f"state kind {cls.request.__name__} registered twice")
        KINDS[cls.request] = cls

    def __init__(self, system: System) -> None:
        self.system = system

    def current(self, state: S) -> Facets:
        """What the host has now, facet by facet."""
        raise NotImplementedError

    def desired(self, state: S) -> Facets:
        """What ``state`` wants, with the facet names of ``current``."""
        raise NotImplementedError

    def apply(self, state: S, changes: dict[str, Change]) -> None:
        """Make the facets in ``changes`` what the state wants; StateError if it cannot."""
        raise NotImplementedError

    def restarts(self, state: S) -> bool:
        """True if a change of a watched state makes this one act again (a running service restarts).

        The other kinds take ``watch`` as ordering and a requisite only.
        """
        return False

    def detail(self, state: S, changes: dict[str, Change]) -> str:
        """Extra text for people about ``changes`` (a file's diff); none by default."""
        return ""


KINDS: dict[type[StateBase], type[Kind[Any]]] = {}


def load_all() -> None:
    """Import every kind's module so that it registers."""
    from . import bridge, files, groups, libvirt_tls, packages, services, sysctl  # noqa: F401
