"""What both daemons do the same way: umask, arguments, config, logging, the state-dir lock, stopping on signals."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

from .allocator import keep_large_buffers
from .configfile import check_config_dir
from .errors import ConfigError
from .statedir import StateDirBusy, locked_state_dirs

# Whatever started us (a shell with umask 000, a unit without UMask=): what a daemon creates is its own.
# What others must reach (the image cache, a VM's directory, public keys) gets its mode explicitly.
DAEMON_UMASK = 0o077


class DaemonConfig(Protocol):
    """What daemon_main needs of a daemon's config: its state directory and that directory's mode."""

    @property
    def root_dir(self) -> Path:
        """The state directory (keys, caches, sockets): one daemon at a time may use it."""

    @property
    def root_dir_mode(self) -> int:
        """The mode the state directory is created with."""


C = TypeVar("C", bound=DaemonConfig)

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

    async def run(self, stop: asyncio.Event) -> int | None:
        """Serve until ``stop`` is set, then clean up; the exit status (None: 0)."""


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
    # The (directory, mode) pairs to lock at start; None: the config's own root_dir (swarm mode locks each member's).
    state_dirs: Callable[[C], list[tuple[Path, int]]] | None = None


def daemon_main(spec: DaemonSpec[C], argv: list[str] | None = None) -> int:
    """Set the umask, parse ``-c``/``-l``, load the config, lock the state dir, run in the foreground.

    Exit 0 on a clean stop. A missing config directory or a bad config exits 2 with one line
    naming the file and key; another daemon holding the state directory, or a start-up failure
    in ``spec.fatal`` (an unreadable key, a port in use), exits 1 with one log line.
    """
    os.umask(DAEMON_UMASK)  # first: before anything (a log, a key, a database) can be created
    keep_large_buffers()
    parser = argparse.ArgumentParser(prog=spec.prog, description=spec.description)
    parser.add_argument("-c", "--config-dir", type=Path, default=spec.default_config_dir,
                        help=f"holds {spec.config_file}")
    parser.add_argument("-l", "--log-level", choices=LOG_LEVELS, help=f"overrides log_level in {spec.config_file}")
    args = parser.parse_args(argv)
    try:
        check_config_dir(args.config_dir, spec.config_file)
        config = spec.load_config(args.config_dir)
    except ConfigError as exc:
        print(f"{spec.prog}: {exc}", file=sys.stderr)
        return 2
    setup_logging(args.log_level or spec.log_level_of(config))
    log = logging.getLogger(spec.prog)
    _log_config_source(log, args.config_dir / spec.config_file)
    state_dirs = spec.state_dirs(config) if spec.state_dirs else [(config.root_dir, config.root_dir_mode)]
    fatal: tuple[type[BaseException], ...] = (StateDirBusy, *spec.fatal)
    try:
        with locked_state_dirs(state_dirs):
            status = asyncio.run(_serve(spec, config))
    except fatal as exc:
        log.error("cannot start: %s", exc)
        return 1
    return status or 0


def _log_config_source(log: logging.Logger, path: Path) -> None:
    """Say which file the settings came from, or that there was none (so every default is a visible choice)."""
    if os.path.lexists(path):
        log.info("config read from %s", path)
    else:
        log.info("no %s: every setting is its default", path)


async def _serve(spec: DaemonSpec[C], config: C) -> int | None:
    stop = asyncio.Event()
    stop_on_signals(stop)
    daemon = spec.build(config)
    # What start-up made (modules, config, keys: most of a daemon's objects) lives as long as the
    # process: out of the collector's sight, a full collection scans only what the daemon made since,
    # and stops the loop for that long instead of for everything.
    gc.freeze()
    return await daemon.run(stop)
