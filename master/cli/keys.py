"""``saltmarsh key list|accept|reject|delete|finger``."""

from __future__ import annotations

import argparse
from typing import Any

from saltmarsh.protocol.bounds import MAX_TOKEN_TTL

from .arguments import seconds
from .connect import connect, given
from .jobview import print_keys
from .output import clean, fail, print_json
from .table import HELP


def register(sub: Any) -> None:
    """Add the ``key`` command family."""
    key = sub.add_parser("key", help=HELP["key"])
    actions = key.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list", help="keys by state")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(handler=key_list)
    accept = actions.add_parser("accept", help="accept a pending key (or --all)")
    accept.add_argument("id", nargs="?")
    accept.add_argument("--all", action="store_true", help="accept every pending key")
    accept.set_defaults(handler=key_accept)
    for name, done in (("reject", "rejected"), ("delete", "deleted")):
        action = actions.add_parser(name, help=f"{name} a key; the agent gets no further job")
        action.add_argument("id")
        action.set_defaults(handler=key_change, done=done)
    token = actions.add_parser("token", help="a one-time join token that gets agent ID accepted on first contact")
    token.add_argument("id")
    token.add_argument("--ttl", type=seconds(MAX_TOKEN_TTL), default=None,
                       help=f"seconds the token stays valid (at most {MAX_TOKEN_TTL:.0f})")
    token.add_argument("--json", action="store_true")
    token.set_defaults(handler=key_token)
    finger = actions.add_parser("finger", help="fingerprints of the master and agent keys")
    finger.add_argument("id", nargs="?")
    finger.add_argument("--json", action="store_true")
    finger.set_defaults(handler=key_finger)


def key_list(args: argparse.Namespace) -> int:
    """Print keys by state."""
    from ..service.types.keys import KeyListRequest

    with connect(args.config_dir) as client:
        keys = client.request(KeyListRequest())
    return print_keys(keys, args.json)


def key_accept(args: argparse.Namespace) -> int:
    """Accept one key or all pending keys."""
    if (args.id is not None) == bool(args.all) or args.id == "":
        fail("key accept takes an ID or --all")
        return 2
    from ..service.types.keys import KeyAcceptRequest

    with connect(args.config_dir) as client:
        accepted = client.request(KeyAcceptRequest(args.id or "", args.all))
    for agent_id in accepted:
        print(f"accepted {clean(agent_id)}")
    if not accepted:
        print("no pending keys")
    return 0


def key_change(args: argparse.Namespace) -> int:
    """Reject or delete a key."""
    from ..service.types.keys import KeyDeleteRequest, KeyRejectRequest

    kind = KeyRejectRequest if args.done == "rejected" else KeyDeleteRequest
    with connect(args.config_dir) as client:
        client.request(kind(args.id))
    print(f"{args.done} {clean(args.id)}")
    return 0


def key_token(args: argparse.Namespace) -> int:
    """Issue a join token and print the agent.yaml lines that use it."""
    import datetime

    from ..service.types.keys import TokenRequest

    with connect(args.config_dir) as client:
        issued = client.request(given(TokenRequest, id=args.id, ttl=args.ttl))
    if args.json:
        print_json(issued)
        return 0
    expires = datetime.datetime.fromtimestamp(issued["expires"], datetime.UTC)
    print(f"# agent.yaml of {clean(args.id)}; the token works once, until {expires:%Y-%m-%d %H:%M:%S} UTC")
    print(f"id: {clean(args.id)}")
    print(f"join_token: {issued['token']}")
    print(f"master_key: {issued['master_key']}")
    return 0


def key_finger(args: argparse.Namespace) -> int:
    """Print fingerprints."""
    if args.id == "":  # an empty id would ask for every fingerprint, which is not what was typed
        fail("key finger takes an agent id, or none for every key")
        return 2
    from ..service.types.keys import KeyFingerRequest

    with connect(args.config_dir) as client:
        prints = client.request(KeyFingerRequest(args.id or ""))
    if args.json:
        print_json(prints)
    else:
        width = max(len(k) for k in prints)
        for name, fp in prints.items():
            print(f"{clean(name):<{width}}  {clean(fp)}")
    return 0
