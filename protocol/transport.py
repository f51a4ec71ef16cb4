"""ZeroMQ socket set-up both ends share."""

from __future__ import annotations

from dataclasses import dataclass
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


@dataclass(frozen=True)
class LinkHeartbeat:
    """ZMTP heartbeats on one socket's TCP connections (libzmq's PING/PONG, below our messages).

    A connection whose path drops silently (a guest's user-mode NIC migrated, a NAT forgot it:
    no FIN or RST ever comes) looks alive to TCP forever on an idle socket; the agent's job SUB
    is idle between jobs. With ``interval`` > 0 the socket sends a PING that often and closes
    the connection (then reconnects) when nothing at all arrives within ``timeout`` of one; the
    PING tells the peer to drop its end too after ``timeout`` without traffic (ZMQ_HEARTBEAT_TTL),
    so the master needs no timers of its own for the agents' connections. A connect that gets no
    answer at all is given up after ``timeout`` as well, rather than the kernel's two minutes of
    SYN retries, and so is a handshake (libzmq's default waits 30 s). The defaults are in each
    daemon's config (agent/config.py).
    """

    interval: float  # seconds; 0 turns heartbeats off
    timeout: float


def keep_alive(socket: zmq.Socket[Any], heartbeat: LinkHeartbeat) -> None:
    """Apply ``heartbeat`` to ``socket`` (before it connects)."""
    if heartbeat.interval <= 0:
        return
    timeout_ms = int(heartbeat.timeout * 1000)
    socket.setsockopt(zmq.HEARTBEAT_IVL, int(heartbeat.interval * 1000))
    socket.setsockopt(zmq.HEARTBEAT_TIMEOUT, timeout_ms)
    socket.setsockopt(zmq.HEARTBEAT_TTL, timeout_ms)
    socket.setsockopt(zmq.CONNECT_TIMEOUT, timeout_ms)
    socket.setsockopt(zmq.HANDSHAKE_IVL, timeout_ms)  # heartbeats start only once the handshake is done


def tcp_endpoint(host: str, port: int) -> str:
    """A tcp:// endpoint, bracketing IPv6 literals."""
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"tcp://{host}:{port}"
