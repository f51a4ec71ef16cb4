"""Job targets: parse them from the CLI's words and decide whether an agent matches."""

from __future__ import annotations

import fnmatch

from .messages import Target

GLOB_CHARS = frozenset("*?[")


def is_glob(text: str) -> bool:
    """True if ``text`` holds a glob character."""
    return any(c in GLOB_CHARS for c in text)


def is_everyone(target: Target) -> bool:
    """True for the ``'*'`` target: the one job every accepted agent may read (broadcast, session key)."""
    return target.kind == "glob" and target.pattern == "*"


def parse_labels(text: str) -> dict[str, str]:
    """Parse ``role=hv,zone=a`` into a dict; ValueError names the bad part."""
    labels: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        if not sep or not key:
            raise ValueError(f"label {part!r} is not key=value")
        labels[key.strip()] = value.strip()
    if not labels:
        raise ValueError("no labels given")
    return labels


def make_target(text: str, *, as_list: bool = False, as_labels: bool = False) -> Target:
    """Turn the CLI's TARGET (with -L or -l) into a Target."""
    if as_list and as_labels:
        raise ValueError("-L and -l cannot be combined")
    if as_labels:
        return Target(kind="labels", labels=parse_labels(text))
    if as_list:
        ids = sorted({p.strip() for p in text.split(",") if p.strip()})
        if not ids:
            raise ValueError("empty list target")
        return Target(kind="list", ids=ids)
    if is_glob(text):
        return Target(kind="glob", pattern=text)
    return Target(kind="id", ids=[text])


def matches(target: Target, agent_id: str, labels: dict[str, str]) -> bool:
    """True if the agent ``agent_id`` with ``labels`` is one the target names."""
    if target.kind in ("id", "list"):
        return agent_id in target.ids
    if target.kind == "glob":
        return fnmatch.fnmatchcase(agent_id, target.pattern)
    return all(labels.get(k) == v for k, v in target.labels.items())


def describe(target: Target) -> str:
    """The target as the operator typed it, for messages."""
    if target.kind == "labels":
        return "-l " + ",".join(f"{k}={v}" for k, v in sorted(target.labels.items()))
    if target.kind == "list":
        return "-L " + ",".join(target.ids)
    return target.pattern if target.kind == "glob" else target.ids[0]
