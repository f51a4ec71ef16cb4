"""``saltmarsh virt ...`` and ``saltmarsh host maintenance|role|setup``: the cloud controller's commands."""

from __future__ import annotations

import argparse
import re
import sys
from typing import TYPE_CHECKING, Any

from saltmarsh.protocol.bounds import MAX_CONSOLE_LINES

from . import enroll, setup
from .arguments import integer, labels, seconds
from .connect import connect, given
from .output import clean, fail, print_json
from .table import HELP

if TYPE_CHECKING:
    from ..service.types.vms import WaitJoinedRequest

OPERATIONS = ("start", "shutdown", "stop", "reboot", "reset", "pause", "resume", "purge", "info", "vnc")
SIZE = re.compile(r"^(\d+)([MmGg]?)i?[Bb]?$")
RULE = "----------"


def register(sub: Any) -> None:
    """Add ``virt`` and ``host``."""
    register_virt(sub)
    register_host(sub)


def register_virt(sub: Any) -> None:
    """Add ``virt``."""
    virt = sub.add_parser("virt", help=HELP["virt"])
    actions = virt.add_subparsers(dest="action", required=True)
    for name, handler, helptext in (("host-info", host_info, "hypervisors: resources, VMs, state"),
                                    ("list", list_vms, "VMs per hypervisor")):
        parser = actions.add_parser(name, help=helptext)
        parser.add_argument("--json", action="store_true")
        parser.set_defaults(handler=handler)
    query = actions.add_parser("query", help="per hypervisor and VM: CPU, memory, state, graphics, disks, NICs")
    query.add_argument("name", nargs="?")
    query.add_argument("--json", action="store_true")
    query.set_defaults(handler=query_vms)
    _register_init(actions)
    for op in OPERATIONS:
        parser = actions.add_parser(op, help=f"{op} a VM by name, on whichever hypervisor holds it")
        parser.add_argument("name")
        parser.add_argument("--json", action="store_true")
        parser.add_argument("--timeout", type=seconds(), default=None)
        parser.set_defaults(handler=operate, op=op)
    migrate = actions.add_parser("migrate", help="move a running VM to another hypervisor over libvirt TLS")
    migrate.add_argument("name")
    migrate.add_argument("target", metavar="TARGET_HV")
    migrate.add_argument("--offline", action="store_true", help="move the definition only (VM not running)")
    migrate.add_argument("--copy-storage", choices=("all", "inc"), default="")
    migrate.add_argument("--max-downtime", type=integer(0), default=0, metavar="MS")
    migrate.add_argument("--bandwidth", type=integer(0), default=0, metavar="MiB/s")
    migrate.add_argument("--postcopy", action="store_true",
                         help="switch to post-copy as soon as memory moves: the VM runs on the target at once and "
                              "pulls the rest (a network failure after the switch loses the VM)")
    migrate.add_argument("--dry-run", action="store_true", help="check the target and show the plan only")
    migrate.add_argument("--timeout", type=seconds(), default=None)
    migrate.add_argument("--json", action="store_true")
    migrate.set_defaults(handler=migrate_vm)
    abort = actions.add_parser("migrate-abort", help="abort a running migration (the VM stays where it was)")
    abort.add_argument("name")
    abort.set_defaults(handler=abort_migration)
    console = actions.add_parser("console-log", help="the tail of a VM's serial console (why a guest did not boot)")
    console.add_argument("name")
    console.add_argument("--lines", type=integer(1, MAX_CONSOLE_LINES), default=None, help="how many of the last lines")
    console.add_argument("--json", action="store_true")
    console.set_defaults(handler=show_console_log)


