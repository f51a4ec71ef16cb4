"""Images: every bootable image under the master's file roots, as the file server serves them.

``saltmarsh image list`` still reads the catalog itself (it needs no running master); this is
the same catalog for the front ends that reach the master only (the HTTP API).
"""

from __future__ import annotations

import asyncio
from typing import Any

from ..cloud.fileserver import SERVED_RECORDS
from ..images.catalog import catalog
from ..images.errors import ImageError
from .errors import Unavailable
from .registry import ServiceContext, operation
from .types.images import ImageListRequest


@operation(ImageListRequest)
async def image_list(ctx: ServiceContext, req: ImageListRequest) -> list[dict[str, Any]]:
    """Every image under the file roots: path, root, size, format, checksum, and who fetched it."""
    config = ctx.master.config
    # Off the loop: the catalog reads every image's header and checksum record from disk.
    try:
        entries = await asyncio.to_thread(catalog, config.file_roots, config.root_dir / SERVED_RECORDS)
    except ImageError as exc:  # the file server's records cannot be read
        raise Unavailable(str(exc)) from exc
    return [entry.summary() for entry in entries]
