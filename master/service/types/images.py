"""Images: the catalog of the master's file roots (master/service/images.py)."""

from __future__ import annotations

from typing import ClassVar

from . import Request


class ImageListRequest(Request, frozen=True):
    """Every image under the master's file roots."""

    command: ClassVar[str] = "image.list"
