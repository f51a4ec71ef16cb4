"""The rules of a job's completion, in plain Python: who was awaited, who answered, who is missing.

``OutcomeRules`` reads the fields every job outcome has (jid, expected, returns, silent, offline,
unknown, not_started, lost) and says what follows from them. types.JobOutcome (the msgspec Struct
the service answers with) takes its rules from here, and so does the CLI's fast path
(master/cli/fast.py: ``Outcome``), which imports no msgspec: the rules are written once, and both
paths print the same outcome.
"""

from __future__ import annotations

from saltmarsh.protocol.bounds import TIMED_OUT

# typing and dataclasses cost every CLI start some 10 ms; only the type checker needs typing (it
# reads this name as True), and Outcome's constructor is written out.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def error_type(ret: dict[str, Any]) -> str:
    """The error type of a failed return ("" for a success)."""
    error = ret.get("error")
    return str(error.get("type", "")) if not ret.get("success") and isinstance(error, dict) else ""


class OutcomeRules:
    """What follows from a job outcome's fields; a mixin of fields declared, not stored (a Struct may take it)."""

    jid: str
    expected: list[str]
    returns: dict[str, dict[str, Any]]
    silent: dict[str, str]
    offline: dict[str, str]
    unknown: dict[str, str]
    not_started: dict[str, str]
    lost: str

    @property
    def awaited(self) -> set[str]:
        """The agents worth waiting for: expected and not known to be down."""
        return set(self.expected) - set(self.offline)

    @property
    def waiting(self) -> bool:
        """True while an awaited agent has not answered (nor given up)."""
        return not self.awaited <= set(self.returns)

    @property
    def timed_out(self) -> dict[str, str]:
        """Agents that gave up on the job at its deadline, with what each said."""
        return {agent: f"timed out on the agent: {ret['error']['message']}"
                for agent, ret in self.returns.items() if error_type(ret) == TIMED_OUT}

    @property
    def answered(self) -> dict[str, dict[str, Any]]:
        """The returns of the agents that answered (with a result, or an error other than TimedOut)."""
        return {agent: ret for agent, ret in self.returns.items() if error_type(ret) != TIMED_OUT}

    @property
    def unanswered(self) -> list[str]:
        """Expected agents without a return."""
        return [agent for agent in self.expected if agent not in self.returns]

    @property
    def missing(self) -> dict[str, str]:
        """Every agent the job named that did not answer, with the reason."""
        return {**self.unknown, **self.silent, **self.timed_out,
                **{agent: f"not started: {why}" for agent, why in self.not_started.items()}}

    @property
    def complete(self) -> bool:
        """True if every agent the job named answered."""
        return not self.lost and not self.missing and set(self.expected) <= set(self.returns)

    def master_gone(self, reason: str) -> None:
        """The master went away under the wait: every agent still without a return is silent for that."""
        self.lost = reason
        self.silent = {agent: "the master went away before it answered" for agent in self.unanswered}


class Outcome(OutcomeRules):
    """A job outcome as plain data (JSON from the stream socket), with the same rules as types.JobOutcome."""

    def __init__(self, jid: str, expected: list[str], *, returns: dict[str, dict[str, Any]] | None = None,
                 offline: dict[str, str] | None = None, unknown: dict[str, str] | None = None) -> None:
        self.jid = jid
        self.expected = expected
        self.returns = returns or {}
        self.silent = {}
        self.offline = offline or {}
        self.unknown = unknown or {}
        self.not_started = {}
        self.lost = ""
