"""What both daemons do the same way: arguments, config, logging, and stopping on SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

from .errors import ConfigError

C = TypeVar("C")

LOG_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
LOG_LEVELS = ("debug", "info", "warning", "error")


def setup_logging(level: str) -> None:
    """Log to stderr at ``level`` (one of LOG_LEVELS)."""
    logging.basicConfig(stream=sys.stderr, level=level.upper(), format=LOG_FORMAT, force=True)


def stop_on_signals(stop: asyncio.Event) -> None:
    """Set ``stop`` on SIGTERM or SIGINT so the daemon can shut down cleanly and exit 0."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)


async def cancel_and_wait(tasks: list[asyncio.Task[Any]]) -> None:
    """Cancel ``tasks`` and wait until they have finished, logging any that failed.

    Unlike ``with suppress(CancelledError): await task``, this never swallows the
    cancellation of the task that calls it, so a stopping daemon cannot hang here.
    """
    for task in tasks:
        task.cancel()
    if not tasks:
        return
    await asyncio.wait(tasks)
    for task in tasks:
        if not task.cancelled() and task.exception() is not None:
            logging.getLogger(__name__).error("task %s had failed: %r", task.get_name(), task.exception())


class Runnable(Protocol):
    """A daemon object: runs until the stop event is set."""

    async def run(self, stop: asyncio.Event) -> None:
        """Serve until ``stop`` is set, then clean up."""


@dataclass(frozen=True)
class DaemonSpec(Generic[C]):
    """What differs between saltmarsh-master and saltmarsh-agent at start-up."""

    prog: str
    description: str
    config_file: str
    default_config_dir: Path
    load_config: Callable[[Path], C]
    log_level_of: Callable[[C], str]
    build: Callable[[C], Runnable]
    fatal: tuple[type[BaseException], ...]


def daemon_main(spec: DaemonSpec[C], argv: list[str] | None = None) -> int:
    """Parse ``-c``/``-l``, load the config, run in the foreground; exit 0 on a clean stop.

    A bad config exits 2 with the file and key named; a start-up failure in ``spec.fatal``
    (an unreadable key, a port in use) exits 1 with one log line.
    """
    parser = argparse.ArgumentParser(prog=spec.prog, description=spec.description)
    parser.add_argument("-c", "--config-dir", type=Path, default=spec.default_config_dir,
                        help=f"holds {spec.config_file}")
    parser.add_argument("-l", "--log-level", choices=LOG_LEVELS, help=f"overrides log_level in {spec.config_file}")
    args = parser.parse_args(argv)
    try:
        config = spec.load_config(args.config_dir)
    except ConfigError as exc:
        print(f"{spec.prog}: {exc}", file=sys.stderr)
        return 2
    setup_logging(args.log_level or spec.log_level_of(config))
    try:
        asyncio.run(_serve(spec, config))
    except spec.fatal as exc:
        logging.getLogger(spec.prog).error("cannot start: %s", exc)
        return 1
    return 0


async def _serve(spec: DaemonSpec[C], config: C) -> None:
    stop = asyncio.Event()
    stop_on_signals(stop)
    await spec.build(config).run(stop)