def register_host(sub: Any) -> None:
    """Add ``host``."""
    host = sub.add_parser("host", help=HELP["host"])
    host_actions = host.add_subparsers(dest="action", required=True)
    maintenance = host_actions.add_parser("maintenance", help="placement skips a host in maintenance")
    maintenance.add_argument("state", choices=("on", "off"))
    maintenance.add_argument("host")
    maintenance.set_defaults(handler=set_maintenance)
    role = host_actions.add_parser("role", help="an agent that joined by token is a guest until made a hypervisor")
    role.add_argument("id")
    role.add_argument("role", choices=("hypervisor", "guest"))
    role.set_defaults(handler=set_role)
    setup.register(host_actions)
    enroll.register(host_actions)


def _register_init(actions: Any) -> None:
    init = actions.add_parser("init", help="create a VM, placed automatically unless --host is given")
    init.add_argument("name")
    init.add_argument("cpus", type=integer(1))
    init.add_argument("memory", type=memory_mib, help="MiB, or with a unit: 512M, 2G")
    init.add_argument("image", nargs="?", help="absolute path on the hypervisor or master://path; none: blank disk")
    init.add_argument("--host")
    init.add_argument("--label", type=labels, action="append", default=[],
                      help="k=v the hypervisor must carry (repeatable)")
    init.add_argument("--nic-profile", help="default: the agent's profile named default")
    init.add_argument("--disk-profile", help="default: the agent's profile named default")
    init.add_argument("--enable-qcow", action="store_true", help="qcow2 overlay on the base image, not a copy")
    init.add_argument("--enable-vnc", action="store_true")
    init.add_argument("--seed", action="store_true")
    init.add_argument("--join-timeout", type=seconds(), default=None, metavar="S",
                      help="with --seed: wait this long for the guest's agent to join")
    init.add_argument("--no-wait", action="store_true", help="with --seed: do not wait for the guest's agent")
    init.add_argument("--master-address",
                      help="with --seed: the master address the guest's agent uses (default: seed.master_address)")
    init.add_argument("--dry-run", action="store_true", help="show the candidates, why each was dropped, the choice")
    init.add_argument("--timeout", type=seconds(), default=None)
    init.add_argument("--json", action="store_true")
    init.set_defaults(handler=init_vm)


def memory_mib(text: str) -> int:
    """Parse 512, 512M or 2G into MiB (at least 1)."""
    match = SIZE.match(text.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r} is not a memory size (512, 512M, 2G)")
    value = int(match.group(1))
    value = value * 1024 if match.group(2).lower() == "g" else value
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is no memory: a VM needs at least 1 MiB")
    return value


def nested(data: Any, indent: int = 0) -> list[str]:
    """Salt's nested layout: a key on its line, its value indented below, dicts opened by a rule."""
    pad = " " * indent
    if isinstance(data, dict):
        lines = [pad + RULE]
        for key in sorted(data, key=str):
            lines.append(f"{pad}{clean(key)}:")
            lines.extend(nested(data[key], indent + 4))
        return lines
    if isinstance(data, list):
        return [f"{pad}- {clean(item)}" for item in data] or [pad + "[]"]
    return [f"{pad}{clean(data)}"]


def _fields(value: Any) -> dict[str, Any]:
    """``value`` if it is a dict, else {}: inventory comes from agents, so no shape is taken for granted."""
    return value if isinstance(value, dict) else {}


def _display_vm(host: str, vm: dict[str, Any]) -> dict[str, Any]:
    graphics = _fields(vm.get("graphics"))
    shown = f"{graphics.get('type')} - {host}:{graphics.get('port', -1)}" \
        if graphics.get("type") not in (None, "none") else "none"
    disks = {dev: {"file": d.get("file"), "file format": d.get("format"), "size": d.get("virtual_size", 0),
                   "disk size": d.get("disk_size", 0)}
             for dev, d in ((dev, _fields(d)) for dev, d in _fields(vm.get("disks")).items())}
    nics = {mac: {"mac": mac, "source": n.get("source"), "type": n.get("type"), "model": n.get("model")}
            for mac, n in ((mac, _fields(n)) for mac, n in _fields(vm.get("nics")).items())}
    return {"cpu": vm.get("cpu"), "mem": vm.get("memory_mib"), "state": vm.get("state"), "graphics": shown,
            "disks": disks, "nics": nics, "autostart": vm.get("autostart")}


