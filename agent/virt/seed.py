"""Seeding: a cloud-init NoCloud ISO that lets a new VM's own agent join the master by itself.

The ISO (volume ``cidata``, built with pycdlib) carries ``user-data`` that
writes the VM's agent.yaml: this master's address and ports, its public key
(pinned), and a one-time join token the master issued for this VM's id. The
VM makes its own key at first start; no private key is made elsewhere or
sent anywhere.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import yaml

from saltmarsh.protocol.guest import AGENT_CONFIG_PATH, AGENT_UNIT, AGENT_USER

from .disks import create_private_file

# The shipped unit runs the agent as this user: it must read its config (the join token is in it)
# and nobody else may. The image makes the user before cloud-init runs (saltmarsh image build).
AGENT_CONFIG_OWNER = f"root:{AGENT_USER}"
AGENT_CONFIG_MODE = "0640"
# Images from `saltmarsh image build` start the agent themselves once its config exists (their
# saltmarsh-agent.path); this starts it on images without that unit. Only if it is not running:
# `systemctl enable` reloads systemd, 4 s under TCG, while the agent is still joining.
START_AGENT = f"systemctl is-active --quiet {AGENT_UNIT} || systemctl enable --now {AGENT_UNIT} || true"


def user_data(agent_config: dict[str, Any]) -> str:
    """The #cloud-config document that installs the agent's config and starts the agent."""
    document = {
        "write_files": [{"path": AGENT_CONFIG_PATH, "owner": AGENT_CONFIG_OWNER, "permissions": AGENT_CONFIG_MODE,
                         "content": yaml.safe_dump(agent_config, sort_keys=True)}],
        "runcmd": [["sh", "-c", START_AGENT]],
    }
    return "#cloud-config\n" + yaml.safe_dump(document, sort_keys=False)


def meta_data(vm: str) -> str:
    """NoCloud meta-data: the instance id and host name."""
    return yaml.safe_dump({"instance-id": vm, "local-hostname": vm}, sort_keys=True)


def build_seed_iso(path: Path, vm: str, agent_config: dict[str, Any]) -> None:
    """Write the NoCloud ISO for ``vm`` to a new file ``path``, mode 0600 (it holds the join token).

    FunctionError if ``path`` exists; a failed write removes the file it made.
    Why 0600 is enough for QEMU: see disks.py.
    """
    import pycdlib  # here, not at the top: 1.5 MB of memory that only seeding VMs needs

    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, joliet=3, rock_ridge="1.09", vol_ident="cidata")
    try:
        for name, text in (("user-data", user_data(agent_config)), ("meta-data", meta_data(vm))):
            data = text.encode()
            iso.add_fp(io.BytesIO(data), len(data), f"/{name.replace('-', '').upper()}.;1",
                       rr_name=name, joliet_path=f"/{name}")
        # Created 0600 before the token is written: pycdlib's own write() makes it 0644 less the umask.
        with os.fdopen(create_private_file(path), "wb") as out:
            try:
                iso.write_fp(out)
            except BaseException:
                path.unlink(missing_ok=True)
                raise
    finally:
        iso.close()


def read_seed_iso(path: Path) -> dict[str, str]:
    """The files of a seed ISO by name (for checks and tests)."""
    import pycdlib

    iso = pycdlib.PyCdlib()
    iso.open(str(path))
    try:
        files = {}
        for name in ("user-data", "meta-data"):
            out = io.BytesIO()
            iso.get_file_from_iso_fp(out, joliet_path=f"/{name}")
            files[name] = out.getvalue().decode()
        return files
    finally:
        iso.close()
