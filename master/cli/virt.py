"""``saltmarsh virt ...`` and ``saltmarsh host maintenance``: the cloud controller's commands."""

from __future__ import annotations

import argparse
import re
import sys
from typing import Any

from saltmarsh.protocol.targeting import parse_labels

from ..client import MasterClient
from .output import print_json

OPERATIONS = ("start", "shutdown", "stop", "reboot", "reset", "pause", "resume", "purge", "info", "vnc")
SIZE = re.compile(r"^(\d+)([MmGg]?)i?[Bb]?$")
RULE = "----------"


def register(sub: Any) -> None:
    """Add the ``virt`` and ``host`` command families."""
    virt = sub.add_parser("virt", help="hypervisors and their VMs")
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
        parser.add_argument("--timeout", type=float, default=120.0)
        parser.set_defaults(handler=operate, op=op)
    migrate = actions.add_parser("migrate", help="move a running VM to another hypervisor over libvirt TLS")
    migrate.add_argument("name")
    migrate.add_argument("target", metavar="TARGET_HV")
    migrate.add_argument("--offline", action="store_true", help="move the definition only (VM not running)")
    migrate.add_argument("--copy-storage", choices=("all", "inc"), default="")
    migrate.add_argument("--max-downtime", type=int, default=0, metavar="MS")
    migrate.add_argument("--bandwidth", type=int, default=0, metavar="MiB/s")
    migrate.add_argument("--postcopy", action="store_true",
                         help="switch to post-copy as soon as memory moves: the VM runs on the target at once and "
                              "pulls the rest (a network failure after the switch loses the VM)")
    migrate.add_argument("--dry-run", action="store_true", help="check the target and show the plan only")
    migrate.add_argument("--timeout", type=float, default=600.0)
    migrate.add_argument("--json", action="store_true")
    migrate.set_defaults(handler=migrate_vm)
    abort = actions.add_parser("migrate-abort", help="abort a running migration (the VM stays where it was)")
    abort.add_argument("name")
    abort.set_defaults(handler=abort_migration)
    host = sub.add_parser("host", help="hypervisor administration")
    host_actions = host.add_subparsers(dest="action", required=True)
    maintenance = host_actions.add_parser("maintenance", help="placement skips a host in maintenance")
    maintenance.add_argument("state", choices=("on", "off"))
    maintenance.add_argument("host")
    maintenance.set_defaults(handler=set_maintenance)


def _register_init(actions: Any) -> None:
    init = actions.add_parser("init", help="create a VM, placed automatically unless --host is given")
    init.add_argument("name")
    init.add_argument("cpus", type=int)
    init.add_argument("memory", type=memory_mib, help="MiB, or with a unit: 512M, 2G")
    init.add_argument("image", nargs="?", help="absolute path on the hypervisor or master://path; none: blank disk")
    init.add_argument("--host")
    init.add_argument("--label", action="append", default=[], help="k=v the hypervisor must carry (repeatable)")
    init.add_argument("--nic-profile", default="default")
    init.add_argument("--disk-profile", default="default")
    init.add_argument("--enable-qcow", action="store_true", help="qcow2 overlay on the base image, not a copy")
    init.add_argument("--enable-vnc", action="store_true")
    init.add_argument("--seed", action="store_true")
    init.add_argument("--dry-run", action="store_true", help="show the candidates, why each was dropped, the choice")
    init.add_argument("--timeout", type=float, default=600.0)
    init.add_argument("--json", action="store_true")
    init.set_defaults(handler=init_vm)


def memory_mib(text: str) -> int:
    """Parse 512, 512M or 2G into MiB."""
    match = SIZE.match(text.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r} is not a memory size (512, 512M, 2G)")
    value = int(match.group(1))
    return value * 1024 if match.group(2).lower() == "g" else value


def nested(data: Any, indent: int = 0) -> list[str]:
    """Salt's nested layout: a key on its line, its value indented below, dicts opened by a rule."""
    pad = " " * indent
    if isinstance(data, dict):
        lines = [pad + RULE]
        for key in sorted(data, key=str):
            lines.append(f"{pad}{key}:")
            lines.extend(nested(data[key], indent + 4))
        return lines
    if isinstance(data, list):
        return [f"{pad}- {item}" for item in data] or [pad + "[]"]
    return [f"{pad}{data}"]


