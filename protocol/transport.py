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


# libzmq backs off between reconnect attempts up to RECONNECT_IVL_MAX. Past about
# 2 s an agent notices a restarted master too late (bench/swarm.py: 1,000 agents
# back within the master's start-up plus 2 s); below it, a fleet facing a master
# that is down costs the master's host more refused connections for nothing.
RECONNECT_MS = 200
RECONNECT_MAX_MS = 2000


def reconnect_quickly(socket: zmq.Socket[Any]) -> None:
    """Set the agent sockets' reconnect back-off (first retry 0.2 s, then at most every 2 s)."""
    socket.setsockopt(zmq.RECONNECT_IVL, RECONNECT_MS)
    socket.setsockopt(zmq.RECONNECT_IVL_MAX, RECONNECT_MAX_MS)


def tcp_endpoint(host: str, port: int) -> str:
    """A tcp:// endpoint, bracketing IPv6 literals."""
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"tcp://{host}:{port}"
