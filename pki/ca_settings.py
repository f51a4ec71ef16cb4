"""The CA's settings, apart from the CA itself: the master's config and CLI need them without cryptography."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CaSettings:
    """Subject and lifetimes of the CA and of the certificates it issues."""

    common_name: str = "saltmarsh libvirt CA"
    organization: str = "saltmarsh"
    ca_days: int = 3650
    cert_days: int = 365
    crl_days: int = 7