def _display_vm(host: str, vm: dict[str, Any]) -> dict[str, Any]:
    graphics = vm.get("graphics", {})
    shown = f"{graphics['type']} - {host}:{graphics.get('port', -1)}" if graphics.get("type") not in (None, "none") \
        else "none"
    disks = {dev: {"file": d["file"], "file format": d["format"], "size": d.get("virtual_size", 0),
                   "disk size": d.get("disk_size", 0)} for dev, d in vm.get("disks", {}).items()}
    nics = {mac: {"mac": mac, "source": n["source"], "type": n["type"], "model": n["model"]}
            for mac, n in vm.get("nics", {}).items()}
    return {"cpu": vm.get("cpu"), "mem": vm.get("memory_mib"), "state": vm.get("state"), "graphics": shown,
            "disks": disks, "nics": nics, "autostart": vm.get("autostart")}


def _print_nested(data: dict[str, Any]) -> None:
    for key in sorted(data):
        print(f"{key}:")
        print("\n".join(nested(data[key], 4)))


def host_info(args: argparse.Namespace) -> int:
    """Print every hypervisor's resources and state."""
    with MasterClient.from_config_dir(args.config_dir) as client:
        hosts = client.call("virt.host_info")
    if args.json:
        print_json(hosts)
        return 0
    print(f"{'HOST':<20} {'STATE':<12} {'CPU FREE/ALL':>12} {'MEM FREE/ALL MiB':>18} {'VMS':>4}  DRIVER")
    for name, h in sorted(hosts.items()):
        state = "maintenance" if h["maintenance"] else ("up" if h["up"] else "down")
        if not h["libvirt"]:
            state = "no libvirt"
        node = h["node_info"]
        print(f"{name:<20} {state:<12} {h['freecpu']:>5}/{node.get('cpus', 0):<6} "
              f"{h['freemem']:>8}/{node.get('memory_mib', 0):<9} {h['vms']:>4}  {node.get('driver', '')}")
    return 0


def list_vms(args: argparse.Namespace) -> int:
    """Print VMs per hypervisor."""
    with MasterClient.from_config_dir(args.config_dir) as client:
        vms = client.call("virt.list")
    if args.json:
        print_json(vms)
        return 0
    for host, states in sorted(vms.items()):
        print(f"{host}:")
        for name, state in states.items():
            print(f"    {name:<30} {state}")
    return 0


def query_vms(args: argparse.Namespace) -> int:
    """Print the inventory in the layout of Salt Virt's query."""
    with MasterClient.from_config_dir(args.config_dir, reply_timeout=60) as client:
        result = client.call("virt.query", name=args.name)
    if args.json:
        print_json(result)
        return 0
    shown = {host: {"freecpu": h["freecpu"], "freemem": h["freemem"], "node_info": h["node_info"],
                    "vm_info": {n: _display_vm(host, vm) for n, vm in h["vm_info"].items()}}
             for host, h in result.items()}
    _print_nested(shown)
    return 0


def init_vm(args: argparse.Namespace) -> int:
    """Create a VM (or explain where it would go)."""
    labels: dict[str, str] = {}
    for text in args.label:
        labels.update(parse_labels(text))
    image = None if args.image in (None, "none", "-") else args.image
    request = {"name": args.name, "cpus": args.cpus, "memory_mib": args.memory, "image": image, "host": args.host,
               "labels": labels, "nic_profile": args.nic_profile, "disk_profile": args.disk_profile,
               "enable_qcow": args.enable_qcow, "enable_vnc": args.enable_vnc, "seed": args.seed,
               "dry_run": args.dry_run, "timeout": args.timeout}
    with MasterClient.from_config_dir(args.config_dir, reply_timeout=args.timeout + 10) as client:
        result = client.call("virt.init", **request)
    if args.json:
        print_json(result)
        return 0
    _print_decision(result)
    if not args.dry_run:
        vm = result["vm"]
        print(f"created {args.name} on {result['host']}: {vm['state']}, {vm['cpu']} CPU, {vm['memory_mib']} MiB")
        graphics = vm.get("graphics", {})
        if graphics.get("type") == "vnc":
            print(f"    vnc - {result['host']}:{graphics['port']} (listen {graphics['listen']}, "
                  f"password {graphics.get('password', '?')})")
    return 0


