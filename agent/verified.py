"""Published frames whose signature this process has already checked, shared by a swarm's members.

A job goes out as one signed frame that every agent it is for receives (on broadcast, or the
same frame on each agent's own topic, beside a key wrapped for it: master/wire/publisher.py). One
real agent checks it once on its own CPU. A swarm (agent/swarm.py) runs hundreds of agents in
one process, and each checked the same bytes against the same key: at 1,000 agents on 2 cores
that was a fifth of the swarm's CPU per ``'*' test.ping``, spent beside the master's. So the
members share what this object remembers: a frame is taken as verified only if the very same
key, signed header, signature and body were verified in this process before (a pure function's
result, remembered). Freshness and replay are still checked by each member for itself.
"""

from __future__ import annotations

import collections

from saltmarsh.protocol.envelope import Header, Outer, verify

# More than the frames a swarm's members receive at once (one per job in flight); each holds one frame.
REMEMBERED = 64


class VerifiedFrames:
    """``verify`` with the last REMEMBERED frames' results kept."""

    def __init__(self, size: int = REMEMBERED) -> None:
        self._size = size
        self._headers: collections.OrderedDict[tuple[bytes, bytes, bytes], Header] = collections.OrderedDict()

    def verify(self, outer: Outer, public_key: bytes) -> Header:
        """The frame's verified header, as protocol.envelope.verify gives it (BadSignature and all)."""
        key = (public_key, outer.signed, outer.signature)
        header = self._headers.get(key)
        if header is not None and header.body == outer.body and header.sender == outer.sender:
            self._headers.move_to_end(key)
            return header
        header = verify(outer, public_key)
        self._headers[key] = header
        if len(self._headers) > self._size:
            self._headers.popitem(last=False)
        return header
