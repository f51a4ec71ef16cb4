"""What goes into a guest image: its packages, its config files, the mmdebstrap command, the agent.

Two layers, so that a rebuild for a new saltmarsh costs seconds, not minutes:

* the **Debian base** (``base_command``): Debian's mmdebstrap (root mode, ``--variant=apt``:
  only the essential set, apt, and what is listed here) from the recipe's mirror, with the
  config files that do not depend on saltmarsh (``BASE_FILES``: cloud-init limited to NoCloud
  seeds and the few modules a seed uses, systemd-networkd with DHCP on ``en*``/``eth*``, fstab,
  and what keeps the boot short: ``MASKED`` and ``DISABLED`` units, a small initramfs for the
  cloud kernel) and the system user ``saltmarsh``. The .deb cache is synced in before the
  download, and this build's packages synced out into a new directory that replaces the cache
  once it succeeded.
  build.py keeps the base as a tarball, keyed on everything but the source (``base_key``).
* the **agent** (``install_agent``), in a copy of the base: the venv ``/opt/saltmarsh/venv``
  with saltmarsh installed from the wheels (no index), the proof that it runs on the guest's
  own Python (``saltmarsh-agent --help``), and the unit with a preset that keeps it disabled,
  started by ``saltmarsh-agent.path`` once cloud-init has written agent.yaml.
"""

from __future__ import annotations

import hashlib
import json
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import IO

# Where the seed writes the agent's config, and the unit that runs the agent: one name on both sides.
from saltmarsh.protocol.guest import AGENT_CONFIG_PATH
from saltmarsh.protocol.guest import AGENT_UNIT as AGENT_UNIT  # build.py reads it from here
from saltmarsh.protocol.guest import AGENT_USER as AGENT_USER

from .process import output, run
from .recipe import Recipe

ROOT_LABEL = "saltmarsh-root"
BOOT_LABEL = "SMBOOT"
VENV = "/opt/saltmarsh/venv"
WHEELS_INSIDE = "/tmp/saltmarsh-wheels"
AGENT_PATH = "saltmarsh-agent.path"
# SYSTEMD_COLORS=0 (the kernel hands it to init as an environment variable): plain status lines on the
# serial console, which `virt console-log` would otherwise show full of escaped colour codes.
KERNEL_COMMAND_LINE = f"root=LABEL={ROOT_LABEL} rw console=ttyS0,115200n8 SYSTEMD_COLORS=0"

BASE_PACKAGES = (
    "systemd-sysv", "systemd-resolved", "udev", "dbus", "passwd", "netbase", "kmod", "initramfs-tools",
    "e2fsprogs", "iproute2", "procps", "python3", "python3-venv", "cloud-init",
)
# Documentation and translations: no guest reads them, and they are a fifth of the tree.
DPKG_EXCLUDES = (
    "path-exclude=/usr/share/man/*", "path-exclude=/usr/share/info/*", "path-exclude=/usr/share/lintian/*",
    "path-exclude=/usr/share/doc/*", "path-include=/usr/share/doc/*/copyright",
    "path-exclude=/usr/share/locale/*", "path-include=/usr/share/locale/locale.alias",
)
# The generic kernel's driver trees that a virtio guest never loads (half its modules).
GENERIC_KERNEL_EXCLUDES = tuple(
    f"path-exclude=/usr/lib/modules/*/kernel/{tree}/*" for tree in (
        "drivers/gpu", "drivers/media", "drivers/net/wireless", "drivers/infiniband", "drivers/bluetooth",
        "drivers/staging", "drivers/isdn", "drivers/iio", "drivers/net/can", "sound",
    )
)

CLOUD_CONFIG = """\
# saltmarsh image: seeds come from the NoCloud ISO that `saltmarsh virt init --seed` attaches, and
# cloud-init does only what such a seed asks for (each module costs seconds of boot under TCG).
# No update_hostname: a VM's name does not change after set_hostname gave it at the first boot.
datasource_list: [NoCloud, None]
network: {config: disabled}
manage_etc_hosts: false
cloud_init_modules: [set_hostname, write_files]
cloud_config_modules: [runcmd]
cloud_final_modules: [scripts_user, final_message]
"""

