"""libvirt connections, always context-managed, with libvirt errors translated once here."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from .errors import LibvirtFailure

try:
    import libvirt
except ImportError:  # the agent still runs test.* and host.* without the bindings
    libvirt = None


def _silence_default_handler() -> None:
    # libvirt prints every error to stderr by default; we report them ourselves.
    if libvirt is not None:
        libvirt.registerErrorHandler(lambda _ctx, _err: None, None)


_silence_default_handler()


@contextlib.contextmanager
def libvirt_connection(uri: str) -> Iterator[Any]:
    """Open ``uri``, yield the connection, and always close it; LibvirtFailure on libvirt errors."""
    if libvirt is None:
        raise LibvirtFailure("libvirt-python is not installed on this agent")
    try:
        conn = libvirt.open(uri)
    except libvirt.libvirtError as exc:
        raise LibvirtFailure(f"cannot open {uri}: {exc.get_error_message()}") from exc
    try:
        yield conn
    except libvirt.libvirtError as exc:
        raise LibvirtFailure(f"libvirt call on {uri} failed: {exc.get_error_message()}") from exc
    finally:
        conn.close()
