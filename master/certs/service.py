"""libvirt TLS certificates for agents: CSRs signed by the master's CA, revocation, CRL, status.

A CSR is signed only for names the agent may use: its own id, the
``pki.default_names`` every agent gets, and ``pki.allowed_names[<agent>]``.
Rejecting or deleting an agent's key revokes its certificates; agents fetch
the CRL that their libvirtd's ``crl_file`` points at.
"""

from __future__ import annotations

import datetime
import logging
from typing import Any

from saltmarsh.pki.ca import CertificateAuthority
from saltmarsh.pki.errors import CsrRefused
from saltmarsh.protocol.messages import CertIssued, CertRequest, CrlData, Failed, Message

from ..events.bus import Event, EventBus
from ..wire.request_channel import Request

log = logging.getLogger(__name__)


def pki_tag(agent_id: str, what: str) -> str:
    """saltmarsh/pki/<agent>/cert/<issued|renewed|revoked>"""
    return f"saltmarsh/pki/{agent_id}/cert/{what}"


class CertificateService:
    """Signs agents' CSRs and keeps the CRL current."""

    def __init__(self, ca: CertificateAuthority, bus: EventBus, allowed_names: dict[str, list[str]],
                 default_names: list[str]) -> None:
        self._ca = ca
        self._bus = bus
        self._allowed = allowed_names
        self._default = default_names

    @property
    def ca(self) -> CertificateAuthority:
        """The CA itself (the HTTP API's own certificate is issued by it too)."""
        return self._ca

    def allowed_for(self, agent_id: str) -> set[str]:
        """Every name ``agent_id`` may put in a certificate."""
        return {agent_id, *self._default, *self._allowed.get(agent_id, [])}

    async def on_cert_request(self, req: Request) -> Message:
        """Sign both CSRs, or refuse with the reason (logged)."""
        assert isinstance(req.body, CertRequest)
        agent_id = req.agent_id
        renewal = any(c.agent_id == agent_id and c.revoked is None for c in self._ca.issued())
        allowed = self.allowed_for(agent_id)
        try:
            server = self._ca.issue(req.body.server_csr, agent_id, "server", allowed)
            client = self._ca.issue(req.body.client_csr, agent_id, "client", allowed)
        except CsrRefused as exc:
            log.warning("refused certificate request: %s", exc)
            return Failed(reason=str(exc)[:500])
        what = "renewed" if renewal else "issued"
        log.info("libvirt certificates %s for %s", what, agent_id)
        self._bus.fire(pki_tag(agent_id, what), {"id": agent_id})
        return CertIssued(ca_cert=self._ca.cert_pem, server_cert=server, client_cert=client, crl=self._ca.crl_pem())

    async def on_crl_request(self, req: Request) -> Message:
        """The current CRL."""
        return CrlData(crl=self._ca.crl_pem())

    def on_key_revoked(self, event: Event) -> None:
        """A key was rejected or deleted: revoke that agent's certificates."""
        agent_id = event.data["id"]
        serials = self._ca.revoke_agent(agent_id)
        if serials:
            log.info("revoked %d libvirt certificates of %s", len(serials), agent_id)
            self._bus.fire(pki_tag(agent_id, "revoked"), {"id": agent_id, "serials": [str(s) for s in serials]})

    def ca_info(self) -> dict[str, str]:
        """The CA certificate's subject and expiry."""
        return self._ca.summary()

    def status(self) -> list[dict[str, Any]]:
        """Every issued certificate: agent, role, names, expiry, revoked or not."""
        def when(ts: float) -> str:
            return datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        return [{"agent": c.agent_id, "usage": c.usage, "names": c.names, "serial": str(c.serial),
                 "not_after": when(c.not_after), "revoked": when(c.revoked) if c.revoked else None}
                for c in self._ca.issued()]
