"""``saltmarsh-agent``: run the agent in the foreground until SIGTERM or SIGINT."""

from __future__ import annotations

import sys

import zmq

from saltmarsh.pki.errors import PkiError
from saltmarsh.protocol.daemon import DaemonSpec, daemon_main

from .agent import Agent
from .config import CONFIG_FILE, DEFAULT_CONFIG_DIR, AgentConfig, load_agent_config

SPEC: DaemonSpec[AgentConfig] = DaemonSpec(
    prog="saltmarsh-agent",
    description="Run a saltmarsh agent.",
    config_file=CONFIG_FILE,
    default_config_dir=DEFAULT_CONFIG_DIR,
    load_config=load_agent_config,
    log_level_of=lambda config: config.log_level,
    build=Agent,
    fatal=(PkiError, OSError, zmq.ZMQError),
)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``saltmarsh-agent``."""
    return daemon_main(SPEC, argv)


if __name__ == "__main__":
    sys.exit(main())
