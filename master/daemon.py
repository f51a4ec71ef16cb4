"""``saltmarsh-master``: run the master in the foreground until SIGTERM or SIGINT."""

from __future__ import annotations

import sys

import zmq

from saltmarsh.pki.errors import PkiError
from saltmarsh.protocol.daemon import DaemonSpec, daemon_main

from .config import CONFIG_FILE, DEFAULT_CONFIG_DIR, MasterConfig, load_master_config
from .server import Master

SPEC: DaemonSpec[MasterConfig] = DaemonSpec(
    prog="saltmarsh-master",
    description="Run the saltmarsh master.",
    config_file=CONFIG_FILE,
    default_config_dir=DEFAULT_CONFIG_DIR,
    load_config=load_master_config,
    log_level_of=lambda config: config.log_level,
    build=Master,
    fatal=(PkiError, OSError, zmq.ZMQError),
)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``saltmarsh-master``."""
    return daemon_main(SPEC, argv)


if __name__ == "__main__":
    sys.exit(main())