def _print_nested(data: dict[str, Any]) -> None:
    for key in sorted(data):
        print(f"{clean(key)}:")
        print("\n".join(nested(data[key], 4)))


def host_info(args: argparse.Namespace) -> int:
    """Print every hypervisor's resources and state."""
    from ..service.types.vms import HostInfoRequest

    with connect(args.config_dir) as client:
        hosts = client.request(HostInfoRequest())
    if args.json:
        print_json(hosts)
        return 0
    print(f"{'HOST':<20} {'STATE':<12} {'CPU FREE/ALL':>12} {'MEM FREE/ALL MiB':>18} {'VMS':>4}  DRIVER")
    for name, h in sorted(hosts.items()):
        state = "maintenance" if h["maintenance"] else ("up" if h["up"] else "down")
        if not h["libvirt"]:
            state = "no libvirt"
        node = _fields(h["node_info"])
        print(f"{clean(name):<20} {state:<12} {clean(h['freecpu']):>5}/{clean(node.get('cpus', 0)):<6} "
              f"{clean(h['freemem']):>8}/{clean(node.get('memory_mib', 0)):<9} {clean(h['vms']):>4}  "
              f"{clean(node.get('driver', ''))}")
    return 0


def list_vms(args: argparse.Namespace) -> int:
    """Print VMs per hypervisor."""
    from ..service.types.vms import VmListRequest

    with connect(args.config_dir) as client:
        vms = client.request(VmListRequest())
    if args.json:
        print_json(vms)
        return 0
    for host, states in sorted(vms.items()):
        print(f"{clean(host)}:")
        for name, state in states.items():
            print(f"    {clean(name):<30} {clean(state)}")
    return 0


def query_vms(args: argparse.Namespace) -> int:
    """Print the inventory in the layout of Salt Virt's query."""
    from ..service.types.vms import QueryRequest

    with connect(args.config_dir, reply_timeout=60) as client:
        result = client.request(QueryRequest(args.name))
    if args.json:
        print_json(result)
        return 0
    shown = {host: {"freecpu": h["freecpu"], "freemem": h["freemem"], "node_info": h["node_info"],
                    "vm_info": {n: _display_vm(host, _fields(vm)) for n, vm in h["vm_info"].items()}}
             for host, h in result.items()}
    _print_nested(shown)
    return 0


def init_vm(args: argparse.Namespace) -> int:
    """Create a VM (or explain where it would go); exit 1 if no hypervisor can hold it."""
    if args.master_address is not None and not args.seed:
        fail("--master-address is what a seeded guest is told: it needs --seed")
        return 2
    wanted: dict[str, str] = {}
    for pairs in args.label:
        wanted.update(pairs)
    image = None if args.image in (None, "none", "-") else args.image
    from ..service.types.vms import InitRequest

    request = given(InitRequest, name=args.name, cpus=args.cpus, memory_mib=args.memory, image=image, host=args.host,
                    labels=wanted, nic_profile=args.nic_profile, disk_profile=args.disk_profile,
                    enable_qcow=args.enable_qcow, enable_vnc=args.enable_vnc, seed=args.seed,
                    master_address=args.master_address, dry_run=args.dry_run, timeout=args.timeout)
    with connect(args.config_dir, reply_timeout=request.timeout + 10) as client:
        result = client.request(request)
    waits = args.seed and not args.no_wait and not args.dry_run
    if args.json:
        if waits:  # one JSON document: the creation and the join together
            joined = _wait_joined(args)
            print_json({**result, "joined": joined})
            return 0 if joined["joined"] else _not_joined(args, joined)
        print_json(result)
    else:
        _print_decision(result)
    if args.dry_run:
        if result["choice"] is None:
            fail(f"no hypervisor can hold {args.name}")
            return 1
        return 0
    if not args.json:
        vm = result["vm"]
        print(f"created {clean(args.name)} on {clean(result['host'])}: {clean(vm.get('state'))}, "
              f"{clean(vm.get('cpu'))} CPU, {clean(vm.get('memory_mib'))} MiB")
        if isinstance(result.get("seed"), dict):
            print(f"    seeded: its agent joins the master at {clean(result['seed'].get('master_address'))}")
        graphics = _fields(vm.get("graphics"))
        if graphics.get("type") == "vnc":
            print(f"    vnc - {clean(result['host'])}:{clean(graphics.get('port'))} "
                  f"(listen {clean(graphics.get('listen'))}, password {clean(graphics.get('password', '?'))})")
    if waits:
        seconds_ = _join_request(args).timeout
        print(f"    waiting up to {seconds_:.0f} s for {clean(args.name)}'s own agent to join ...", flush=True)
        joined = _wait_joined(args)
        if not joined["joined"]:
            return _not_joined(args, joined)
        print(f"{clean(args.name)}: its agent joined {clean(joined['after'])} s after the VM was created")
    return 0


