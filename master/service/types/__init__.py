"""Typed requests and results of the service layer: what an operator can ask the master, and its answers.

One module per domain, as the service has (``types.jobs`` for ``service/jobs.py`` …), like incus's
``shared/api``: each front end builds these: the CLI (master/cli/, through master/control/client.py),
the control socket (master/control/server.py, which decodes a request's ``args`` into the type its
command names), and the HTTP API (master/http/, from a request's path, query and body). Each request
names its command (``command``) and carries its own defaults, so every default is written here, once:
a front end that leaves a field out gets the same request as one that types the CLI's. Light on
purpose (msgspec and the protocol's schemas only), and split so that a command loads only its own
domain's types: the CLI imports them on every call.
"""

from __future__ import annotations

from typing import ClassVar

import msgspec

# How long job.running, job.kill, job.show and agent.list wait for the agents they ask (they
# answer from their quick lane, in milliseconds, even with every worker stuck).
QUERY_TIMEOUT = 5.0


class Request(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """Base of every request; ``command`` is its name on the control socket (and its HTTP operation's id)."""

    command: ClassVar[str] = ""
