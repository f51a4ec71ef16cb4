"""``virt.console_log``: the tail of a VM's serial console, so a guest that does not boot says why.

``virt.init`` gives every VM a serial console whose output virtlogd also writes to
``<vm_dir>/<name>/console.log`` (the firmware writes there too). Only a log under
this agent's ``vm_dir`` is read: a VM defined from an operator's own XML may name
any file, and this function must not become a way to read one.
"""

from __future__ import annotations

import collections
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from ..errors import FunctionError
from ..functions import FunctionContext, function
from .spec import validate_name

CONSOLE_LOG = "console.log"
MAX_LINES = 10_000
# A line longer than this is cut: a guest can write anything to its console.
MAX_LINE_CHARS = 4096


def console_log_path(vm_dir: Path, name: str) -> Path:
    """Where ``virt.init`` has the console of VM ``name`` written."""
    return vm_dir / name / CONSOLE_LOG


@function("virt.console_log")
def console_log(ctx: FunctionContext, name: str, lines: int = 50) -> dict[str, Any]:
    """The last ``lines`` lines of the VM's serial console log (``lines`` from 1 to 10,000)."""
    if not isinstance(lines, int) or not 1 <= lines <= MAX_LINES:
        raise FunctionError(f"lines must be a whole number from 1 to {MAX_LINES}, not {lines!r}")
    with ctx.libvirt.call("read the console log of", name) as conn:
        xml = ctx.libvirt.domain(conn, validate_name(name)).XMLDesc(0)
    logged = [e.get("file", "") for e in ET.fromstring(xml).findall("./devices/serial/log")]
    vm_dir = ctx.virt.vm_dir.resolve()
    path = next((Path(f) for f in logged if f and Path(f).resolve().is_relative_to(vm_dir)), None)
    if path is None:
        raise FunctionError(f"{name} has no console log under {vm_dir} (only VMs made by virt.init have one)")
    if not path.exists():
        return {"name": name, "file": str(path), "lines": [], "note": "nothing written yet (has the VM started?)"}
    try:
        with path.open("rb") as log:
            tail = collections.deque(log, maxlen=lines)
    except OSError as exc:
        raise FunctionError(f"cannot read the console log {path}: {exc.strerror or exc}") from exc
    text = [raw.decode("utf-8", errors="replace").rstrip("\r\n")[:MAX_LINE_CHARS] for raw in tail]
    return {"name": name, "file": str(path), "lines": text}
