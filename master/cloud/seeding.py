"""Which master address a seeded guest's agent is told to reach, and why some are refused.

The hypervisor's agent reaches the master at an address that is right for the
hypervisor (often ``localhost``); a guest on a bridge or behind NAT needs one it
can reach itself. It comes from ``virt init --master-address``, else from
``seed.master_address`` in master.yaml, else from the master's ``interface`` when
that is a concrete address. An address no guest can use is refused with the reason,
before a token is issued or anything is created.
"""

from __future__ import annotations

import ipaddress

from ..service.errors import Invalid

# With QEMU's user networking (NIC type "user") the guest reaches the host's loopback here.
USER_NET_HOST = "10.0.2.2"


def seed_address(requested: str | None, configured: str, interface: str) -> str:
    """The address to seed: the request's, else the configured one, else a concrete ``interface``."""
    address = (requested or configured or interface).strip()
    fault = _fault(address)
    if fault:
        source = ("--master-address" if requested else
                  "seed.master_address in master.yaml" if configured else "the master's interface")
        raise Invalid(f"cannot seed with master address {address!r} ({source}): {fault}; "
                      "give one the guest can reach with --master-address or seed.master_address")
    return address


def _fault(address: str) -> str:
    if not address:
        return "no address is set"
    if any(c.isspace() or not c.isprintable() for c in address) or len(address) > 253:
        return "it is not a host name or an IP address"
    try:
        ip = ipaddress.ip_address(address.strip("[]"))
    except ValueError:
        return "" if address.lower() != "localhost" else _LOOPBACK
    if ip.is_unspecified:
        return "it is the any-address the master binds to, not one a guest can connect to"
    if ip.is_loopback:
        return _LOOPBACK
    return ""


_LOOPBACK = (f"a loopback address is the guest's own, not the master's (with a 'user' NIC the host's "
             f"loopback is {USER_NET_HOST})")
