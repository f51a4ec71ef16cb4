"""``saltmarsh-agent``: run the agent in the foreground until SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

from saltmarsh.pki.errors import PkiError
from saltmarsh.protocol.daemon import LOG_LEVELS, setup_logging, stop_on_signals
from saltmarsh.protocol.errors import ConfigError

from .agent import Agent
from .config import DEFAULT_CONFIG_DIR, AgentConfig, load_agent_config

log = logging.getLogger("saltmarsh.agent")


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, load the config, and run the agent; exit 0 on a clean stop."""
    parser = argparse.ArgumentParser(prog="saltmarsh-agent", description="Run a saltmarsh agent.")
    parser.add_argument("-c", "--config-dir", type=Path, default=DEFAULT_CONFIG_DIR, help="holds agent.yaml")
    parser.add_argument("-l", "--log-level", choices=LOG_LEVELS, help="overrides log_level in agent.yaml")
    args = parser.parse_args(argv)
    try:
        config = load_agent_config(args.config_dir)
    except ConfigError as exc:
        print(f"saltmarsh-agent: {exc}", file=sys.stderr)
        return 2
    setup_logging(args.log_level or config.log_level)
    try:
        asyncio.run(_run(config))
    except (PkiError, OSError) as exc:
        log.error("cannot start: %s", exc)
        return 1
    return 0


async def _run(config: AgentConfig) -> None:
    stop = asyncio.Event()
    stop_on_signals(stop)
    await Agent(config).run(stop)


if __name__ == "__main__":
    sys.exit(main())
