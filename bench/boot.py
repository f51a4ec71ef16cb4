"""The boot benchmark: ``saltmarsh image build``, then seeded guests from that image on the real libvirtd, under TCG.

    flock /tmp/saltmarsh-libvirtd.lock .venv/bin/python -m bench.boot [--runs 3] [--image FILE] [--keep DIR]

As root (image build and the system libvirtd need it), with one libvirtd at a time on /run/libvirt
(hence the lock, shared with the integration tests' helpers).

1. Build: ``saltmarsh image build debian-12 --force --cache-dir /var/cache/saltmarsh-images/cache``
   into a temporary file root; its wall time (the CLI process), which layers came from the cache (the
   Debian base normally does: it is kept for a week), the qcow2's size. ``--image FILE`` boots FILE
   instead and builds nothing.
2. Boot, ``--runs`` times, one guest at a time: a master (tests/cluster.py) serving the image, a
   hypervisor agent on qemu:///system (tests/realvirt.py starts libvirtd unless one runs) with
   ``virt.domain_type: qemu`` (TCG: this machine's KVM cannot run a guest kernel) and a ``user`` NIC, and
   ``saltmarsh virt init NAME 2 768 master://debian-12.qcow2 --enable-qcow --seed --master-address 10.0.2.2
   --nic-profile lab --no-wait``. Every figure is seconds after that command returned:

   * from the guest's serial console (the file virtlogd keeps on the hypervisor, ``virt console-log``),
     each line stamped when it appeared: the kernel's first line, systemd's first line, systemd's status
     lines for the cloud-init stages the image runs and for the agent's unit. The kernel's own clock
     (``[ 12.3]``) and cloud-init's (``Up 12.3 seconds``) are shown beside them, as guest uptime;
   * from the master's event bus: the join (``saltmarsh/key/NAME/accepted``: the token redeemed) and the
     agent up (``saltmarsh/agent/NAME/up``, what ``virt init`` waits for without ``--no-wait``);
   * the first ``saltmarsh run NAME test.ping`` answered True (the CLI process included), pinged from
     the moment the agent was up; then the guest's own ``host.info``: its ``uptime_seconds`` says when
     its kernel started, by its own clock, a check on the console's stamps.

   The guest's agent offers no function that reads its journal or runs systemd-analyze (and a shell
   function is not one to add for a benchmark), so the console is the guest's record here. After the
   ping the console is followed until cloud-init's final stage is done (it runs beside the agent now).

Figures are medians (min–max) of the runs, each run's beside them; a stage is the median of each run's
time from the milestone before. The table goes to stdout, progress to stderr. Everything started here is
stopped here, the VMs purged.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tests.cluster import BIN, Cluster, wait_until
from tests.realvirt import TEST_PREFIX, RealLibvirtd, libvirtd_with_image_dir

from .boot_console import CONSOLE_MILESTONES, ConsoleTail, milestones

IMAGE = "debian-12"
CACHE_DIR = Path("/var/cache/saltmarsh-images/cache")
AGENT = "kvm1"
NAME_PREFIX = f"{TEST_PREFIX}bench-boot-"  # narrower than TEST_PREFIX: never touch other sessions' VMs
VM_CPUS, VM_MEMORY_MIB = "2", "768"
GUEST_MASTER = "10.0.2.2"  # the host's loopback, as QEMU's user networking shows it to the guest
GOAL_SECONDS = 60.0  # issue 11: first answered ping at most this long after virt init returns, under TCG
BUILD_TIMEOUT = 1800.0
BUILD_BUSY = "another image build is running"  # build.py's refusal while another build holds the cache
BUILD_RETRY_SECONDS = 10.0
JOIN_TIMEOUT = 300.0
PING_TIMEOUT = 60.0
CLOUD_INIT_TIMEOUT = 180.0  # after the ping, for cloud-init's final stage
STARTUP_TIMEOUT = 120.0
BUILD_STAGES = ("source", "wheels", "base", "rootfs", "disk", "qcow2", "publish")  # build.py's, in order

EVENT_MILESTONES = (
    ("token", "joined: its token redeemed (event)", "key/{name}/accepted"),
    ("up", "its agent up (event)", "agent/{name}/up"),
)
PING = ("ping", "first test.ping answered (CLI)")
# host.info's uptime_seconds, asked right after the first ping: when the guest's clock started (its kernel's
# first line), by the guest's own account, to check the console's stamps against.
BOOTED = ("booted", "kernel started, by its own clock (host.info uptime)")


def say(text: str) -> None:
    """Progress, on stderr so that stdout holds only the table."""
    print(f"[bench.boot] {text}", file=sys.stderr, flush=True)


# ----- the build -----------------------------------------------------------------------------------


@dataclass
class BuildFigures:
    """What one ``image build`` took and made."""

    seconds: float
    size: int
    virtual_size: int
    base: str
    stages: dict[str, float]


def build_image(master_dir: Path, cache_dir: Path) -> BuildFigures:
    """``saltmarsh image build IMAGE`` into the master's file root; its wall time and what it made.

    Another build holding the cache's lock (a test's, on a shared machine) is waited for: the build
    refuses at once, and is tried again every BUILD_RETRY_SECONDS, that wait not counted.
    """
    argv = [str(BIN / "saltmarsh"), "-c", str(master_dir), "image", "build", IMAGE, "--force",
            "--cache-dir", str(cache_dir), "--json"]
    say(f"$ {' '.join(argv)}")
    deadline = time.monotonic() + BUILD_TIMEOUT
    while True:
        started = time.monotonic()
        code, progress, summary = run_build(argv)
        if code == 0:
            break
        if BUILD_BUSY not in "".join(progress) or time.monotonic() > deadline:
            raise RuntimeError(f"image build exited {code}")
        time.sleep(BUILD_RETRY_SECONDS)
    seconds = time.monotonic() - started
    base = next((line.split(" s  ", 1)[-1].strip() for line in progress if " base " in line), "")
    result = json.loads(summary)
    return BuildFigures(seconds, result["size"], result["virtual_size"], base, result["stages"])


def run_build(argv: list[str]) -> tuple[int, list[str], str]:
    """Run the build, passing its progress on as it comes: its exit code, progress lines and stdout."""
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None and proc.stdout is not None
    progress = []
    for line in proc.stderr:
        say(f"  {line.rstrip()}")
        progress.append(line)
    summary = proc.stdout.read()
    return proc.wait(BUILD_TIMEOUT), progress, summary


def given_image(path: Path, file_root: Path) -> BuildFigures:
    """``path`` put into the file root as IMAGE.qcow2 (a hard link where it can be), in place of a build."""
    target = file_root / f"{IMAGE}.qcow2"
    try:
        os.link(path, target)
    except OSError:
        shutil.copyfile(path, target)
    size = target.stat().st_size
    return BuildFigures(0.0, size, 0, f"not built: --image {path}", {})


# ----- one boot ------------------------------------------------------------------------------------


class EventWatch:
    """The wall times (the master's clock) of the first event of each tag in ``tags``, recorded in a thread."""

    def __init__(self, cluster: Cluster, tags: dict[str, str]) -> None:
        from saltmarsh.master.control.client import MasterClient

        self.seen: dict[str, float] = {}
        self._wanted = {f"saltmarsh/{tag}": key for key, tag in tags.items()}
        self._all = threading.Event()
        self._client = MasterClient.from_config_dir(cluster.master_dir)
        self._thread = threading.Thread(target=self._record, name="event-watch", daemon=True)
        self._thread.start()

    def _record(self) -> None:
        for event in self._client.events("saltmarsh/", idle_timeout=JOIN_TIMEOUT):
            key = self._wanted.get(event.tag)
            if key is not None and key not in self.seen:
                self.seen[key] = event.ts
            if len(self.seen) == len(self._wanted):
                self._all.set()
                return

    def wait(self, timeout: float) -> bool:
        """True once every tag was seen; False after ``timeout``."""
        return self._all.wait(timeout)

    def close(self) -> None:
        """End the subscription."""
        self._thread.join(timeout=5)
        self._client.close()


@dataclass
class BootRun:
    """One guest's boot: each milestone's seconds after ``virt init`` returned, and the guest's own clocks."""

    name: str
    init_seconds: float
    at: dict[str, float] = field(default_factory=dict)
    guest_clock: dict[str, float] = field(default_factory=dict)
    console: list[tuple[float, str]] = field(default_factory=list)
    guest: str = ""


def init_argv(name: str) -> list[str]:
    """The ``virt init`` arguments of one seeded guest (without ``saltmarsh -c DIR``)."""
    return ["virt", "init", name, VM_CPUS, VM_MEMORY_MIB, f"master://{IMAGE}.qcow2", "--enable-qcow", "--seed",
            "--master-address", GUEST_MASTER, "--nic-profile", "lab", "--no-wait", "--timeout", "300"]


def first_ping(cluster: Cluster, name: str) -> float:
    """The wall time at which ``run NAME test.ping`` first came back True."""
    deadline = time.monotonic() + PING_TIMEOUT
    while time.monotonic() < deadline:
        result = cluster.cli("run", name, "test.ping", "--json", "--timeout", "5", check=False, timeout=30)
        if result.returncode == 0 and json.loads(result.stdout or "{}") == {name: True}:
            return time.time()
    raise RuntimeError(f"{name}'s agent is up but did not answer test.ping within {PING_TIMEOUT:.0f} s")


def boot_once(cluster: Cluster, name: str, vm_dir: Path) -> BootRun:
    """Boot one seeded guest and time its milestones; it is purged after."""
    events = EventWatch(cluster, {key: tag.format(name=name) for key, _, tag in EVENT_MILESTONES})
    console = ConsoleTail(vm_dir / name / "console.log")
    try:
        started = time.monotonic()
        cluster.cli(*init_argv(name), timeout=400)
        returned = time.time()
        run = BootRun(name, time.monotonic() - started)
        say(f"{name}: virt init returned after {run.init_seconds:.1f} s; waiting for its agent (TCG)")
        await_agent(cluster, run, events, console, returned)
    finally:
        events.close()
        console.stop()
    run.console = [(when - returned, line) for when, line in console.lines]
    at, run.guest_clock = milestones(run.console)
    run.at.update(at)
    ask_guest(cluster, run, returned)
    say(f"{name}: first ping answered {run.at['ping']:.1f} s after virt init returned (TCG)")
    cluster.cli("virt", "purge", name, "--timeout", "120", timeout=200)
    return run


def await_agent(cluster: Cluster, run: BootRun, events: EventWatch, console: ConsoleTail, returned: float) -> None:
    """Wait for the guest's agent to join and answer, then for cloud-init's end; note when each happened."""
    if not events.wait(JOIN_TIMEOUT):
        tail = "\n".join(line for _, line in console.lines[-40:])
        raise RuntimeError(f"{run.name}'s agent did not come up within {JOIN_TIMEOUT:.0f} s; console:\n{tail}")
    run.at["ping"] = first_ping(cluster, run.name) - returned
    run.at.update({key: ts - returned for key, ts in events.seen.items()})
    # cloud-init's last stages run beside the agent, at low priority: they may well end after the ping.
    console.wait_for("final", CLOUD_INIT_TIMEOUT)


def ask_guest(cluster: Cluster, run: BootRun, returned: float) -> None:
    """The guest's own host.info: what it runs, and when its clock started (``uptime_seconds``)."""
    asked = time.time()
    inside = cluster.cli_json("run", run.name, "host.info")[run.name]
    if "uptime_seconds" in inside:  # agents before issue 12 did not report it
        run.at["booted"] = (asked + time.time()) / 2 - inside["uptime_seconds"] - returned
    run.guest = f"{inside['os']}, kernel {inside['kernel']} (its own agent's host.info)"


def keep_console(run: BootRun, directory: Path) -> None:
    """Write the run's console, each line with its seconds after virt init returned."""
    directory.mkdir(parents=True, exist_ok=True)
    text = "".join(f"{when:+8.2f}  {line}\n" for when, line in run.console)
    (directory / f"{run.name}.console.txt").write_text(text)


# ----- the cluster ---------------------------------------------------------------------------------


@contextlib.contextmanager
def hypervisor(base: Path, file_root: Path) -> Iterator[tuple[Cluster, Path]]:
    """A master serving ``file_root`` and agent AGENT on the real libvirtd (TCG, a ``user`` NIC profile "lab");
    yields the cluster and the agent's vm_dir. Stops all of it, libvirtd too if it was started here."""
    say("starting (or reusing) the system libvirtd")
    with libvirtd_with_image_dir(NAME_PREFIX) as (_, image_dir):
        cluster = Cluster(base / "cluster", file_roots=[str(file_root)], log_level="info")
        try:
            cluster.start_master()
            cluster.start_agents(AGENT, libvirt_uri=RealLibvirtd.uri, log_level="info",
                                 virt={"vm_dir": str(image_dir / "vms"), "images_dir": str(image_dir / "cache"),
                                       "domain_type": "qemu", "nic_profiles": {"lab": [{"type": "user"}]}})
            wait_until(lambda: cluster.cli_json("virt", "host-info").get(AGENT, {}).get("libvirt"),
                       timeout=STARTUP_TIMEOUT, interval=0.3, what="the real hypervisor in the inventory")
            yield cluster, image_dir / "vms"
        except BaseException:
            cluster.print_log_tails()
            raise
        finally:
            cluster.stop()


# ----- the table -----------------------------------------------------------------------------------


def spread(values: list[float]) -> str:
    """``median (min–max)`` of ``values``."""
    text = f"{statistics.median(values):.1f}"
    return f"{text} ({min(values):.1f}–{max(values):.1f})" if len(values) > 1 else text


def all_milestones() -> list[tuple[str, str]]:
    """Every milestone as (key, label)."""
    console = [(key, label) for key, label, _ in CONSOLE_MILESTONES]
    events = [(key, label) for key, label, _ in EVENT_MILESTONES]
    return [BOOTED, *console, *events, PING]


def rows(runs: list[BootRun]) -> list[tuple[str, ...]]:
    """One row per milestone that every run reached, in the order of their medians."""
    reached = [(key, label) for key, label in all_milestones() if all(key in run.at for run in runs)]
    reached.sort(key=lambda item: statistics.median(run.at[item[0]] for run in runs))
    table = [("virt init itself (image fetch, disk, seed, define, start)", spread([r.init_seconds for r in runs]),
              "—", *(f"{r.init_seconds:.1f}" for r in runs), "—")]
    previous: str | None = None
    for key, label in reached:
        at = [run.at[key] for run in runs]
        stage = [run.at[key] - (run.at[previous] if previous else 0.0) for run in runs]
        clocks = [run.guest_clock[key] for run in runs if key in run.guest_clock]
        table.append((label, spread(at), f"{statistics.median(stage):.1f}", *(f"{value:.1f}" for value in at),
                      spread(clocks) if clocks else "—"))
        previous = key
    return table


def cloud_init_clocks(runs: list[BootRun]) -> str:
    """cloud-init's own "Up N seconds" at the start of each stage and at its end, medians."""
    stages = ("cloud-init init-local", "cloud-init init", "cloud-init modules:config", "cloud-init modules:final",
              "cloud-init finished")
    parts = [f"{stage.split()[1]} {statistics.median(r.guest_clock[stage] for r in runs):.1f}"
             for stage in stages if all(stage in r.guest_clock for r in runs)]
    return ", ".join(parts) or "none printed"


def build_line(build: BuildFigures) -> str:
    """The image build's wall time, where its base came from, and its stages; or that nothing was built."""
    if not build.stages:
        return f"image: {build.base}, "
    stages = ", ".join(f"{k} {build.stages[k]:.0f}" for k in BUILD_STAGES if k in build.stages)
    return f"image build: {build.seconds:.0f} s wall (Debian base {build.base}; stages in s: {stages}), "


def render(build: BuildFigures, runs: list[BootRun], guest: str, load: tuple[tuple[float, ...], ...]) -> str:
    """The table with the conditions above it and the goal below."""
    header = ("MILESTONE (TCG)", "S AFTER VIRT INIT (TCG)", "STAGE S", *(f"RUN {i + 1}" for i in range(len(runs))),
              "GUEST UPTIME (TCG)")
    table = rows(runs)
    widths = [max(len(row[i]) for row in (header, *table)) for i in range(len(header))]

    def line(row: tuple[str, ...]) -> str:
        return "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()

    averages = "; ".join(f"{when} {' '.join(f'{v:.2f}' for v in values)}"
                         for when, values in zip(("start", "end"), load, strict=True))
    ping = statistics.median(run.at["ping"] for run in runs)
    return "\n".join([
        "saltmarsh boot benchmark: a seeded guest from saltmarsh image build, on the real libvirtd under TCG "
        "(QEMU software emulation, virt.domain_type qemu: this machine's KVM cannot run a guest kernel)",
        f"machine: {os.cpu_count()} CPUs, {platform.system()} {platform.release()}; load averages (1, 5, 15 min) "
        f"at the {averages}",
        f"{build_line(build)}{IMAGE}.qcow2 {build.size / 2**20:.0f} MiB"
        + (f" ({build.virtual_size / 2**30:g} GiB disk)" if build.virtual_size else ""),
        f"guest (TCG): {VM_CPUS} vCPU, {VM_MEMORY_MIB} MiB, a user NIC, seeded; {guest}; {len(runs)} run(s), "
        "each milestone's median (min–max) in seconds after `virt init --no-wait` returned",
        "", line(header), "  ".join("-" * w for w in widths), *map(line, table), "",
        f"cloud-init's own clock (guest uptime, TCG), medians: {cloud_init_clocks(runs)}",
        f"goal (issue 11): first answered ping <= {GOAL_SECONDS:.0f} s after virt init returns, under TCG: "
        f"{ping:.1f} s (TCG), {'met' if ping <= GOAL_SECONDS else 'NOT met'}",
    ])


# ----- main ----------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(prog="python -m bench.boot", description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="guests booted, one after the other (default 3)")
    parser.add_argument("--image", type=Path, help="boot this qcow2 instead of building one")
    parser.add_argument("--cache-dir", type=Path, default=CACHE_DIR, help=f"the image build's cache ({CACHE_DIR})")
    parser.add_argument("--keep", type=Path, help="keep the image and each run's console (time-stamped) here")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be positive")
    if os.geteuid() != 0:
        parser.error("run it as root: image build and the system libvirtd need it")
    return args


def measure(args: argparse.Namespace, base: Path) -> tuple[BuildFigures, list[BootRun], str]:
    """Build (or take) the image, then boot ``args.runs`` guests from it."""
    file_root = base / "file_root"
    file_root.mkdir()
    with hypervisor(base, file_root) as (cluster, vm_dir):
        build = given_image(args.image, file_root) if args.image else build_image(cluster.master_dir,
                                                                                    args.cache_dir)
        if args.keep and not args.image:
            args.keep.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(file_root / f"{IMAGE}.qcow2", args.keep / f"{IMAGE}.qcow2")
        stamp = time.strftime("%H%M%S")
        runs: list[BootRun] = []
        for index in range(args.runs):
            name = f"{NAME_PREFIX}{stamp}-{index}"
            say(f"boot {index + 1} of {args.runs}: {name} (TCG)")
            runs.append(boot_once(cluster, name, vm_dir))
            if args.keep:
                keep_console(runs[-1], args.keep)
        return build, runs, runs[-1].guest


def main(argv: list[str] | None = None) -> int:
    """Build, boot, print the table."""
    args = parse_args(argv)
    load_start = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench-boot-") as tmp:
        build, runs, guest = measure(args, Path(tmp))
    print(render(build, runs, guest, (load_start, os.getloadavg())), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
