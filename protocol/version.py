"""The software version and the wire-protocol version."""

VERSION = "0.1.0"
# Bumped when the envelope or a schema changes incompatibly; a frame with
# another version is rejected with a clear reason instead of misparsed.
PROTOCOL_VERSION = 3
