"""Exceptions raised by the protocol layer.

    ProtocolError                 any frame or message we refuse
    ├── MalformedFrame            not our envelope, bad msgpack, schema violation
    ├── OversizedFrame            larger than the configured frame limit
    ├── BadSignature              signature does not verify with the sender's key
    ├── UnknownSender             no key is known for the claimed sender
    ├── StaleFrame                timestamp outside the freshness window
    ├── ReplayedFrame             nonce already seen inside the window
    ├── UndecryptableBody         decryption failed (wrong or rotated key)
    └── UnknownSessionKey         published with a session key we do not hold yet

Every ProtocolError carries a one-line reason that daemons log as is; foreign
errors (msgspec, nacl) are translated here, once, with ``raise ... from exc``.
"""


class ProtocolError(Exception):
    """A frame or message that must be refused; ``str(exc)`` is the log reason."""


class MalformedFrame(ProtocolError):
    """Raised when bytes are not a well-formed envelope or violate a schema."""


class OversizedFrame(ProtocolError):
    """Raised when a frame is larger than the configured limit."""


class BadSignature(ProtocolError):
    """Raised when the Ed25519 signature does not verify."""


class UnknownSender(ProtocolError):
    """Raised when no verification key is known for the claimed sender."""


class StaleFrame(ProtocolError):
    """Raised when the frame's timestamp lies outside the freshness window."""


class ReplayedFrame(ProtocolError):
    """Raised when a (sender, nonce) pair is seen twice inside the window."""


class UndecryptableBody(ProtocolError):
    """Raised when a body cannot be decrypted with the expected key."""


class UnknownSessionKey(ProtocolError):
    """Raised when a published frame names a session key the agent lacks."""

    def __init__(self, key_id: bytes) -> None:
        super().__init__(f"published with session key {key_id.hex()} which this agent lacks")
        self.key_id = key_id


class ConfigError(Exception):
    """Raised at start-up for a config file that is unreadable, unknown keys, or bad values."""
