"""``saltmarsh-setup-helper``: the one root process of a hypervisor's agent, and all it does is run setup states.

The agent's own unit is sandboxed and not root (systemd/saltmarsh-agent.service): no job it
runs can install a package or write /etc. Setting a host up needs exactly that, so it is done
here, in a separate small daemon (systemd/saltmarsh-setup-helper.service) that:

* listens on a Unix socket in a directory only root and the agent's group can enter (0750),
  the socket itself 0660, and checks each connection's peer credentials (SO_PEERCRED): only
  the agent's uid is served, every other is refused and logged (DENIED uid ...);
* reads one bounded frame, a HelperRequest: the ``host.setup`` job as the master signed it, which
  must verify with the master's key the helper pinned, be fresh, and never have been served
  before (authority.py); its kwargs decode strictly into a SetupRequest (protocol/states.py):
  typed states (pkg, file, sysctl, group_member, service, bridge), nothing else, no command
  line, no function name, no Python; anything else is refused, with the reason logged;
* runs them (agent/states/runner.py) one run at a time, in a worker thread, and streams each
  state's result back as it is known.

Anything running as the agent's user can thus ask for nothing the master did not sign for this
host, no other local user can ask for anything, and a master's job runs once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pwd
import socket
import struct
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import msgspec

from saltmarsh.protocol.codec import decode, encode
from saltmarsh.protocol.configfile import LogLevel, PositiveSeconds, load_yaml_config, resolve_dir
from saltmarsh.protocol.daemon import DaemonSpec, daemon_main
from saltmarsh.protocol.errors import ConfigError, MalformedFrame
from saltmarsh.protocol.states import SetupDone, SetupRequest, StateResult

from ..errors import SetupRefused
from .authority import MasterAuthority
from .bridge import restore_pending
from .runner import run_setup
from .system import System
from .wire import HEADER, MAX_FRAME, SETUP_SOCKET, ConfirmAsk, Confirmed, HelperReply, HelperRequest, frame, read_frame

log = logging.getLogger(__name__)

CONFIG_FILE = "setup-helper.yaml"
DEFAULT_CONFIG_DIR = Path("/etc/saltmarsh")
PEERCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid
REFUSAL_DRAIN_SECONDS = 2.0


class HelperFile(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """The keys ``setup-helper.yaml`` may hold, each with its one default."""

    socket: str = SETUP_SOCKET
    agent_user: Annotated[str, msgspec.Meta(min_length=1, max_length=32)] = "saltmarsh"
    root_dir: str = "/var/lib/saltmarsh/setup"
    log_level: LogLevel = "info"
    request_timeout_seconds: PositiveSeconds = 30.0  # for the request to arrive after the connection
    # The agent's trust store (agent.yaml root_dir + pki/master.pub): where the master's key is first read.
    master_key_file: str = "/var/lib/saltmarsh/agent/pki/master.pub"
    # How old a signed job may be when it reaches the helper (it may have queued behind other jobs).
    job_window_seconds: PositiveSeconds = 600.0


@dataclass(frozen=True)
class HelperConfig:
    """Validated helper settings: the socket, and whose connections it serves."""

    config_dir: Path
    socket: Path
    agent_user: str
    agent_uid: int
    agent_gid: int
    root_dir: Path
    log_level: str
    request_timeout_seconds: float
    master_key_file: Path
    job_window_seconds: float

    @property
    def root_dir_mode(self) -> int:
        """The helper's state directory holds only its lock and the network config a rollback would restore."""
        return 0o700

    def system(self, **settings: Any) -> System:
        """The host as this helper's states see it (guarded changes kept under its state directory)."""
        return System(rollback_dir=self.root_dir / "rollback", **settings)


