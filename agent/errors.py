"""Exceptions of the agent package.

    AgentError                 anything the agent refuses or cannot do
    ├── RogueMaster            a master presented a key other than the pinned or first-seen one
    ├── MasterUnavailable      no reply from the master within the request timeout
    ├── NotAuthenticated       the master refused us (key not accepted) or we hold no session key
    ├── SpoolError             the on-disk spool (returns, events, job journal) cannot be opened or written
    └── FunctionError          a job's function could not run: unknown function, bad arguments
        ├── LibvirtFailure     libvirt refused a call (what, which VM, libvirt's message)
        ├── VmNotFound         no VM of that name on this hypervisor
        ├── VmConflict         a VM of that name already exists
        ├── InvalidSpec        a VM spec that does not validate
        ├── StateError         a setup state could not be read or applied (the command, its message)
        │   └── RolledBack     a network change was undone: the agent did not reach the master again in time
        ├── HelperUnavailable  the privileged setup helper is not there, refused us, or broke off
        └── SetupRefused       (in the helper) a request that is not a fresh, unused host.setup job of the master

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


class SpoolError(AgentError, OSError):
    """Raised when the on-disk spool cannot be opened, read or written (also an OSError: fatal at start-up)."""


class FunctionError(AgentError):
    """Raised when a job names an unknown function or passes arguments it does not take."""


class LibvirtFailure(FunctionError):
    """Raised when libvirt refuses a call: what we tried, on which VM, and libvirt's own message."""

    def __init__(self, what: str, message: str, vm: str = "") -> None:
        self.what, self.vm, self.libvirt_message = what, vm, message
        super().__init__(f"{what} {vm}: {message}" if vm else f"{what}: {message}")


class VmNotFound(FunctionError):
    """Raised when a job names a VM this hypervisor does not have."""


class VmConflict(FunctionError):
    """Raised when a VM to be created already exists here."""


class InvalidSpec(FunctionError):
    """Raised when a VM spec (name, sizes, profiles, image) does not validate."""


class StateError(FunctionError):
    """Raised when a setup state cannot be read or applied: what was tried and why it did not work."""


class RolledBack(StateError):
    """Raised when a guarded network change was applied and then undone (its old config restored)."""


class SetupRefused(FunctionError):
    """Raised in the setup helper for a request it must not run: not signed by the master, stale, or replayed."""


class HelperUnavailable(FunctionError):
    """Raised when the setup helper's socket is missing, refuses this agent, or ends a run early."""
