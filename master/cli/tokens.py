"""``saltmarsh token create NAME --scope S [--target P] [--ttl 30d]``, ``token list``, ``token revoke NAME``."""

from __future__ import annotations

import argparse
import time
from typing import Any

from .connect import connect, given
from .output import clean, print_json
from .table import HELP

UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def duration(text: str) -> float:
    """An argument type: ``90``, ``90s``, ``15m``, ``12h`` or ``30d``, in seconds (the master bounds it)."""
    number, unit = (text[:-1], text[-1]) if text and text[-1] in UNITS else (text, "s")
    try:
        value = float(number) * UNITS[unit]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration (like 3600, 15m, 12h or 30d)") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration above 0")
    return value


def register(sub: Any) -> None:
    """Add the ``token`` command family."""
    token = sub.add_parser("token", help=HELP["token"])
    actions = token.add_subparsers(dest="action", required=True)
    create = actions.add_parser("create", help="a new bearer token for the HTTP API, printed once")
    create.add_argument("name")
    create.add_argument("--scope", required=True, help="comma-separated scopes, e.g. jobs:run,vms:read")
    create.add_argument("--target", default=None, help="a glob of agent ids the token may reach (default: any)")
    create.add_argument("--ttl", type=duration, default=None,
                        help="lifetime: 3600, 15m, 12h, 30d (default: until revoked)")
    create.add_argument("--json", action="store_true")
    create.set_defaults(handler=token_create)
    listing = actions.add_parser("list", help="every token: name, scopes, target, expiry")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(handler=token_list)
    revoke = actions.add_parser("revoke", help="revoke a token: refused from its next request on")
    revoke.add_argument("name")
    revoke.set_defaults(handler=token_revoke)


def _when(ts: float | None) -> str:
    return "never" if ts is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def token_create(args: argparse.Namespace) -> int:
    """Print the new token (only this once) and what it may do."""
    from ..service.types.tokens import TokenCreateRequest

    with connect(args.config_dir) as client:
        created: dict[str, Any] = client.request(given(TokenCreateRequest, name=args.name, scopes=args.scope,
                                                       target=args.target, ttl=args.ttl))
    if args.json:
        print_json(created)
        return 0
    info = created["info"]
    print(created["token"])
    print(f"# {clean(info['name'])}: scopes {','.join(info['scopes'])}, target {clean(info['target']) or 'any'}, "
          f"expires {_when(info['expires'])}; shown once, the master keeps only its hash")
    return 0


def token_list(args: argparse.Namespace) -> int:
    """One line per token."""
    from ..service.types.tokens import TokenListRequest

    with connect(args.config_dir) as client:
        tokens: list[dict[str, Any]] = client.request(TokenListRequest())
    if args.json:
        print_json(tokens)
        return 0
    print(f"{'NAME':<20} {'EXPIRES':<20} {'TARGET':<16} SCOPES")
    for info in tokens:
        print(f"{clean(info['name']):<20} {_when(info['expires']):<20} {clean(info['target']) or 'any':<16} "
              f"{','.join(info['scopes'])}")
    return 0


def token_revoke(args: argparse.Namespace) -> int:
    """Revoke one token by name."""
    from ..service.types.tokens import TokenRevokeRequest

    with connect(args.config_dir) as client:
        client.request(TokenRevokeRequest(name=args.name))
    print(f"revoked {clean(args.name)}")
    return 0