def load_helper_config(config_dir: Path) -> HelperConfig:
    """Read ``setup-helper.yaml``; ConfigError if invalid or the agent's user does not exist."""
    path = config_dir / CONFIG_FILE
    raw = load_yaml_config(path, HelperFile)
    try:
        user = pwd.getpwnam(raw.agent_user)
    except KeyError:
        raise ConfigError(f"{path}: agent_user: no user {raw.agent_user!r} on this host") from None
    return HelperConfig(config_dir=config_dir, socket=resolve_dir(config_dir, raw.socket), agent_user=raw.agent_user,
                        agent_uid=user.pw_uid, agent_gid=user.pw_gid, root_dir=resolve_dir(config_dir, raw.root_dir),
                        log_level=raw.log_level, request_timeout_seconds=raw.request_timeout_seconds,
                        master_key_file=resolve_dir(config_dir, raw.master_key_file),
                        job_window_seconds=raw.job_window_seconds)


class SetupHelper:
    """The helper daemon: serves the agent's setup requests on its socket until stopped."""

    def __init__(self, config: HelperConfig) -> None:
        self.config = config
        self._one_run = asyncio.Lock()  # two package managers at once would fight over dpkg's lock
        self._authority: MasterAuthority | None = None

    async def run(self, stop: asyncio.Event) -> None:
        """Bind the socket, serve, and remove the socket when stopped."""
        path = self.config.socket
        self.config.root_dir.mkdir(parents=True, exist_ok=True, mode=self.config.root_dir_mode)
        self._authority = MasterAuthority(self.config.master_key_file, self.config.root_dir,
                                          self.config.job_window_seconds)
        # A guarded network change that was never confirmed (the helper stopped while it waited) is undone
        # before anything else: the host gets back the network it reached the master with.
        restored = await asyncio.get_running_loop().run_in_executor(None, restore_pending, self.config.system())
        if restored:
            log.warning("restored the old network config of %s (unconfirmed when the helper stopped)",
                        ", ".join(restored))
        self._prepare_dir(path.parent)
        path.unlink(missing_ok=True)
        server = await asyncio.start_unix_server(self._serve, path=str(path))
        os.chown(path, 0 if os.geteuid() == 0 else -1, self.config.agent_gid if os.geteuid() == 0 else -1)
        os.chmod(path, 0o660)
        log.info("setup helper listening on %s for %s (uid %d)", path, self.config.agent_user, self.config.agent_uid)
        try:
            await stop.wait()
        finally:
            server.close()
            await server.wait_closed()
            path.unlink(missing_ok=True)
        log.info("setup helper stopped")

    def _prepare_dir(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            os.chown(directory, 0, self.config.agent_gid)  # the agent's group may enter, nobody else
        os.chmod(directory, 0o750)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await self._answer(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError) as exc:
            log.warning("setup client left: %s", exc)
        finally:
            writer.close()

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock: socket.socket = writer.get_extra_info("socket")
        pid, uid, _gid = PEERCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, PEERCRED.size))
        if uid != self.config.agent_uid:
            log.warning("DENIED uid %d (pid %d): only %s (uid %d) may ask for setup", uid, pid,
                        self.config.agent_user, self.config.agent_uid)
            await _refuse(reader, writer, f"refused: uid {uid} is not the agent's")
            return
        try:
            body = await asyncio.wait_for(read_frame(reader), self.config.request_timeout_seconds)
            asked = decode(body, HelperRequest, "setup request")
            assert self._authority is not None
            request = await asyncio.get_running_loop().run_in_executor(None, self._authority.check, asked.proof)
        except (MalformedFrame, SetupRefused, TimeoutError) as exc:
            log.warning("DENIED pid %d: %s", pid, exc or "no request in time")
            await _refuse(reader, writer, f"refused: {exc or 'no request in time'}")
            return
        log.info("ALLOWED uid %d (pid %d): %d states%s", uid, pid, len(request.states),
                 " (dry run)" if request.dry_run else "")
        async with self._one_run:
            done = await self._run(request, asked.master_ip, reader, writer)
        await _send(writer, HelperReply(done=done))

    async def _run(self, request: SetupRequest, master_ip: str, reader: asyncio.StreamReader,
                   writer: asyncio.StreamWriter) -> SetupDone:
        loop = asyncio.get_running_loop()
        replies: asyncio.Queue[HelperReply | None] = asyncio.Queue()
        confirmations = Confirmations(loop, replies)

        def on_result(result: StateResult) -> None:
            loop.call_soon_threadsafe(replies.put_nowait, HelperReply(result=result))

        def work() -> SetupDone:
            try:
                system = self.config.system(master_ip=master_ip, confirm=confirmations.ask)
                return run_setup(request, system, on_result)
            finally:
                loop.call_soon_threadsafe(replies.put_nowait, None)

        running = loop.run_in_executor(None, work)  # commands block: never on the loop
        listener = asyncio.create_task(_listen(reader, confirmations))
        listening = True
        try:
            while (reply := await replies.get()) is not None:
                if not listening:
                    continue
                try:
                    await _send(writer, reply)
                except ConnectionError as exc:
                    # The run goes on to its end (a package manager is not stopped halfway), and the
                    # next run waits for it: one run at a time holds even when its agent went away.
                    # A guarded change then gets no confirmation, and is undone.
                    log.warning("the agent left during the run (%s): finishing it", exc)
                    listening = False
            return await running
        finally:
            listener.cancel()


