"""Exceptions raised by the pki package.

    PkiError                any key or key-store problem
    ├── InvalidAgentId      an id that is not a safe name (path separators, length, control chars)
    ├── KeyFileError        a key file is missing, unreadable, or not a key
    ├── KeyConflict         a different public key is submitted for an id that already has one
    └── CsrRefused          a CSR that is malformed, forged, or asks for a name the agent may not use
"""


class PkiError(Exception):
    """Base of every pki error; ``str(exc)`` is a one-line reason."""


class InvalidAgentId(PkiError, ValueError):
    """Raised when an agent id is not a safe name; checked before any path is built."""


class KeyFileError(PkiError, OSError):
    """Raised when a key file is missing, unreadable, or does not hold a key."""


class KeyConflict(PkiError):
    """Raised when an id already has a different key in the store."""


class CsrRefused(PkiError):
    """Raised when a certificate request is malformed, forged, or names a host the agent may not use."""
