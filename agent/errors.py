"""Exceptions of the agent package.

    AgentError                 anything the agent refuses or cannot do
    ├── RogueMaster            a master presented a key other than the pinned or first-seen one
    ├── MasterUnavailable      no reply from the master within the request timeout
    ├── NotAuthenticated       the master refused us (key not accepted) or we hold no session key
    └── FunctionError          a job's function could not run: unknown function, bad arguments
        └── LibvirtFailure     libvirt refused a call (what, which object, libvirt's message)

Config errors are saltmarsh.protocol.errors.ConfigError; protocol errors are
caught where frames arrive and logged.
"""

from saltmarsh.protocol.errors import ProtocolError


class AgentError(Exception):
    """Base of the agent's own errors; ``str(exc)`` is a one-line reason."""


class RogueMaster(AgentError, ProtocolError):
    """Raised when the master's key does not match the pinned fingerprint or the first-seen key."""


class MasterUnavailable(AgentError):
    """Raised when a request gets no reply within its timeout."""


class NotAuthenticated(AgentError):
    """Raised when the master refuses a request because our key is not accepted."""


class FunctionError(AgentError):
    """Raised when a job names an unknown function or passes arguments it does not take."""


class LibvirtFailure(FunctionError):
    """Raised when libvirt refuses a call; carries libvirt's own message."""