NETWORK = """\
# saltmarsh image: every virtio (or other) NIC asks DHCP for its address.
[Match]
Name=en* eth*

[Network]
DHCP=yes
"""

# network-online.target waits for this: every link by default (two minutes for one without a carrier).
WAIT_ONLINE = """\
[Service]
ExecStart=
ExecStart=/lib/systemd/systemd-networkd-wait-online --any --timeout=60
"""

# The agent starts once cloud-init's init stage has written its config, not when the seed's runcmd
# enables it two stages (two Python starts, 15-25 s under TCG) later. A path unit starts only after
# sysinit.target, which waits for that stage (cloud-init.service is Before=sysinit.target), so the file
# is whole, and root:saltmarsh, by then. Like any PathExists= unit it starts the agent again whenever
# the agent stops: `systemctl stop saltmarsh-agent.path` first, to keep the agent stopped.
AGENT_PATH_UNIT = f"""\
[Unit]
Description=Start the saltmarsh agent as soon as its config exists
Documentation=file:///opt/saltmarsh/README.md

[Path]
PathExists={AGENT_CONFIG_PATH}
Unit={AGENT_UNIT}

[Install]
WantedBy=paths.target
"""

PRESET = f"""\
# saltmarsh image: {AGENT_PATH} starts the agent once cloud-init wrote
# {AGENT_CONFIG_PATH}; a boot without a seed leaves it off.
disable {AGENT_UNIT}
enable {AGENT_PATH}
enable systemd-networkd.service
enable systemd-resolved.service
"""

# Inside a guest there is no libvirt group (only a hypervisor's agent talks to libvirtd): systemd
# refuses to start a unit whose supplementary group does not exist (status=216/GROUP).
AGENT_GUEST_DROPIN = """\
[Service]
SupplementaryGroups=
"""

# Unit names, not "name - description", in the console's status lines: the combined form is cut to the
# serial console's 80 columns ("cloud-init.servic…"); names fit, so `virt console-log` shows which unit
# started or failed (and bench/boot.py reads its milestones from them).
SYSTEM_CONF = """\
[Manager]
StatusUnitFormat=name
"""

# cloud-init's last two stages run after the agent has started (it starts from the config the init
# stage wrote): nothing saltmarsh needs waits for them, so they get the CPU the agent leaves. Each is a
# Python start of 5-10 s under TCG; at equal priority they slowed the agent's own start and join.
BACKGROUND = """\
[Service]
Nice=19
IOSchedulingClass=best-effort
IOSchedulingPriority=7
"""

# Units that cost boot time and do nothing in this guest:
# - cloud-init-local.service, the local stage: it finds the NoCloud seed and writes the network config
#   before networking. Network config is disabled here (systemd-networkd has DHCP on every NIC), and
#   the init stage finds the same seed itself (NoCloud's net variant reads the same cidata CD-ROM),
#   so a whole Python start (10-15 s under TCG, all of it before sysinit.target) is saved;
# - modprobe@*.service for modules this guest has no use for at boot (device mapper, loop, fuse,
#   configfs, DRM, EFI pstore): the first four load on first use anyway, through the device nodes
#   kmod-static-nodes makes; six modprobe runs at the start of boot, 1-3 s under TCG;
# - e2scrub_reap.service removes LVM snapshots left by e2scrub: there is no LVM here (4 s under TCG).
MASKED = ("cloud-init-local.service", *(f"modprobe@{module}.service" for module in
                                         ("dm_mod", "loop", "fuse", "configfs", "drm", "efi_pstore")))
DISABLED = ("e2scrub_reap.service",)

# The cloud kernel boots only as a VM: its initramfs holds the drivers of the disks virt init gives a
# VM (virtio-blk, virtio-scsi, IDE; the cloud kernel has no AHCI) instead of every storage driver
# (MODULES=most, 15 MiB), which SYSLINUX reads through the BIOS and the kernel unpacks and probes,
# seconds under TCG. The generic kernel, there for AHCI and real hardware, keeps MODULES=most.
VM_INITRAMFS = {
    "/etc/initramfs-tools/conf.d/saltmarsh.conf": "MODULES=list\n",
    "/usr/share/initramfs-tools/modules.d/saltmarsh": "virtio_pci\nvirtio_blk\nvirtio_scsi\nsd_mod\nata_piix\n",
}
KERNEL_FILES: dict[str, dict[str, str]] = {"cloud": VM_INITRAMFS}

