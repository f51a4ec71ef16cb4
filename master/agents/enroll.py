"""``saltmarsh host enroll``'s script: what an operator runs, as root, on a fresh host to make it an agent.

The master never reaches the host (no SSH) and no private key moves: the script installs the
agent from wheels already on the host (copied there, or a local mirror: ``--wheels``), writes
``agent.yaml`` with the master's address, its public key (pinned from the first frame on) and a
one-time join token, installs the agent's and the setup helper's units as this saltmarsh ships
them, and starts both. The agent makes its own key at its first start, presents the token, and
is accepted by it; ``saltmarsh host setup`` does the rest.

The script is plain POSIX sh; every value in it is quoted, and the files are written from
here-documents whose delimiters are quoted, so nothing in them is expanded on the host.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

VENV = "/opt/saltmarsh/venv"
UNIT_DIR = "/etc/systemd/system"
AGENT_UNIT = "saltmarsh-agent.service"
HELPER_UNIT = "saltmarsh-setup-helper.service"
DEFAULT_WHEELS = "/root/saltmarsh-wheels"


@dataclass(frozen=True)
class Enrollment:
    """Everything the script says: the agent's id, how it reaches the master, its token, the units."""

    agent_id: str
    master_address: str
    publish_port: int
    request_port: int
    master_key: str  # base64, as agent.yaml's master_key takes it
    token: str
    expires: str  # when the token stops working, for people
    wheels: str
    agent_unit: str
    helper_unit: str


def agent_yaml(enrollment: Enrollment) -> str:
    """The new agent's agent.yaml (every value a quoted YAML string or a number)."""
    e = enrollment
    return "".join([f"id: {_yaml(e.agent_id)}\n", f"master: {_yaml(e.master_address)}\n",
                    f"publish_port: {e.publish_port}\n", f"request_port: {e.request_port}\n",
                    f"master_key: {_yaml(e.master_key)}\n", f"join_token: {_yaml(e.token)}\n"])


def script(enrollment: Enrollment) -> str:
    """The enrollment script."""
    e = enrollment
    return "\n".join([
        "#!/bin/sh",
        f"# saltmarsh: enroll this host as agent {e.agent_id}. Run as root. The join token in it works once,",
        f"# until {e.expires} UTC; keep this script as secret as the token.",
        "set -eu",
        f"wheels=${{SALTMARSH_WHEELS:-{shlex.quote(e.wheels)}}}",
        '[ "$(id -u)" = 0 ] || { echo "run this as root" >&2; exit 1; }',
        '[ -d "$wheels" ] || { echo "no saltmarsh wheels in $wheels (set SALTMARSH_WHEELS)" >&2; exit 1; }',
        "id saltmarsh >/dev/null 2>&1 || useradd --system --user-group --home-dir /var/lib/saltmarsh "
        "--no-create-home --shell /usr/sbin/nologin saltmarsh",
        f"python3 -m venv {VENV}",
        f'{VENV}/bin/pip install -q --no-index --disable-pip-version-check --find-links "$wheels" saltmarsh',
        "install -d -m 0755 /etc/saltmarsh",
        _file("/etc/saltmarsh/agent.yaml", agent_yaml(e), "0640", "root:saltmarsh"),
        _file(f"{UNIT_DIR}/{AGENT_UNIT}", e.agent_unit, "0644", "root:root"),
        _file(f"{UNIT_DIR}/{HELPER_UNIT}", e.helper_unit, "0644", "root:root"),
        "systemctl daemon-reload",
        f"systemctl enable --now {HELPER_UNIT} {AGENT_UNIT}",
        f'echo "saltmarsh agent {e.agent_id} started: it joins the master at {e.master_address} with its token"',
        "",
    ])


def _file(path: str, text: str, mode: str, owner: str) -> str:
    """sh lines that write ``text`` to ``path`` atomically (a temporary file renamed), with its mode and owner."""
    marker = "SALTMARSH_EOF"
    if marker in text:
        raise ValueError(f"{path}: the text holds the here-document's end marker")
    temp = shlex.quote(f"{path}.new")
    body = text if text.endswith("\n") else text + "\n"
    return (f"umask 077\ncat > {temp} <<'{marker}'\n{body}{marker}\n"
            f"chown {owner} {temp}\nchmod {mode} {temp}\nmv {temp} {shlex.quote(path)}")


def _yaml(value: str) -> str:
    """A YAML double-quoted scalar (JSON's string syntax is a subset of YAML's)."""
    import json

    return json.dumps(value)
