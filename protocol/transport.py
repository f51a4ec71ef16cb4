"""ZeroMQ socket set-up both ends share."""

from __future__ import annotations

from typing import Any

import zmq

from .limits import Limits


def harden(socket: zmq.Socket[Any], limits: Limits) -> None:
    """Apply the options every network socket gets.

    MAXMSGSIZE makes libzmq drop a peer that sends a frame far past our limit
    before Python allocates it; LINGER 0 so that a stopping daemon never hangs
    on unsent frames (anything that matters is retried until acknowledged).
    """
    socket.setsockopt(zmq.MAXMSGSIZE, limits.transport_max)
    socket.setsockopt(zmq.LINGER, 0)


def tcp_endpoint(host: str, port: int) -> str:
    """A tcp:// endpoint, bracketing IPv6 literals."""
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"tcp://{host}:{port}"
