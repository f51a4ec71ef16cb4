"""PKI commands: pki.status (every issued libvirt certificate and its expiry)."""

from __future__ import annotations

from typing import Any

from . import CommandContext, command


@command("pki.status")
async def status(ctx: CommandContext, args: dict[str, Any]) -> dict[str, Any]:
    """The CA's subject and expiry, and every certificate it issued."""
    service = ctx.master.certificates
    return {"ca": service.ca_info(), "certificates": service.status()}
