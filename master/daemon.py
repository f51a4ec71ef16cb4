"""``saltmarsh-master``: run the master in the foreground until SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

import zmq

from saltmarsh.pki.errors import PkiError
from saltmarsh.protocol.daemon import LOG_LEVELS, setup_logging, stop_on_signals
from saltmarsh.protocol.errors import ConfigError

from .config import DEFAULT_CONFIG_DIR, MasterConfig, load_master_config
from .server import Master

log = logging.getLogger("saltmarsh.master")


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, load the config, and run the master; exit 0 on a clean stop."""
    parser = argparse.ArgumentParser(prog="saltmarsh-master", description="Run the saltmarsh master.")
    parser.add_argument("-c", "--config-dir", type=Path, default=DEFAULT_CONFIG_DIR, help="holds master.yaml")
    parser.add_argument("-l", "--log-level", choices=LOG_LEVELS, help="overrides log_level in master.yaml")
    args = parser.parse_args(argv)
    try:
        config = load_master_config(args.config_dir)
    except ConfigError as exc:
        print(f"saltmarsh-master: {exc}", file=sys.stderr)
        return 2
    setup_logging(args.log_level or config.log_level)
    try:
        asyncio.run(_run(config))
    except (PkiError, OSError, zmq.ZMQError) as exc:
        log.error("cannot start: %s", exc)
        return 1
    return 0


async def _run(config: MasterConfig) -> None:
    stop = asyncio.Event()
    stop_on_signals(stop)
    await Master(config).run(stop)


if __name__ == "__main__":
    sys.exit(main())