def _join_request(args: argparse.Namespace) -> WaitJoinedRequest:
    """The wait for a seeded guest's own agent, as the operator asked for it."""
    from ..service.types.vms import WaitJoinedRequest

    return given(WaitJoinedRequest, name=args.name, timeout=args.join_timeout)


def _wait_joined(args: argparse.Namespace) -> Any:
    """Wait (on the master) for a seeded guest's own agent to come up."""
    request = _join_request(args)
    with connect(args.config_dir, reply_timeout=request.timeout + 30) as client:
        return client.request(request)


def _not_joined(args: argparse.Namespace, joined: Any) -> int:
    """Say the guest's agent did not join, with its console's last lines; exit 1."""
    fail(f"{args.name}: the VM runs but its agent has not joined after {joined['after']:.0f} s; "
         "the last lines of its console follow (saltmarsh virt console-log NAME)")
    for line in joined.get("console", []):
        print(f"    {clean(line)}", file=sys.stderr)
    return 1


def _print_decision(result: dict[str, Any]) -> None:
    print("placement:")
    for c in result["candidates"]:
        verdict = f"dropped: {c['dropped']}" if c["dropped"] else "fits"
        print(f"    {clean(c['host']):<20} free {c['freemem']:>7} MiB {c['freecpu']:>4} CPU {c['vms']:>4} VMs  "
              f"{clean(verdict)}")
    print(f"    choice: {clean(result['choice'] or 'none')}")


def operate(args: argparse.Namespace) -> int:
    """Run an operation on a VM by name."""
    from ..service.types.vms import OpRequest

    request = given(OpRequest, op=args.op, name=args.name, timeout=args.timeout)
    with connect(args.config_dir, reply_timeout=request.timeout + 10) as client:
        result = client.request(request)
    if args.json:
        print_json(result)
    elif args.op == "info":
        _print_nested({args.name: _display_vm(result["host"], _fields(result["result"]))})
    elif args.op == "vnc":
        g = _fields(result["result"])
        password = g.get("password", "none")
        print(f"vnc - {clean(result['host'])}:{clean(g.get('port'))} (listen {clean(g.get('listen'))}, "
              f"password {clean(password)})")
    else:
        state = _fields(result["result"]).get("state", "done")
        print(f"{clean(args.name)} on {clean(result['host'])}: {clean(state)}")
    return 0


def _number(value: Any) -> float:
    """A progress figure as a number (0 for anything else: the event came from an agent)."""
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0


