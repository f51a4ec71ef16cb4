"""``saltmarsh host enroll ID``: print the script that makes a fresh host agent ID (master/agents/enroll.py).

The master issues a one-time join token for ID (as ``key token`` does) and prints a POSIX sh
script with it: run as root on the new host, it installs the agent from wheels already there,
writes its agent.yaml (the master's address and public key, the token) and the units, and
starts the agent and its setup helper. Nothing is sent to the host by the master.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

from .arguments import absolute_path, seconds
from .connect import connect, given
from .output import fail

TOKEN_TTL = 3600.0
# A host name or an IP address (IPv6 bare or in brackets): what the script writes into agent.yaml.
ADDRESS = re.compile(r"[A-Za-z0-9\[][A-Za-z0-9.:\[\]-]{0,252}")


def register(host_actions: Any) -> None:
    """Add ``host enroll`` to the ``host`` family."""
    from saltmarsh.master.agents.enroll import DEFAULT_WHEELS
    from saltmarsh.protocol.bounds import MAX_TOKEN_TTL

    enroll = host_actions.add_parser("enroll", help="print a script that makes a fresh host an agent (join token)")
    enroll.add_argument("id", help="the new agent's id")
    enroll.add_argument("--master-address",
                        help="how the new host reaches this master (default: seed.master_address, else the "
                             "master's interface)")
    enroll.add_argument("--ttl", type=seconds(MAX_TOKEN_TTL), default=TOKEN_TTL,
                        help="seconds the join token stays valid")
    enroll.add_argument("--wheels", type=absolute_path, default=DEFAULT_WHEELS,
                        help=f"where saltmarsh's wheels are on the new host (default {DEFAULT_WHEELS})")
    enroll.add_argument("--source", type=lambda text: Path(absolute_path(text)),
                        help="the saltmarsh source tree whose units to install (default: the one installed)")
    enroll.set_defaults(handler=host_enroll)


def host_enroll(args: argparse.Namespace) -> int:
    """Issue the token and print the script; 1 if the master refuses, 2 if no address or units are found."""
    import datetime

    from saltmarsh.master.agents.enroll import AGENT_UNIT, HELPER_UNIT, Enrollment, script
    from saltmarsh.master.config import load_master_config
    from saltmarsh.master.images import source
    from saltmarsh.master.images.errors import BuildRefused

    config = load_master_config(args.config_dir)
    from ..service.types.events import PingRequest
    from ..service.types.keys import TokenRequest

    # The master first (nothing is made before it is reached), then what the script needs, then the token.
    with connect(args.config_dir) as client:
        client.request(PingRequest())
        address = args.master_address if args.master_address is not None else (
            config.seed.master_address or config.interface)
        if address in ("0.0.0.0", "::") or not ADDRESS.fullmatch(address):
            fail(f"no master address a new host can reach ({address!r}): give one with --master-address")
            return 2
        try:
            tree = source.check_tree(args.source.resolve()) if args.source else source.installed_tree()
            units = {name: (tree / "systemd" / name).read_text() for name in (AGENT_UNIT, HELPER_UNIT)}
        except (BuildRefused, OSError) as exc:
            fail(f"no saltmarsh units to install: {exc}")
            return 2
        issued = client.request(given(TokenRequest, id=args.id, ttl=args.ttl))
    expires = datetime.datetime.fromtimestamp(issued["expires"], datetime.UTC)
    print(script(Enrollment(agent_id=args.id, master_address=address, publish_port=config.publish_port,
                            request_port=config.request_port, master_key=issued["master_key"],
                            token=issued["token"], expires=f"{expires:%Y-%m-%d %H:%M:%S}", wheels=args.wheels,
                            agent_unit=units[AGENT_UNIT], helper_unit=units[HELPER_UNIT])), end="")
    return 0
