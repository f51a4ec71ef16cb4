"""PKI: the CA and every libvirt certificate it issued, with its expiry."""

from __future__ import annotations

from typing import Any

from .registry import ServiceContext, operation
from .types.pki import PkiStatusRequest


@operation(PkiStatusRequest)
async def status(ctx: ServiceContext, req: PkiStatusRequest) -> dict[str, Any]:
    """The CA's subject and expiry, and every certificate it issued."""
    service = ctx.master.certificates
    return {"ca": service.ca_info(), "certificates": service.status()}
