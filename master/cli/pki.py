"""``saltmarsh pki init|status``: the master's CA for libvirt TLS."""

from __future__ import annotations

import argparse
from typing import Any

from .connect import connect
from .output import clean, print_json
from .table import HELP


def register(sub: Any) -> None:
    """Add the ``pki`` command family."""
    pki = sub.add_parser("pki", help=HELP["pki"])
    actions = pki.add_subparsers(dest="action", required=True)
    init = actions.add_parser("init", help="create the CA now (the master also creates it on first start)")
    init.set_defaults(handler=pki_init)
    status = actions.add_parser("status", help="every agent's libvirt certificates and their expiry")
    status.add_argument("--json", action="store_true")
    status.set_defaults(handler=pki_status)


def pki_init(args: argparse.Namespace) -> int:
    """Create (or show) the CA; works without a running master."""
    # Imported here: cryptography costs every other CLI command 30 ms of start-up.
    from saltmarsh.pki.ca import CertificateAuthority

    from ..config import load_master_config

    config = load_master_config(args.config_dir)
    summary = CertificateAuthority(config.ca_dir, config.ca).summary()
    print(f"CA {summary['subject']} in {config.ca_dir}, valid until {summary['not_after']}")
    print(f"sha256 {summary['sha256']}")
    return 0


def pki_status(args: argparse.Namespace) -> int:
    """Print the CA and every issued certificate."""
    from ..service.types.pki import PkiStatusRequest

    with connect(args.config_dir) as client:
        status = client.request(PkiStatusRequest())
    if args.json:
        print_json(status)
        return 0
    ca = status["ca"]
    print(f"CA {clean(ca['subject'])}, valid until {clean(ca['not_after'])}")
    print(f"{'AGENT':<20} {'ROLE':<7} {'EXPIRES':<24} {'STATE':<30} NAMES")
    for cert in status["certificates"]:
        state = f"revoked {cert['revoked']}" if cert["revoked"] else "valid"
        print(f"{clean(cert['agent']):<20} {clean(cert['usage']):<7} {clean(cert['not_after']):<24} "
              f"{clean(state):<30} {clean(','.join(cert['names']))}")
    return 0
