"""PKI: the CA and its certificates (master/service/pki.py)."""

from __future__ import annotations

from typing import ClassVar

from . import Request


class PkiStatusRequest(Request, frozen=True):
    """The CA's subject and expiry, and every certificate it issued."""

    command: ClassVar[str] = "pki.status"
