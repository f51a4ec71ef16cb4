"""``service``: a systemd unit running or stopped, enabled or not, and restarted when a watched state changed.

Read with ``systemctl is-active`` and ``is-enabled``. A unit that is static, indirect or
generated has no enablement to change and counts as enabled, so it never shows a false change
(saltstack/salt#25978 shows one every run); a unit whose file is missing is ``absent``, which a
dry run reports as a change (its package may be installed before it) and an apply as a failure.
"""

from __future__ import annotations

from saltmarsh.protocol.states import Change, ServiceState

from . import Facets, Kind

ENABLED = {"enabled", "enabled-runtime", "alias", "static", "indirect", "generated", "linked", "linked-runtime"}
RESTART = "restart"
NO_CHANGE = Change("", "")


class Service(Kind[ServiceState]):
    """Starts, stops, enables, disables and restarts one unit through systemctl."""

    request = ServiceState

    def restarts(self, state: ServiceState) -> bool:
        """A service that should run restarts when a watched state changed (a new package, a new config)."""
        return state.running

    def current(self, state: ServiceState) -> Facets:
        """``running`` yes/no, ``enabled`` yes/no/absent."""
        active = self.system.run(["systemctl", "is-active", state.unit], check=False).stdout.strip()
        enabled = self.system.run(["systemctl", "is-enabled", state.unit], check=False).stdout.strip()
        missing = "absent" if state.enabled else "no"  # no unit file is as disabled as can be
        return {"running": "yes" if active == "active" else "no",
                "enabled": "yes" if enabled in ENABLED else (missing if not enabled else "no")}

    def desired(self, state: ServiceState) -> Facets:
        """The state's wish."""
        return {"running": "yes" if state.running else "no", "enabled": "yes" if state.enabled else "no"}

    def apply(self, state: ServiceState, changes: dict[str, Change]) -> None:
        """Enable or disable first (so a start is what a boot would do), then start, stop or restart."""
        if RESTART in changes or changes.get("enabled", NO_CHANGE).old == "absent":
            # A watched state may have written the unit file itself: systemd must read it again.
            self.system.run(["systemctl", "daemon-reload"])
        if "enabled" in changes:
            self.system.run(["systemctl", "enable" if state.enabled else "disable", state.unit])
        if "running" in changes:
            self.system.run(["systemctl", "start" if state.running else "stop", state.unit])
        elif RESTART in changes:
            self.system.run(["systemctl", "restart", state.unit])