class Confirmations:
    """The agent's word, during a run, that it reaches the master again after a guarded network change."""

    def __init__(self, loop: asyncio.AbstractEventLoop, replies: asyncio.Queue[HelperReply | None]) -> None:
        self._loop = loop
        self._replies = replies
        self._heard: dict[str, threading.Event] = {}

    def ask(self, state: str, seconds: float) -> bool:
        """Ask the agent (from the run's worker thread) and wait; True if it confirmed within ``seconds``."""
        event = self._heard.setdefault(state, threading.Event())
        self._loop.call_soon_threadsafe(self._replies.put_nowait,
                                        HelperReply(confirm=ConfirmAsk(state=state, seconds=seconds)))
        return event.wait(seconds)

    def heard(self, state: str) -> None:
        """The agent confirmed ``state`` (ignored unless it was asked)."""
        event = self._heard.get(state)
        if event is None:
            log.warning("a confirmation of %r, which was not asked for, ignored", state)
            return
        event.set()


async def _listen(reader: asyncio.StreamReader, confirmations: Confirmations) -> None:
    """Read the agent's confirmations until it closes; a frame that is not one ends the listening."""
    with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
        while True:
            try:
                confirmations.heard(decode(await read_frame(reader), Confirmed, "confirmation").state)
            except MalformedFrame as exc:
                log.warning("DENIED a frame during the run: %s", exc)
                return


async def _refuse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, reason: str) -> None:
    """Send the refusal, then read (and drop) what the peer still sends, boundedly, before closing.

    Closing a Unix socket with unread data resets the connection: the peer's read would fail
    with ECONNRESET instead of getting the reason.
    """
    await _send(writer, HelperReply(done=SetupDone(error=reason)))
    writer.write_eof()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(_drain(reader, HEADER + MAX_FRAME), REFUSAL_DRAIN_SECONDS)


async def _drain(reader: asyncio.StreamReader, limit: int) -> None:
    """Read until the peer closes or ``limit`` bytes have come."""
    while limit > 0 and (chunk := await reader.read(min(limit, 65536))):
        limit -= len(chunk)


async def _send(writer: asyncio.StreamWriter, reply: HelperReply) -> None:
    writer.write(frame(encode(reply)))
    await writer.drain()


SPEC: DaemonSpec[HelperConfig] = DaemonSpec(
    prog="saltmarsh-setup-helper",
    description="Run the saltmarsh agent's setup states as root (only for the agent's user).",
    config_file=CONFIG_FILE,
    default_config_dir=DEFAULT_CONFIG_DIR,
    load_config=load_helper_config,
    log_level_of=lambda config: config.log_level,
    build=SetupHelper,
    fatal=(OSError,),
)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``saltmarsh-setup-helper``."""
    return daemon_main(SPEC, argv)


if __name__ == "__main__":
    sys.exit(main())
