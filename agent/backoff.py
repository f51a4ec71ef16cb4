"""Jitter for the agent's retries and periodic messages, so that a fleet does not act in step.

A thousand agents accepted by one ``key accept --all``, or cut off by one master restart,
would otherwise heartbeat, retry their hellos and resend their returns at the same instants
forever after (their timers started together and run at the same rate): a master coming
back meets every one of them in the same second, and then again each interval. Each wait is
drawn around its nominal length instead, so the fleet spreads out within one interval.
"""

from __future__ import annotations

import random

# Waits are drawn from [1 - JITTER, 1 + JITTER] times their nominal length.
JITTER = 0.5
# Heartbeats only ever come early (the master counts an agent down after three intervals of silence).
HEARTBEAT_JITTER = 0.2


def jittered(seconds: float, spread: float = JITTER) -> float:
    """``seconds`` times a random factor in [1 - spread, 1 + spread]."""
    return seconds * random.uniform(1.0 - spread, 1.0 + spread)  # spreading load: no secret, so not `secrets`


def heartbeat_wait(seconds: float) -> float:
    """How long to wait before the next heartbeat: the interval or up to HEARTBEAT_JITTER of it less."""
    return seconds * (1.0 - random.uniform(0.0, HEARTBEAT_JITTER))  # spreading load: no secret, so not `secrets`
