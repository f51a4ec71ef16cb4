"""Publish-channel topics: ZeroMQ filters by prefix, so every topic ends with a NUL.

Without the terminator, an agent subscribed to ``hv1`` would also receive
``hv10``'s jobs (it would drop them after decrypting, but it should never see them).
"""

BROADCAST = b"*\x00"


def agent_topic(agent_id: str) -> bytes:
    """The topic on which jobs aimed at one named agent are published."""
    return b"@" + agent_id.encode() + b"\x00"
