"""Master pinning: the agent trusts only the master key it was given or first saw."""

from __future__ import annotations

import logging
from pathlib import Path

from saltmarsh.pki.files import write_atomic
from saltmarsh.pki.keys import decode_public_key, encode_public_key, fingerprint

from .errors import RogueMaster

log = logging.getLogger(__name__)


class MasterTrust:
    """Holds the trusted master key; a configured fingerprint wins over the first-seen key."""

    def __init__(self, pinned_fingerprint: str | None, stored_path: Path) -> None:
        self._pinned = pinned_fingerprint
        self._path = stored_path
        self.key: bytes | None = None
        if stored_path.exists():
            self.key = decode_public_key(stored_path.read_text())
            if pinned_fingerprint and fingerprint(self.key) != pinned_fingerprint:
                log.warning("stored master key %s does not match the pinned fingerprint; ignoring it",
                            fingerprint(self.key))
                self.key = None

    def check(self, presented: bytes) -> bytes:
        """Return ``presented`` if it may be the master's key, else raise RogueMaster.

        Called before the frame's signature is verified; ``remember`` is called after.
        """
        if self.key is not None:
            if presented != self.key:
                raise RogueMaster(
                    f"master presented key {fingerprint(presented)} but this agent trusts "
                    f"{fingerprint(self.key)}: refusing it (delete {self._path} if the master really changed)"
                )
            return presented
        if self._pinned and fingerprint(presented) != self._pinned:
            raise RogueMaster(
                f"master presented key {fingerprint(presented)} but master_fingerprint pins "
                f"{self._pinned}: refusing it"
            )
        return presented

    def remember(self, verified: bytes) -> None:
        """Store the master key once a frame signed by it has verified (first use)."""
        if self.key is not None:
            return
        presented = verified
        write_atomic(self._path, encode_public_key(presented).encode() + b"\n")
        self.key = presented
        how = "matches the pinned fingerprint" if self._pinned else "trusted on first use"
        log.info("master key %s %s", fingerprint(presented), how)
