"""What a guest image (built on the master) and the seed that boots it (written by an agent) agree on.

The master's image builder makes the user, installs the unit and a path unit that watches for the
config; an agent's seed writes that config and starts that unit. Both sides read the names here,
so neither imports the other.
"""

from __future__ import annotations

AGENT_CONFIG_PATH = "/etc/saltmarsh/agent.yaml"
AGENT_USER = "saltmarsh"
AGENT_UNIT = "saltmarsh-agent.service"
