"""Exceptions of the master package.

    MasterError                  anything the master refuses or cannot do
    ├── CommandError             a control command that cannot be carried out (unknown key, bad target)
    └── NotRunning               the CLI found no master listening on the control socket

Protocol errors (saltmarsh.protocol.errors) are caught at the request
channel's boundary and logged; config errors (ConfigError) end start-up.
"""


class MasterError(Exception):
    """Base of the master's own errors; ``str(exc)`` is one line for the operator."""


class CommandError(MasterError):
    """Raised by a control command whose request cannot be carried out."""


class NotRunning(MasterError):
    """Raised by the local client when no master answers on the control socket."""
