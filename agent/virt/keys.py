"""``virt.keys``: get this hypervisor's libvirt TLS certificates from the master's CA now."""

from __future__ import annotations

from typing import Any

from ..functions import FunctionContext, function


@function("virt.keys")
def keys(ctx: FunctionContext) -> dict[str, Any]:
    """Make new libvirt TLS keys here, have the master sign them, write libvirt's files (pki_root)."""
    return ctx.tls.issue()
