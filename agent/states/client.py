"""The agent's side of the setup helper: send the signed job (HelperRequest), get each state's result as it is done."""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path

from saltmarsh.protocol.codec import decode, encode
from saltmarsh.protocol.errors import MalformedFrame
from saltmarsh.protocol.states import SetupDone, StateResult

from ..errors import HelperUnavailable
from .system import COMMAND_TIMEOUT
from .wire import Confirmed, HelperReply, HelperRequest, frame, recv_frame

# Between two results the helper may be installing packages: as long as its own command timeout, and some.
RESULT_TIMEOUT = COMMAND_TIMEOUT + 60.0


OnConfirm = Callable[[str, float], bool]


def run_via_helper(path: Path, request: HelperRequest, on_result: Callable[[StateResult], None],
                   on_confirm: OnConfirm, timeout: float = RESULT_TIMEOUT) -> SetupDone:
    """Have the helper at ``path`` run ``request``; HelperUnavailable if it is not there or breaks off.

    ``on_confirm(state, seconds)`` is asked when a guarded network change was applied: True once
    this agent reached the master again (the helper keeps the change), False if it did not in time.
    """
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(str(path))
        except OSError as exc:
            raise HelperUnavailable(f"no setup helper at {path} ({exc.strerror or exc}): is "
                                    "saltmarsh-setup-helper running on this host?") from exc
        try:
            sock.sendall(frame(encode(request)))
            return _replies(sock, on_result, on_confirm)
        except (OSError, MalformedFrame) as exc:
            raise HelperUnavailable(f"the setup helper at {path} broke off: {exc}") from exc


def _replies(sock: socket.socket, on_result: Callable[[StateResult], None], on_confirm: OnConfirm) -> SetupDone:
    while True:
        body = recv_frame(sock)
        if body is None:
            raise HelperUnavailable("the setup helper closed the connection before the run ended")
        reply = decode(body, HelperReply, "setup helper reply")
        if reply.result is not None:
            on_result(reply.result)
        if reply.confirm is not None and on_confirm(reply.confirm.state, reply.confirm.seconds):
            sock.sendall(frame(encode(Confirmed(state=reply.confirm.state))))
        if reply.done is not None:
            return reply.done