class ProgressBar:
    """A migration's progress on one stderr line, redrawn at each progress event."""

    def __init__(self) -> None:
        self.drawn = False

    def __call__(self, event: Any) -> None:
        """Redraw the bar from a progress event."""
        data = _fields(event.data)
        total = _number(data.get("total"))
        done = _number(data.get("done"))
        fraction = min(max(done / total, 0.0), 1.0) if total > 0 else 0.0
        bar = "#" * int(fraction * 30)
        rate = _number(data.get("bytes_per_s")) / 1e6
        sys.stderr.write(f"\r[{bar:<30}] {fraction:6.1%} {done / 1e6:8.1f}/{total / 1e6:.1f} MB {rate:6.1f} MB/s "
                         f"remaining {_number(data.get('remaining')) / 1e6:.1f} MB")
        sys.stderr.flush()
        self.drawn = True

    def end(self) -> None:
        """End the bar's line, so that what follows (the outcome, or the error) has its own."""
        if self.drawn:
            sys.stderr.write("\n")


def migrate_vm(args: argparse.Namespace) -> int:
    """Migrate a VM, showing progress, and print the confirmed outcome."""
    from ..service.types.vms import MigrateRequest

    request = given(MigrateRequest, name=args.name, target=args.target, offline=args.offline,
                    copy_storage=args.copy_storage, max_downtime_ms=args.max_downtime, bandwidth_mib=args.bandwidth,
                    postcopy=args.postcopy, dry_run=args.dry_run, timeout=args.timeout)
    progress = ProgressBar()
    try:
        with connect(args.config_dir, reply_timeout=request.timeout + 30) as client:
            result = client.request_with_events(request, progress)
    finally:
        progress.end()
    if args.json:
        print_json(result)
    elif args.dry_run:
        print(f"would migrate {clean(result['vm'])} from {clean(result['source'])} to {clean(result['target'])} "
              f"({clean(result['target_uri'])}{', tunnelled' if result['tunnelled'] else ''}): "
              f"needs {clean(result['memory_mib'])} MiB, {clean(result['target_freemem'])} MiB free")
    else:
        outcome = _fields(result["result"])
        how = ", switched to post-copy" if outcome.get("postcopy") else ""
        print(f"migrated {clean(result['vm'])} from {clean(result['source'])} to {clean(result['target'])} "
              f"in {clean(outcome.get('seconds'))} s (downtime {clean(outcome.get('downtime_ms'))} ms{how}), "
              "confirmed by both hosts' libvirt events")
    return 0


def abort_migration(args: argparse.Namespace) -> int:
    """Abort a running migration."""
    from ..service.types.vms import MigrateAbortRequest

    with connect(args.config_dir) as client:
        result = client.request(MigrateAbortRequest(args.name))
    print(f"aborted the migration of {clean(result['vm'])} on {clean(result['source'])}")
    return 0


def set_maintenance(args: argparse.Namespace) -> int:
    """Put a hypervisor in or out of maintenance."""
    from ..service.types.hosts import MaintenanceRequest

    with connect(args.config_dir) as client:
        result = client.request(MaintenanceRequest(args.host, args.state))
    print(f"{clean(result['host'])}: maintenance {'on' if result['maintenance'] else 'off'}")
    return 0


def set_role(args: argparse.Namespace) -> int:
    """Make an accepted agent a hypervisor or a guest."""
    from ..service.types.hosts import RoleRequest

    with connect(args.config_dir) as client:
        result = client.request(RoleRequest(args.id, args.role))
    print(f"{clean(result['id'])}: {clean(result['role'])}")
    return 0


def show_console_log(args: argparse.Namespace) -> int:
    """Print the tail of a VM's serial console log."""
    from ..service.types.vms import ConsoleLogRequest

    with connect(args.config_dir) as client:
        result = client.request(given(ConsoleLogRequest, name=args.name, lines=args.lines))
    if args.json:
        print_json(result)
        return 0
    print(f"{clean(result['name'])} on {clean(result['host'])}: {clean(result['file'])}"
          + (f" ({clean(result['note'])})" if result.get("note") else ""))
    for line in result.get("lines", []):
        print(clean(line))
    return 0
