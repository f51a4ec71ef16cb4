"""``pkg``: packages installed or absent, through the host's own package manager (apt or dnf).

A backend builds the commands and reads the answers; which one runs is the host's OS family
(/etc/os-release). The query asks the package database itself (dpkg-query, rpm), never the
package manager's resolver, so a dry run reads exactly what a second run would find. A name
the database does not know is ``absent``: installing it is what would change, and the
install then fails with the package manager's own reason (no such package in any source).
"""

from __future__ import annotations

from dataclasses import dataclass

from saltmarsh.protocol.states import Change, PkgState

from . import Facets, Kind
from .system import System

APT_OPTIONS = ["-q", "-y", "-o", "Dpkg::Options::=--force-confdef", "-o", "Dpkg::Options::=--force-confold"]


@dataclass(frozen=True)
class Apt:
    """Debian: dpkg-query reads, apt-get changes (lists updated once per run, before the first install)."""

    name = "apt"

    def query(self, packages: list[str]) -> list[str]:
        """dpkg-query of each package's status (it exits 1 for unknown names, which are then absent)."""
        return ["dpkg-query", "-W", "-f=${Package}\\t${db:Status-Abbrev}\\n", *packages]

    def installed(self, output: str) -> set[str]:
        """The names dpkg-query reported installed (status ``ii``)."""
        found = set()
        for line in output.splitlines():
            name, _, status = line.partition("\t")
            if status.startswith("ii"):
                found.add(name.split(":")[0])  # drop an architecture qualifier (libc6:amd64)
        return found

    def install(self, packages: list[str]) -> list[list[str]]:
        """Refresh the lists, then install without recommends (a hypervisor gets what it is told)."""
        return [["apt-get", "-q", "update"],
                ["apt-get", *APT_OPTIONS, "--no-install-recommends", "install", *packages]]

    def remove(self, packages: list[str]) -> list[list[str]]:
        """Remove (keeping config files, as apt does by default)."""
        return [["apt-get", *APT_OPTIONS, "remove", *packages]]


@dataclass(frozen=True)
class Dnf:
    """Red Hat: rpm reads, dnf changes (dnf refreshes its metadata itself when it is stale)."""

    name = "dnf"

    def query(self, packages: list[str]) -> list[str]:
        """rpm -q prints the name of each installed package (and a sentence for each missing one)."""
        return ["rpm", "-q", "--qf", "%{NAME}\\n", *packages]

    def installed(self, output: str) -> set[str]:
        """The names rpm printed alone on a line."""
        return {line.strip() for line in output.splitlines() if line.strip() and " " not in line.strip()}

    def install(self, packages: list[str]) -> list[list[str]]:
        """dnf install, weak dependencies left out like apt's recommends."""
        return [["dnf", "-y", "-q", "--setopt=install_weak_deps=False", "install", *packages]]

    def remove(self, packages: list[str]) -> list[list[str]]:
        """dnf remove."""
        return [["dnf", "-y", "-q", "remove", *packages]]


Backend = Apt | Dnf
BACKENDS: dict[str, Backend] = {"debian": Apt(), "redhat": Dnf()}


class Pkg(Kind[PkgState]):
    """Installs or removes packages with the backend of the host's family."""

    request = PkgState

    def __init__(self, system: System) -> None:
        super().__init__(system)
        self.backend = BACKENDS[system.os_family()]

    def current(self, state: PkgState) -> Facets:
        """``installed`` or ``absent`` for each package."""
        found = self.backend.installed(self.system.run(self.backend.query(state.packages), check=False).stdout)
        return {name: "installed" if name in found else "absent" for name in state.packages}

    def desired(self, state: PkgState) -> Facets:
        """The state's wish for each package."""
        return dict.fromkeys(state.packages, state.state)

    def apply(self, state: PkgState, changes: dict[str, Change]) -> None:
        """Install (or remove) the packages that differ, in one transaction."""
        names = sorted(changes)
        commands = self.backend.install(names) if state.state == "installed" else self.backend.remove(names)
        for argv in commands:
            if argv[1:3] == ["-q", "update"]:
                if "apt-update" in self.system.done:
                    continue
                self.system.done.add("apt-update")
            self.system.run(argv)
