"""``virt.init`` and ``virt.define_xml``: create VMs; a failed init leaves nothing behind."""

from __future__ import annotations

import logging
import secrets
import shutil
import string
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from ..errors import InvalidSpec, VmConflict
from ..functions import FunctionContext, function
from ..libvirt_conn import libvirt
from .console import console_log_path
from .disks import create_disks
from .domain_xml import Graphics, build_domain
from .host import LibvirtHost
from .images import local_image
from .inventory import domain_info
from .seed import build_seed_iso
from .spec import VmSpec, parse_spec

log = logging.getLogger(__name__)

VNC_PASSWORD_LENGTH = 8  # VNC authentication uses at most 8 characters
_ALPHABET = string.ascii_letters + string.digits


def domain_type(ctx: FunctionContext, conn: Any) -> str:
    """The domain type to create: configured, or test/kvm/qemu from what the connection offers."""
    if ctx.virt.domain_type != "auto":
        return ctx.virt.domain_type
    driver = conn.getType().lower()
    if driver == "test":
        return "test"
    caps = ET.fromstring(conn.getCapabilities())
    kvm = caps.findall("./guest/arch/domain[@type='kvm']")
    return "kvm" if kvm else "qemu"


def resolve_image(ctx: FunctionContext, image: str | None) -> Path | None:
    """The local file of an image reference: fetched from the master, or an absolute path under virt.image_dirs."""
    if image is None:
        return None
    if image.startswith("master://"):
        return ctx.images.fetch(image)
    return local_image(image, ctx.virt.image_dirs)


def _profiles(ctx: FunctionContext, spec: VmSpec) -> tuple[Any, Any]:
    nics = ctx.virt.nic_profiles.get(spec.nic_profile)
    disks = ctx.virt.disk_profiles.get(spec.disk_profile)
    if nics is None:
        raise InvalidSpec(f"no NIC profile {spec.nic_profile!r} (have {sorted(ctx.virt.nic_profiles)})")
    if disks is None:
        raise InvalidSpec(f"no disk profile {spec.disk_profile!r} (have {sorted(ctx.virt.disk_profiles)})")
    return nics, disks


@function("virt.init")
def init(ctx: FunctionContext, **spec_values: Any) -> dict[str, Any]:
    """Create a VM from a spec: name, cpus, memory_mib, image, nic_profile, disk_profile,
    enable_qcow, enable_vnc, seed, start. Returns its info (and VNC password, if any)."""
    spec = parse_spec(spec_values)
    nics, disk_profile = _profiles(ctx, spec)
    host = ctx.libvirt
    created_files: list[Path] = []
    defined = False
    try:
        with host.call("create", spec.name) as conn:
            _refuse_existing(conn, spec.name)
            base = resolve_image(ctx, spec.image)
            disks = create_disks(ctx.virt.vm_dir, spec.name, disk_profile, base, spec.enable_qcow, created_files)
            password = "".join(secrets.choice(_ALPHABET) for _ in range(VNC_PASSWORD_LENGTH))
            graphics = Graphics(ctx.virt.vnc_listen, password) if spec.enable_vnc else None
            cdrom = _seed(ctx, spec, created_files) if spec.seed else None
            xml = build_domain(spec, domain_type(ctx, conn), disks, nics, graphics, cdrom,
                               console_log_path(ctx.virt.vm_dir, spec.name))
            dom = conn.defineXML(xml)
            defined = True
            if spec.start:
                dom.create()
            info = domain_info(dom)
    except BaseException:
        _clean_up(host, spec.name, defined, created_files, ctx.virt.vm_dir)
        raise
    if graphics is not None:
        info["graphics"]["password"] = graphics.password
    log.info("created VM %s (%d CPU, %d MiB)", spec.name, spec.cpus, spec.memory_mib)
    return info


def _seed(ctx: FunctionContext, spec: VmSpec, created: list[Path]) -> str:
    """Write the VM's NoCloud seed ISO: its agent joins the master, at the address the master chose, with the token."""
    path = ctx.virt.vm_dir / spec.name / "seed.iso"
    build_seed_iso(path, spec.name, {
        "id": spec.name, "master": spec.master_address, "publish_port": ctx.master.publish_port,
        "request_port": ctx.master.request_port, "master_key": spec.master_key, "join_token": spec.join_token,
    })
    created.append(path)  # only once it is ours: build_seed_iso refuses a file that was there
    return str(path)


def _refuse_existing(conn: Any, name: str) -> None:
    try:
        conn.lookupByName(name)
    except libvirt.libvirtError:
        return
    raise VmConflict(f"a VM named {name!r} already exists on this hypervisor")


def _clean_up(host: LibvirtHost, name: str, defined: bool, files: list[Path], vm_dir: Path) -> None:
    """Undo a failed init: the definition and every file it made (never anything that was there)."""
    if defined:
        try:
            with host.call("clean up", name) as conn:
                dom = conn.lookupByName(name)
                if dom.isActive():
                    dom.destroy()
                dom.undefine()
        except Exception:  # cleaning up must not hide the error that made us clean up
            log.exception("could not undefine %s after a failed init", name)
    for path in files:
        path.unlink(missing_ok=True)
    own_dir = vm_dir / name
    if own_dir.is_dir() and not any(own_dir.iterdir()):
        shutil.rmtree(own_dir, ignore_errors=True)


@function("virt.define_xml")
def define_xml(ctx: FunctionContext, xml: str, start: bool = False) -> dict[str, Any]:
    """Define (and optionally start) a VM from the operator's own domain XML."""
    try:
        name = ET.fromstring(xml).findtext("name") or ""
    except ET.ParseError as exc:
        raise InvalidSpec(f"domain XML does not parse: {exc}") from exc
    with ctx.libvirt.call("define", name) as conn:
        _refuse_existing(conn, name)
        dom = conn.defineXML(xml)
        if start:
            dom.create()
        return domain_info(dom)


@function("virt.cache_image")
def cache_image(ctx: FunctionContext, image: str) -> dict[str, Any]:
    """Fetch a master:// image into this hypervisor's cache now (what init does on first use)."""
    path = resolve_image(ctx, image)
    assert path is not None
    return {"image": image, "path": str(path), "size": path.stat().st_size}
