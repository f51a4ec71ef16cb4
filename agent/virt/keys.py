"""``virt.keys`` and ``virt.tls_check``: this hypervisor's libvirt TLS certificates from the master's CA, now."""

from __future__ import annotations

from typing import Any

from ..functions import FunctionContext, function


@function("virt.keys")
def keys(ctx: FunctionContext) -> dict[str, Any]:
    """Make new libvirt TLS keys here, have the master sign them, write libvirt's files (pki_root)."""
    return ctx.tls.issue()


@function("virt.tls_check")
def tls_check(ctx: FunctionContext) -> dict[str, Any]:
    """Run the periodic certificate check now: renew if due or revoked, refresh the CRL, reload libvirtd's TLS."""
    return ctx.tls.check()
