"""Where the master's local sockets are and what they take, in a module that imports only the stdlib.

Both ends read these: the master (master/config.py, master/control/) and its clients, the CLI's
fast path (master/cli/fast.py) among them, which finds the sockets without the full config parse.
Each default is written here once.
"""

from __future__ import annotations

from pathlib import Path

# master.yaml's ``root_dir`` when it names none.
DEFAULT_ROOT_DIR = "/var/lib/saltmarsh/master"
# Under root_dir: the 0700 directory whose permissions are the control sockets' access control.
CONTROL_DIR = "control"
CONTROL_SOCKET = "master.sock"  # the ZeroMQ ROUTER (master/control/server.py)
STREAM_SOCKET = "master.stream"  # the plain stream socket, length-prefixed JSON (master/control/stream.py)

MAX_CONTROL_FRAME = 1024 * 1024  # the largest request either control socket reads
# How long a client waits for the master's reply to a request.
DEFAULT_REPLY_TIMEOUT = 10.0
MASTER_GONE = "the master closed the control connection (it stopped or crashed)"


def control_dir(root_dir: Path) -> Path:
    """The directory of the control sockets of a master whose root_dir is ``root_dir``."""
    return root_dir / CONTROL_DIR