FSTAB = f"LABEL={ROOT_LABEL} / ext4 rw,errors=remount-ro 0 1\n"
HOSTS = "127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n"


BASE_FILES = {
    "/etc/cloud/cloud.cfg.d/90-saltmarsh.cfg": CLOUD_CONFIG,
    "/etc/systemd/network/80-saltmarsh-dhcp.network": NETWORK,
    "/etc/systemd/system/systemd-networkd-wait-online.service.d/saltmarsh.conf": WAIT_ONLINE,
    "/etc/systemd/system.conf.d/saltmarsh.conf": SYSTEM_CONF,
    "/etc/systemd/system/cloud-config.service.d/saltmarsh.conf": BACKGROUND,
    "/etc/systemd/system/cloud-final.service.d/saltmarsh.conf": BACKGROUND,
    "/etc/fstab": FSTAB,
    "/etc/hosts": HOSTS,
    "/etc/hostname": "debian\n",
}
CHROOT_TIMEOUT = 600.0
# Commands in the guest's tree get the guest's own environment, not the host's (PIP_*, VIRTUAL_ENV, ...).
CHROOT_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8", "HOME": "/root"}


@dataclass(frozen=True)
class BasePaths:
    """The host-side paths the mmdebstrap hooks of the base read and write."""

    rootfs: Path
    overlay: Path
    deb_cache: Path
    new_deb_cache: Path


def base_key(recipe: Recipe, period: str) -> str:
    """What a cached base is named by: every setting but the source, the base's files and units, and ``period``.

    build.py names a base by its key with an empty period (the same settings: last week's base is
    replaced) and the ISO week, so a base is a week old at most and security updates reach new
    images without anyone asking.
    """
    settings = {**recipe.settings(), "source_sha256": None, "files": base_files(recipe), "masked": MASKED,
                "disabled": DISABLED, "period": period}
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def base_files(recipe: Recipe) -> dict[str, str]:
    """The files of a recipe's Debian base: BASE_FILES, and its kernel's (KERNEL_FILES)."""
    return {**BASE_FILES, **KERNEL_FILES.get(recipe.kernel, {})}


def agent_files(agent_unit: str) -> dict[str, str]:
    """The agent's files, by absolute path inside the guest (``agent_unit``: the shipped unit's text)."""
    return {
        f"/usr/lib/systemd/system/{AGENT_UNIT}": agent_unit,
        f"/usr/lib/systemd/system/{AGENT_UNIT}.d/guest.conf": AGENT_GUEST_DROPIN,
        f"/usr/lib/systemd/system/{AGENT_PATH}": AGENT_PATH_UNIT,
        "/usr/lib/systemd/system-preset/80-saltmarsh.preset": PRESET,
    }


def guest_files(agent_unit: str) -> dict[str, str]:
    """Every file the image adds, by absolute path inside the guest."""
    return {**BASE_FILES, **agent_files(agent_unit)}


def write_overlay(overlay: Path, files: dict[str, str]) -> None:
    """Write ``files`` under ``overlay`` (directories 0755, files 0644), to be copied over the tree."""
    overlay.mkdir(mode=0o755)
    overlay.chmod(0o755)  # copied onto the guest's / itself: it must not become 0700
    for inside, text in files.items():
        path = overlay / inside.lstrip("/")
        for parent in reversed(path.relative_to(overlay).parents[:-1]):
            (overlay / parent).mkdir(mode=0o755, exist_ok=True)
        path.write_text(text)
        path.chmod(0o644)


def packages(recipe: Recipe) -> list[str]:
    """Every package the image is made with: the base, the kernel, and the recipe's extras."""
    return sorted({*BASE_PACKAGES, recipe.kernel_package, *recipe.packages})


