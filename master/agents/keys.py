"""Key acceptance: hello and heartbeat handling, and the operator's accept/reject/delete.

Rejecting or deleting an accepted key rotates the publish session key at
once, so the very next job is sealed with a key the cut-off agent never
receives (property 5). Agents still accepted get the new key pushed over
their authenticated request channel instead of all re-authenticating at
once; one that misses the push fetches it when it sees an unknown key id.

Submissions are what anyone can send, so what they can cost is bounded: at
most ``max_pending_keys`` keys wait as pending (a flood of fresh ids is
refused past it, before anything is written), and the warnings that refusals
log are rate-limited per reason.
"""

from __future__ import annotations

import logging

import nacl.exceptions

from saltmarsh.pki.errors import KeyConflict
from saltmarsh.pki.ids import validate_agent_id
from saltmarsh.pki.keys import Identity, fingerprint
from saltmarsh.pki.keystore import AgentKey, KeyState, KeyStore
from saltmarsh.protocol.messages import Ack, Heartbeat, Hello, Message, Refused, Welcome
from saltmarsh.protocol.ratelimit import LogRateLimit
from saltmarsh.protocol.tags import key_tag

from ..events.bus import EventBus
from ..service.errors import Invalid, NotFound
from ..wire.publisher import SessionKeys
from ..wire.request_channel import Request, RequestChannel
from .join_tokens import TokenStore
from .presence import Presence

log = logging.getLogger(__name__)


