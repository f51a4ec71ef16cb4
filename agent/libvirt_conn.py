"""The libvirt bindings, imported once; the agent runs test.* and host.* without them."""

from __future__ import annotations

from typing import Any

libvirt: Any
try:
    import libvirt as _bindings
except ImportError:
    libvirt = None
else:
    libvirt = _bindings
    # libvirt prints every error to stderr by default; we report them ourselves, once.
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
