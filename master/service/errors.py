"""The service layer's typed errors, and how each front end names them.

    CommandError (saltmarsh.master.errors)   a request the master cannot carry out
    └── ServiceError                          one of the kinds below; ``code`` is its stable name
        ├── NotFound      no such agent, key, job, VM, hypervisor, profile          "not_found"
        ├── Conflict      the state forbids it now (exists already, ambiguous, done) "conflict"
        ├── Unavailable   who must do it is down, unreachable or has no room         "unavailable"
        ├── TimedOut      who must do it did not answer in time                      "timed_out"
        ├── Refused       a rule forbids it, or the one who was asked said no        "refused"
        ├── Invalid       the request itself is malformed or out of bounds           "invalid"
        └── InternalError a bug in the master (never raised by a service on purpose)  "internal"

Components (controller, key manager, job router, migrations) raise these; the service lets them
through; each front end maps them once: the control socket sends ``code`` beside the message
(master/control/server.py), the CLI rebuilds the same class from it (``error_for``), and the HTTP API
answers with ``HTTP_STATUS[code]``. A bare CommandError (a component not yet typed) travels as
``refused`` (CommandError.code); anything else a service raises is a bug, answered as ``internal``.

Imports nothing but the master's base error: the CLI loads this on every call to the master.
"""

from __future__ import annotations

from typing import ClassVar

from ..errors import CommandError

__all__ = ["HTTP_STATUS", "KINDS", "Conflict", "InternalError", "Invalid", "NotFound", "Refused", "ServiceError",
           "TimedOut", "Unavailable", "error_for"]


class ServiceError(CommandError):
    """A typed refusal of the service layer; ``str(exc)`` is one line for the operator."""

    code: ClassVar[str] = "refused"


class NotFound(ServiceError):
    """Raised when the request names something the master does not know (agent, key, job, VM, host)."""

    code = "not_found"


class Conflict(ServiceError):
    """Raised when the state of things forbids the request now: it exists already, is ambiguous, or is over."""

    code = "conflict"


class Unavailable(ServiceError):
    """Raised when who must carry the request out is down or unreachable, or no host has room for it."""

    code = "unavailable"


class TimedOut(ServiceError):
    """Raised when who was asked did not answer within the request's timeout."""

    code = "timed_out"


class Refused(ServiceError):
    """Raised when a rule forbids the request (maintenance, a control frame too large), or an agent said no."""

    code = "refused"


class Invalid(ServiceError):
    """Raised when the request is malformed: a bad argument, a value out of bounds, an unknown operation."""

    code = "invalid"


class InternalError(ServiceError):
    """What a client raises when the master answered ``internal``: a bug there, logged with its traceback."""

    code = "internal"


KINDS: dict[str, type[ServiceError]] = {kind.code: kind for kind in (NotFound, Conflict, Unavailable, TimedOut,
                                                                     Refused, Invalid, InternalError)}

# The HTTP API's answer to each code (master/http, a later step, only reads this table). Refused
# is 422, not 403: 403 stays the API's own answer to a token without the scope, so a client tells
# "this token may not" from "the master will not, now, for this reason".
HTTP_STATUS: dict[str, int] = {
    NotFound.code: 404,
    Conflict.code: 409,
    Unavailable.code: 503,
    TimedOut.code: 504,
    Refused.code: 422,
    Invalid.code: 400,
    InternalError.code: 500,
}


def error_for(code: str, message: str) -> CommandError:
    """The typed error a front end's client raises for ``code`` (an unknown code: a plain CommandError)."""
    kind = KINDS.get(code)
    return kind(message) if kind is not None else CommandError(message)