def base_command(recipe: Recipe, paths: BasePaths) -> list[str]:
    """The whole mmdebstrap command line of a recipe's Debian base."""
    excludes = DPKG_EXCLUDES + (GENERIC_KERNEL_EXCLUDES if recipe.kernel == "generic" else ())
    argv = ["mmdebstrap", "--mode=root", "--variant=apt", "--format=directory", "--verbose",
            f"--include={','.join(packages(recipe))}", "--skip=essential/unlink"]
    argv += [f"--dpkgopt={option}" for option in excludes]
    argv += [f"--setup-hook={hook}" for hook in _setup_hooks(paths)]
    argv += [f"--customize-hook={hook}" for hook in _customize_hooks(recipe, paths)]
    # With no mirror given, mmdebstrap adds a stable release's -updates and -security suites itself.
    return [*argv, recipe.release, str(paths.rootfs), *([recipe.mirror] if recipe.mirror else [])]


def _setup_hooks(paths: BasePaths) -> list[str]:
    """Bring the cached .debs in before apt downloads anything."""
    return ['mkdir -p "$1/var/cache/apt/archives"',
            f"sync-in {paths.deb_cache} /var/cache/apt/archives/"]


def _customize_hooks(recipe: Recipe, paths: BasePaths) -> list[str]:
    chroot = 'chroot "$1"'
    # The kernel's own install made its initramfs before the overlay was there.
    initramfs = [f"{chroot} update-initramfs -u -k all"] if recipe.kernel in KERNEL_FILES else []
    return [
        f'cp -a {_q(paths.overlay)}/. "$1/"',
        f"{chroot} useradd --system --user-group --home-dir /var/lib/saltmarsh --no-create-home "
        f"--shell /usr/sbin/nologin {AGENT_USER}",
        f"{chroot} systemctl enable systemd-networkd.service systemd-resolved.service",
        f"{chroot} systemctl mask {' '.join(MASKED)}",
        f"{chroot} systemctl disable {' '.join(DISABLED)}",
        *initramfs,
        f"mkdir -p {_q(paths.new_deb_cache)}",
        f"sync-out /var/cache/apt/archives {paths.new_deb_cache}",
        # The host's resolv.conf was copied in for the build; the guest's comes from systemd-resolved.
        'rm -f "$1/etc/resolv.conf" && ln -s ../run/systemd/resolve/stub-resolv.conf "$1/etc/resolv.conf"',
    ]


def install_agent(rootfs: Path, wheels: Path, agent_unit: str, log: IO[str]) -> list[str]:
    """Install the agent into the tree ``rootfs`` (a copy of the base); the guest's packages, as name=version."""
    for inside, text in agent_files(agent_unit).items():
        path = rootfs / inside.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
        path.write_text(text)
        path.chmod(0o644)
    staged = rootfs / WHEELS_INSIDE.lstrip("/")
    shutil.copytree(wheels, staged)
    chroot = ["chroot", str(rootfs)]
    try:
        run([*chroot, "python3", "-m", "venv", VENV], timeout=CHROOT_TIMEOUT, log=log, env=CHROOT_ENV)
        run([*chroot, f"{VENV}/bin/pip", "install", "-q", "--no-index", "--no-cache-dir",
             "--disable-pip-version-check", "--find-links", WHEELS_INSIDE, "saltmarsh"],
            timeout=CHROOT_TIMEOUT, log=log, env=CHROOT_ENV)
    finally:
        shutil.rmtree(staged)
    # Proof that the agent's venv runs on the guest's own Python, before anything is packed.
    run([*chroot, f"{VENV}/bin/saltmarsh-agent", "--help"], timeout=CHROOT_TIMEOUT, log=log, env=CHROOT_ENV)
    run([*chroot, "systemctl", "preset", AGENT_UNIT, AGENT_PATH], timeout=CHROOT_TIMEOUT, log=log, env=CHROOT_ENV)
    listing = output([*chroot, "dpkg-query", "-W", "-f=${Package}=${Version}\\n"], timeout=CHROOT_TIMEOUT,
                     env=CHROOT_ENV)
    installed = [line for line in listing.splitlines() if line]
    return installed


def _q(path: Path) -> str:
    return shlex.quote(str(path))
