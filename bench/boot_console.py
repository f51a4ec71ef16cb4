"""For bench/boot.py: a guest's serial console as the record of its boot, read as it is written.

virtlogd writes the console of a VM made by ``virt init`` to ``<vm_dir>/<name>/console.log`` on the
hypervisor (what ``saltmarsh virt console-log`` shows). ``ConsoleTail`` follows that file and stamps
each line with the wall time it first saw it; ``milestones`` finds the boot's milestones among the
lines: the kernel's and systemd's first lines, and systemd's status lines for cloud-init's stages and
the agent's unit, with the guest's own clock where a line carries it (the kernel's ``[ 12.3]``,
cloud-init's ``Up 12.3 seconds``).
"""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path

POLL_SECONDS = 0.1

# (key, label, what marks it: a pattern, or a (verb, unit) for systemd's status line "[  OK  ] Finished
# cloud-init.service", which systemd may shorten to the console's width with an ellipsis, as in
# "cloud-init.servic…"). The first line any marker of a milestone matches is its time.
Marker = re.Pattern[str] | tuple[str, str]
CONSOLE_MILESTONES: tuple[tuple[str, str, tuple[Marker, ...]], ...] = (
    ("kernel", "kernel started (its first line)", (re.compile(r"Linux version \d"),)),
    ("systemd", "systemd started (PID 1's first line)", (re.compile(r"systemd\[1\]: systemd \d+|Welcome to "),)),
    ("init-local", "cloud-init init-local done", (("Finished", "cloud-init-local.service"),)),
    ("init", "cloud-init init done (agent.yaml written)", (("Finished", "cloud-init.service"),)),
    ("agent-unit", "saltmarsh-agent.service started", (("Started", "saltmarsh-agent.service"),)),
    # systemd leaves out some status lines once a getty shares the console: the next stage's start also marks it
    ("config", "cloud-init config done", (("Finished", "cloud-config.service"),
                                          re.compile(r"Cloud-init v\. \S+ running 'modules:final'"))),
    ("final", "cloud-init final done", (("Finished", "cloud-final.service"),
                                        re.compile(r"Cloud-init v\. \S+ finished at "))),
)
STATUS_LINE = re.compile(r"\[\s*OK\s*\] (Started|Finished) (\S+)")
SHORTENED_MIN = 12  # fewer characters of a unit's name than this before the ellipsis could name another unit
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")  # colours, in images that still have them
KERNEL_CLOCK = re.compile(r"\[\s*([0-9]+\.[0-9]+)\] ")
CLOUD_INIT_CLOCK = re.compile(r"Cloud-init v\. \S+ (?:running '([a-z:-]+)'|(finished)) at .* Up ([0-9.]+) seconds")

Lines = list[tuple[float, str]]


class ConsoleTail:
    """The lines of a console log as they appear (colour codes removed), each with the wall time it was seen."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lines: Lines = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._follow, name="console-tail", daemon=True)
        self._thread.start()

    def _follow(self) -> None:
        partial = b""
        offset = 0
        while not self._stop.is_set():
            try:
                with self.path.open("rb") as log:
                    log.seek(offset)
                    data = log.read()
            except FileNotFoundError:  # virtlogd makes it when the VM starts
                data = b""
            offset += len(data)
            now = time.time()
            *complete, partial = (partial + data).split(b"\n")
            self.lines.extend((now, ANSI.sub("", raw.decode("utf-8", errors="replace")).rstrip("\r"))
                              for raw in complete)
            self._stop.wait(POLL_SECONDS)

    def stop(self) -> None:
        """Stop following."""
        self._stop.set()
        self._thread.join(timeout=5)

    def wait_for(self, key: str, timeout: float) -> bool:
        """Wait (at most ``timeout``) until the console shows milestone ``key``; True if it did."""
        markers = next(markers for k, _, markers in CONSOLE_MILESTONES if k == key)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(marks(marker, line) for _, line in list(self.lines) for marker in markers):
                return True
            time.sleep(POLL_SECONDS * 5)
        return False


def milestones(lines: Lines) -> tuple[dict[str, float], dict[str, float]]:
    """The time of each milestone in ``lines``, and the guest's own clock at those that carry it.

    The guest clocks also hold cloud-init's "Up N seconds" at the start of each of its stages, keyed
    ``cloud-init STAGE``, and at its end, ``cloud-init finished``.
    """
    at: dict[str, float] = {}
    clocks: dict[str, float] = {}
    for key, _, markers in CONSOLE_MILESTONES:
        found = next(((when, line) for when, line in lines if any(marks(m, line) for m in markers)), None)
        if found is not None:
            at[key] = found[0]
            clock = KERNEL_CLOCK.search(found[1])
            if clock:
                clocks[key] = float(clock.group(1))
    for _, line in lines:
        match = CLOUD_INIT_CLOCK.search(line)
        if match:
            clocks.setdefault(f"cloud-init {match.group(1) or match.group(2)}", float(match.group(3)))
    return at, clocks


def marks(marker: Marker, line: str) -> bool:
    """True if ``line`` is the milestone ``marker``: a match of the pattern, or the (verb, unit) status line."""
    if isinstance(marker, re.Pattern):
        return marker.search(line) is not None
    status = STATUS_LINE.search(line)
    if status is None or status.group(1) != marker[0]:
        return False
    name, shortened, _ = status.group(2).partition("…")
    if shortened:
        return len(name) >= SHORTENED_MIN and marker[1].startswith(name)
    return name.rstrip(".") == marker[1]
