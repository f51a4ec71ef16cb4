"""Exceptions of the master package.

    MasterError                  anything the master refuses or cannot do
    ├── CommandError             an operator's request that cannot be carried out
    │   └── ServiceError         its typed kinds: NotFound, Conflict, Unavailable, TimedOut, Refused,
    │                            Invalid (master/service/errors.py, with their codes and HTTP statuses)
    └── NotRunning               the CLI found no master listening on the control socket

Protocol errors (saltmarsh.protocol.errors) are caught at the request
channel's boundary and logged; config errors (ConfigError) end start-up.
"""

from typing import ClassVar


class MasterError(Exception):
    """Base of the master's own errors; ``str(exc)`` is one line for the operator."""


class CommandError(MasterError):
    """Raised when an operator's request cannot be carried out; ``code`` names its kind (``refused`` if untyped)."""

    code: ClassVar[str] = "refused"


class NotRunning(MasterError):
    """Raised by the local client when no master answers on the control socket."""
