"""Whether the setup helper does what a request asks: only a ``host.setup`` job the master signed, fresh, once.

The peer-credential check (helper.py) says a request comes from the agent's uid, but anything
running as that user could send one, and the helper is root. So the request carries the job as
the master published it (protocol/jobproof.py), and the states to run are read from that job,
never from the agent. The checks, each refusal with its reason:

* the signature verifies with the master's key. The helper pins that key itself, in its own
  root-only state directory, the first time it reads it from the agent's trust store (the
  agent pinned it the same way, or was given it); a trust store that says otherwise later is
  refused, since the agent's user can write that file and the helper's copy it cannot;
* the job is ``host.setup`` and its kwargs decode strictly as a SetupRequest;
* the frame was signed within ``window_seconds`` of now (the job may have queued on the agent);
* a run that changes the host: its jid was never served before. Jids are kept (on disk, so a
  restart forgets none) for as long as their frames could still pass the time check. A dry run
  changes nothing and shows only what the master asked to see, so the same signed dry run may
  be served again within its window (the swarm benchmark's agents share one helper and one jid).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

import msgspec

from saltmarsh.pki.files import write_atomic
from saltmarsh.pki.keys import decode_public_key, encode_public_key, fingerprint
from saltmarsh.protocol.errors import ProtocolError
from saltmarsh.protocol.jobproof import JobProof, open_job
from saltmarsh.protocol.limits import Limits
from saltmarsh.protocol.states import SetupRequest

from ..errors import SetupRefused

log = logging.getLogger(__name__)

FUNCTION = "host.setup"
MAX_USED = 4096  # jids inside one window: far more setups than any host gets


class MasterAuthority:
    """Checks forwarded jobs against the master's pinned key, the clock, and the jids already served."""

    def __init__(self, trust_store: Path, state_dir: Path, window_seconds: float,
                 clock: Callable[[], float] = time.time) -> None:
        self._trust_store = trust_store
        self._pinned = state_dir / "master.pub"
        self._used_file = state_dir / "used-jids.json"
        self._window = window_seconds
        self._clock = clock
        self._used: dict[str, float] = self._load_used()

    def check(self, proof: JobProof) -> SetupRequest:
        """The SetupRequest of the master's job in ``proof``; SetupRefused with the reason if it is not one to run."""
        key = self.master_key()
        try:
            header, job = open_job(proof, key, Limits())
        except ProtocolError as exc:
            raise SetupRefused(f"not a job signed by the master ({fingerprint(key)}): {exc}") from exc
        if job.fun != FUNCTION:
            raise SetupRefused(f"job {job.jid} is {job.fun}, not {FUNCTION}")
        age = self._clock() - header.ts
        if abs(age) > self._window:
            raise SetupRefused(f"job {job.jid} was signed {age:+.0f} s ago, outside the {self._window:.0f} s window")
        try:
            request = msgspec.convert(job.kwargs, SetupRequest)
        except msgspec.ValidationError as exc:
            raise SetupRefused(f"job {job.jid}: invalid states: {exc}") from exc
        if request.dry_run:
            return request
        self._forget_old()
        if job.jid in self._used:
            raise SetupRefused(f"job {job.jid} was already served: a replay")
        self._used[job.jid] = header.ts
        self._save_used()
        return request

    def master_key(self) -> bytes:
        """The master's key: the helper's pinned copy, else the agent's trust store's (then pinned)."""
        try:
            trusted = decode_public_key(self._trust_store.read_text())
        except (OSError, ValueError) as exc:
            trusted = None
            reason = f"{self._trust_store}: {exc}"
        if self._pinned.exists():
            pinned = decode_public_key(self._pinned.read_text())
            if trusted is not None and trusted != pinned:
                log.warning("the agent's trust store holds master key %s, the helper pinned %s: using the pinned",
                            fingerprint(trusted), fingerprint(pinned))
            return pinned
        if trusted is None:
            raise SetupRefused(f"no master key pinned yet and none readable: {reason}")
        write_atomic(self._pinned, encode_public_key(trusted).encode() + b"\n")
        log.info("pinned master key %s from %s", fingerprint(trusted), self._trust_store)
        return trusted

    def _forget_old(self) -> None:
        # A jid whose frame is past the window is refused by the time check anyway.
        horizon = self._clock() - 2 * self._window
        self._used = {jid: ts for jid, ts in self._used.items() if ts >= horizon}

    def _load_used(self) -> dict[str, float]:
        try:
            return msgspec.json.decode(self._used_file.read_bytes(), type=dict[str, float])
        except FileNotFoundError:
            return {}
        except (OSError, msgspec.DecodeError) as exc:
            log.error("%s unreadable (%s): starting with no jids served", self._used_file, exc)
            return {}

    def _save_used(self) -> None:
        if len(self._used) > MAX_USED:
            self._used = dict(sorted(self._used.items(), key=lambda item: item[1])[-MAX_USED:])
        write_atomic(self._used_file, msgspec.json.encode(self._used))
