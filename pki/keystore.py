"""The master's store of agent public keys: pending, accepted or rejected.

One file per agent under ``<dir>/<state>/<id>`` holding the base64 public key,
as Salt does, so that an operator can inspect it with ls; the in-memory index
is the source of truth while the master runs and is rebuilt from disk at start.
A state change is a rename, so a crash never leaves an id in two states.
"""

from __future__ import annotations

import collections
import enum
import os
from dataclasses import dataclass
from pathlib import Path

from .errors import KeyConflict, KeyFileError
from .files import write_atomic
from .ids import validate_agent_id
from .keys import decode_public_key, encode_public_key, fingerprint


class KeyState(enum.StrEnum):
    """Where an agent key stands."""

    PENDING = "pending"
    ACCEPTED = "accepted"
    REJECTED = "rejected"


@dataclass(frozen=True)
class AgentKey:
    """An agent's public key and its state."""

    agent_id: str
    public_key: bytes
    state: KeyState

    @property
    def fingerprint(self) -> str:
        """Fingerprint of the public key."""
        return fingerprint(self.public_key)


class KeyStore:
    """Agent keys on disk with an in-memory index."""

    def __init__(self, directory: Path) -> None:
        self._dir = directory
        self._keys: dict[str, AgentKey] = {}
        self._counts: collections.Counter[KeyState] = collections.Counter()
        for state in KeyState:
            self._state_dir(state).mkdir(parents=True, exist_ok=True)
        os.chmod(directory, 0o700)
        self._load()

    def _state_dir(self, state: KeyState) -> Path:
        return self._dir / state.value

    def _load(self) -> None:
        for state in KeyState:
            for path in sorted(self._state_dir(state).iterdir()):
                if path.name.startswith("."):
                    continue
                agent_id = validate_agent_id(path.name)
                try:
                    key = decode_public_key(path.read_text())
                except ValueError as exc:
                    raise KeyFileError(f"{path}: {exc}") from exc
                self._keys[agent_id] = AgentKey(agent_id, key, state)
                self._counts[state] += 1

    def get(self, agent_id: str) -> AgentKey | None:
        """Return the key record for ``agent_id``, or None."""
        return self._keys.get(agent_id)

    def accepted_key(self, agent_id: str) -> bytes | None:
        """Return the public key of ``agent_id`` if it is accepted, else None."""
        record = self._keys.get(agent_id)
        if record is None or record.state is not KeyState.ACCEPTED:
            return None
        return record.public_key

    def all(self) -> list[AgentKey]:
        """Every key record, sorted by id."""
        return [self._keys[k] for k in sorted(self._keys)]

    def count(self, state: KeyState) -> int:
        """How many keys are in ``state`` (kept up to date, so asking costs nothing)."""
        return self._counts[state]

    def ids(self, state: KeyState) -> list[str]:
        """Sorted ids in one state."""
        return [k.agent_id for k in self.all() if k.state is state]

    def submit(self, agent_id: str, public_key: bytes) -> tuple[KeyState, bool]:
        """Record a submitted key; return (state, newly_pending).

        A key that differs from the one already held for this id raises
        KeyConflict and changes nothing: the first key wins until an operator
        deletes it, so nobody can replace a pending or accepted agent's key.
        """
        validate_agent_id(agent_id)
        record = self._keys.get(agent_id)
        if record is not None:
            if record.public_key != public_key:
                raise KeyConflict(
                    f"agent {agent_id} submitted key {fingerprint(public_key)} but the store holds "
                    f"{record.fingerprint} ({record.state.value}); delete the old key to replace it"
                )
            return record.state, False
        write_atomic(self._path(agent_id, KeyState.PENDING), encode_public_key(public_key).encode())
        self._keys[agent_id] = AgentKey(agent_id, public_key, KeyState.PENDING)
        self._counts[KeyState.PENDING] += 1
        return KeyState.PENDING, True

    def set_state(self, agent_id: str, state: KeyState) -> AgentKey:
        """Move a known key to ``state``; KeyError if the id is unknown."""
        record = self._require(agent_id)
        if record.state is not state:
            os.replace(self._path(agent_id, record.state), self._path(agent_id, state))
            self._counts[record.state] -= 1
            self._counts[state] += 1
            record = AgentKey(agent_id, record.public_key, state)
            self._keys[agent_id] = record
        return record

    def delete(self, agent_id: str) -> AgentKey:
        """Remove a key entirely; KeyError if the id is unknown."""
        record = self._require(agent_id)
        self._path(agent_id, record.state).unlink(missing_ok=True)
        del self._keys[agent_id]
        self._counts[record.state] -= 1
        return record

    def _require(self, agent_id: str) -> AgentKey:
        validate_agent_id(agent_id)
        record = self._keys.get(agent_id)
        if record is None:
            raise KeyError(agent_id)
        return record

    def _path(self, agent_id: str, state: KeyState) -> Path:
        return self._state_dir(state) / agent_id