def _print_decision(result: dict[str, Any]) -> None:
    print("placement:")
    for c in result["candidates"]:
        verdict = f"dropped: {c['dropped']}" if c["dropped"] else "fits"
        print(f"    {c['host']:<20} free {c['freemem']:>7} MiB {c['freecpu']:>4} CPU {c['vms']:>4} VMs  {verdict}")
    print(f"    choice: {result['choice'] or 'none'}")


def operate(args: argparse.Namespace) -> int:
    """Run an operation on a VM by name."""
    with MasterClient.from_config_dir(args.config_dir, reply_timeout=args.timeout + 10) as client:
        result = client.call("virt.op", op=args.op, name=args.name, timeout=args.timeout)
    if args.json:
        print_json(result)
    elif args.op == "info":
        _print_nested({args.name: _display_vm(result["host"], result["result"])})
    elif args.op == "vnc":
        g = result["result"]
        password = g.get("password", "none")
        print(f"vnc - {result['host']}:{g.get('port')} (listen {g.get('listen')}, password {password})")
    else:
        print(f"{args.name} on {result['host']}: {result['result'].get('state', 'done')}")
    return 0


def _progress_bar(event: Any) -> None:
    data = event.data
    total = data.get("total") or 0
    done = data.get("done") or 0
    fraction = min(done / total, 1.0) if total else 0.0
    bar = "#" * int(fraction * 30)
    rate = (data.get("bytes_per_s") or 0) / 1e6
    sys.stderr.write(f"\r[{bar:<30}] {fraction:6.1%} {done / 1e6:8.1f}/{total / 1e6:.1f} MB {rate:6.1f} MB/s "
                     f"remaining {(data.get('remaining') or 0) / 1e6:.1f} MB")
    sys.stderr.flush()


def migrate_vm(args: argparse.Namespace) -> int:
    """Migrate a VM, showing progress, and print the confirmed outcome."""
    request = {"name": args.name, "target": args.target, "offline": args.offline, "copy_storage": args.copy_storage,
               "max_downtime_ms": args.max_downtime, "bandwidth_mib": args.bandwidth, "postcopy": args.postcopy,
               "dry_run": args.dry_run, "timeout": args.timeout}
    with MasterClient.from_config_dir(args.config_dir, reply_timeout=args.timeout + 30) as client:
        result = client.call_with_events("virt.migrate", _progress_bar, **request)
    sys.stderr.write("\n")
    if args.json:
        print_json(result)
    elif args.dry_run:
        print(f"would migrate {result['vm']} from {result['source']} to {result['target']} "
              f"({result['target_uri']}{', tunnelled' if result['tunnelled'] else ''}): "
              f"needs {result['memory_mib']} MiB, {result['target_freemem']} MiB free")
    else:
        outcome = result["result"]
        how = ", switched to post-copy" if outcome.get("postcopy") else ""
        print(f"migrated {result['vm']} from {result['source']} to {result['target']} in {outcome['seconds']} s"
              f" (downtime {outcome.get('downtime_ms')} ms{how}), confirmed by both hosts' libvirt events")
    return 0


def abort_migration(args: argparse.Namespace) -> int:
    """Abort a running migration."""
    with MasterClient.from_config_dir(args.config_dir) as client:
        result = client.call("virt.migrate_abort", name=args.name)
    print(f"aborted the migration of {result['vm']} on {result['source']}")
    return 0


def set_maintenance(args: argparse.Namespace) -> int:
    """Put a hypervisor in or out of maintenance."""
    with MasterClient.from_config_dir(args.config_dir) as client:
        result = client.call("host.maintenance", host=args.host, state=args.state)
    print(f"{result['host']}: maintenance {'on' if result['maintenance'] else 'off'}")
    return 0