class KeyManager:
    """Decides what each key may do and carries out the operator's key commands."""

    def __init__(
        self,
        store: KeyStore,
        bus: EventBus,
        sessions: SessionKeys,
        presence: Presence,
        channel: RequestChannel,
        identity: Identity,
        tokens: TokenStore,
        *,
        auto_accept: bool,
        heartbeat_seconds: float,
        max_pending_keys: int,
    ) -> None:
        self._store = store
        self._bus = bus
        self._sessions = sessions
        self._presence = presence
        self._channel = channel
        self._identity = identity
        self._tokens = tokens
        self._auto_accept = auto_accept
        self._heartbeat = heartbeat_seconds
        self._max_pending = max_pending_keys
        self._refusals = LogRateLimit(log)

    @property
    def store(self) -> KeyStore:
        """The key store (read-only use outside this class)."""
        return self._store

    async def on_hello(self, req: Request) -> Message:
        """Handle key submission: record the key, answer with its state and the session key."""
        assert isinstance(req.body, Hello)
        agent_id = validate_agent_id(req.agent_id)
        if self._store.get(agent_id) is None and self._store.count(KeyState.PENDING) >= self._max_pending:
            self._refusals.warning("pending-cap", "refused key submission from %s: %d keys are already pending "
                                   "(max_pending_keys); accept, reject or delete some", agent_id, self._max_pending)
            return Refused(reason="too many keys are pending on the master; try again later")
        try:
            state, new = self._store.submit(agent_id, req.public_key)
        except KeyConflict as exc:
            self._refusals.warning("conflict", "refused key submission: %s", exc)
            return Welcome(state="conflict", reason="another key is registered for this id")
        if new:
            log.info("agent %s submitted key %s: pending", agent_id, fingerprint(req.public_key))
            self._bus.fire(key_tag(agent_id, "pending"), {"id": agent_id})
            if self._auto_accept:
                state = self._set_state(agent_id, KeyState.ACCEPTED).state
        if state is KeyState.PENDING and req.body.token:
            state = self._redeem(agent_id, req.body.token)
        if state is KeyState.ACCEPTED:
            self._presence.hello(agent_id, req.body.labels, req.body.version, req.routing_id, req.peer)
        else:
            self._presence.note_unaccepted(agent_id, req.body.labels, req.body.version, req.routing_id, req.peer)
        return self._welcome(state)

    def _redeem(self, agent_id: str, sealed: bytes) -> KeyState:
        try:
            token = self._identity.unseal(sealed).decode()
        except (nacl.exceptions.CryptoError, UnicodeDecodeError):
            self._refusals.warning("token", "refused join token from %s: it is not sealed to this master's key",
                                   agent_id)
            return KeyState.PENDING
        refusal = self._tokens.redeem(agent_id, token)
        if refusal:
            self._refusals.warning("token", "refused join token from %s: %s", agent_id, refusal)
            return KeyState.PENDING
        log.info("agent %s joined with a one-time token (a guest, not a hypervisor, until "
                 "'saltmarsh host role %s hypervisor')", agent_id, agent_id)
        self._tokens.mark_guest(agent_id)
        return self._set_state(agent_id, KeyState.ACCEPTED).state

    def issue_token(self, agent_id: str, ttl: float) -> tuple[str, float]:
        """A one-time join token for ``agent_id``."""
        _valid_command_id(agent_id, "key token")
        return self._tokens.issue(agent_id, ttl)

    def revoke_tokens(self, agent_id: str) -> int:
        """Revoke the unused join tokens of ``agent_id`` (its VM was purged); return how many."""
        revoked = self._tokens.revoke(agent_id)
        if revoked:
            log.info("revoked %d unused join token(s) of %s", revoked, agent_id)
        return revoked

    def is_guest(self, agent_id: str) -> bool:
        """True for an agent that joined by token and is not (yet) a hypervisor."""
        return self._tokens.is_guest(agent_id)

    def set_guest(self, agent_id: str, guest: bool) -> None:
        """Record whether ``agent_id`` is a guest (True) or a hypervisor (False)."""
        self._tokens.set_guest(agent_id, guest)

    async def on_heartbeat(self, req: Request) -> Ack:
        """Handle a heartbeat; the reply names the current session key id."""
        assert isinstance(req.body, Heartbeat)
        self._presence.heartbeat(req.agent_id, req.routing_id)
        return Ack(key_id=self._sessions.current.key_id)

    def _welcome(self, state: KeyState) -> Welcome:
        key = self._sessions.current.key if state is KeyState.ACCEPTED else b""
        return Welcome(state=state.value, session_key=key, heartbeat_seconds=self._heartbeat)

    async def accept(self, agent_ids: list[str]) -> list[str]:
        """Accept pending (or rejected) keys; each accepted agent is told at once."""
        done = []
        for agent_id in agent_ids:
            self._set_state(agent_id, KeyState.ACCEPTED)
            done.append(agent_id)
            await self._push(agent_id)
        return done

    def pending(self) -> list[str]:
        """Ids whose keys are pending."""
        return self._store.ids(KeyState.PENDING)

    async def reject(self, agent_id: str) -> None:
        """Reject a key; an accepted agent is cut off from the next job."""
        was = self._require(agent_id).state
        await self._push_refusal(agent_id, "key rejected")
        self._set_state(agent_id, KeyState.REJECTED)
        self._presence.mark_down(agent_id, "key rejected")
        if was is KeyState.ACCEPTED:
            await self._rotate()

    async def delete(self, agent_id: str) -> None:
        """Delete a key; an accepted agent is cut off from the next job."""
        record = self._require(agent_id)
        await self._push_refusal(agent_id, "key deleted")
        self._store.delete(agent_id)
        self._presence.forget(agent_id)
        self._tokens.set_guest(agent_id, False)  # whoever submits this id next starts afresh
        log.info("key of %s deleted", agent_id)
        self._bus.fire(key_tag(agent_id, "deleted"), {"id": agent_id})
        if record.state is KeyState.ACCEPTED:
            await self._rotate()

    def _require(self, agent_id: str) -> AgentKey:
        _valid_command_id(agent_id, "key command")
        record = self._store.get(agent_id)
        if record is None:
            raise NotFound(f"no key for agent {agent_id!r}")
        return record

    def _set_state(self, agent_id: str, state: KeyState) -> AgentKey:
        self._require(agent_id)
        record = self._store.set_state(agent_id, state)
        log.info("key of %s (%s) is now %s", agent_id, record.fingerprint, state.value)
        self._bus.fire(key_tag(agent_id, state.value), {"id": agent_id})
        return record

    async def _rotate(self) -> None:
        self._sessions.rotate()
        for agent_id in self._presence.up_agents():
            await self._push(agent_id)

    async def _push_refusal(self, agent_id: str, reason: str) -> None:
        # Tell a cut-off agent at once, while we still know its key; it then submits its key
        # again (and waits as pending) instead of heartbeating into silence.
        routing_id = self._presence.routing_id(agent_id)
        key = self._store.accepted_key(agent_id)
        if routing_id is not None and key is not None:
            await self._channel.send(routing_id, key, Refused(reason=reason))

    async def _push(self, agent_id: str) -> None:
        routing_id = self._presence.routing_id(agent_id)
        key = self._store.accepted_key(agent_id)
        if routing_id is None or key is None:
            return
        await self._channel.send(routing_id, key, self._welcome(KeyState.ACCEPTED))


def _valid_command_id(agent_id: str, what: str) -> None:
    """Invalid (and a logged reason) for an id that is not a safe name, before any path is built."""
    try:
        validate_agent_id(agent_id)
    except ValueError as exc:
        # The control socket is local and owner-only, so this is an operator's typo or a script's
        # bug, not a flood: every one is logged.
        log.warning("refused %s: %s", what, exc)
        raise Invalid(str(exc)) from exc
