"""libvirt TLS on the agent: its own keys, certificates from the master's CA, renewal, the CRL.

Files are written in libvirt's layout under ``pki_root`` (default /etc/pki),
each atomically, private keys 0600:

    CA/cacert.pem  CA/cacrl.pem  libvirt/servercert.pem  libvirt/private/serverkey.pem
    libvirt/clientcert.pem  libvirt/private/clientkey.pem

Certificates are renewed once ``renew_fraction`` of their lifetime has passed;
the CRL is fetched again at every check so that a revoked peer is refused.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from cryptography import x509

from saltmarsh.pki.csr import build_csr, key_pem, new_key
from saltmarsh.pki.files import write_atomic, write_secret
from saltmarsh.protocol.messages import CertIssued, CertRequest, CrlData, CrlRequest, Failed, Message

from .errors import AgentError

log = logging.getLogger(__name__)

Request = Callable[[Message, float], "Future[Message]"]
REQUEST_TIMEOUT = 30.0


class CertificateRefused(AgentError):
    """The master refused our certificate request (the reason says why)."""


class LibvirtTls:
    """Keeps this host's libvirt certificates issued, renewed, and its CRL current."""

    def __init__(self, root: Path, names: list[str], request: Request, renew_fraction: float) -> None:
        self._root = root
        self._names = names
        self._request = request
        self._renew_fraction = renew_fraction

    @property
    def files(self) -> dict[str, Path]:
        """libvirt's files under the root."""
        return {
            "ca_cert": self._root / "CA" / "cacert.pem",
            "crl": self._root / "CA" / "cacrl.pem",
            "server_cert": self._root / "libvirt" / "servercert.pem",
            "server_key": self._root / "libvirt" / "private" / "serverkey.pem",
            "client_cert": self._root / "libvirt" / "clientcert.pem",
            "client_key": self._root / "libvirt" / "private" / "clientkey.pem",
        }

    @property
    def pkipath(self) -> Path:
        """A flat copy of the client credentials, for libvirt URIs' ``?pkipath=``."""
        return self._root / "libvirt" / "pkipath"

    @property
    def default_location(self) -> bool:
        """True when the files are where libvirt looks by default (/etc/pki), so URIs need no pkipath."""
        return self._root == Path("/etc/pki")

    def client_problem(self, now: datetime.datetime | None = None) -> str:
        """Why this host's libvirt client certificate cannot be used now ("" if it can)."""
        path = self.files["client_cert"]
        if not path.exists():
            return f"this hypervisor has no libvirt client certificate at {path} (run virt.keys or set libvirt_tls)"
        cert = x509.load_pem_x509_certificate(path.read_bytes())
        moment = now or datetime.datetime.now(datetime.UTC)
        if moment >= cert.not_valid_after_utc:
            expired = cert.not_valid_after_utc.strftime("%Y-%m-%d %H:%M")
            return f"this hypervisor's libvirt client certificate expired on {expired} UTC"
        if moment < cert.not_valid_before_utc:
            return f"this hypervisor's libvirt client certificate is not valid before {cert.not_valid_before_utc}"
        return ""

    def renewal_due(self, now: datetime.datetime | None = None) -> bool:
        """True if there is no certificate yet or ``renew_fraction`` of its lifetime has passed."""
        path = self.files["server_cert"]
        if not path.exists():
            return True
        cert = x509.load_pem_x509_certificate(path.read_bytes())
        start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
        due = start + (end - start) * self._renew_fraction
        return (now or datetime.datetime.now(datetime.UTC)) >= due

    def issue(self) -> dict[str, Any]:
        """Make new keys, have the master sign them, and write libvirt's files."""
        server_key, client_key = new_key(), new_key()
        reply = self._ask(CertRequest(server_csr=build_csr(server_key, self._names),
                                      client_csr=build_csr(client_key, self._names)))
        if not isinstance(reply, CertIssued):
            raise CertificateRefused(f"unexpected {reply.KIND} reply to a certificate request")
        files = self.files
        (self._root / "libvirt" / "private").mkdir(parents=True, exist_ok=True)
        (self._root / "libvirt" / "private").chmod(0o700)
        write_secret(files["server_key"], key_pem(server_key))
        write_secret(files["client_key"], key_pem(client_key))
        write_atomic(files["server_cert"], reply.server_cert)
        write_atomic(files["client_cert"], reply.client_cert)
        write_atomic(files["ca_cert"], reply.ca_cert)
        write_atomic(files["crl"], reply.crl)
        # libvirt clients (and a libvirtd migrating peer to peer) also take a flat ?pkipath= directory.
        flat = self.pkipath
        write_atomic(flat / "cacert.pem", reply.ca_cert)
        write_atomic(flat / "clientcert.pem", reply.client_cert)
        write_secret(flat / "clientkey.pem", key_pem(client_key))
        expires = x509.load_pem_x509_certificate(reply.server_cert).not_valid_after_utc
        log.info("libvirt TLS certificates for %s written under %s (valid until %s)",
                 ", ".join(self._names), self._root, expires)
        return {"names": self._names, "not_after": expires.isoformat(), "files": {k: str(v) for k, v in files.items()}}

    def refresh_crl(self) -> bytes:
        """Fetch the current CRL, write it, and return it."""
        reply = self._ask(CrlRequest())
        if not isinstance(reply, CrlData):
            raise CertificateRefused(f"unexpected {reply.KIND} reply to a CRL request")
        write_atomic(self.files["crl"], reply.crl)
        return reply.crl

    def revoked(self, crl_pem: bytes) -> bool:
        """True if the CRL lists this host's server or client certificate."""
        crl = x509.load_pem_x509_crl(crl_pem)
        for role in ("server_cert", "client_cert"):
            path = self.files[role]
            if path.exists():
                serial = x509.load_pem_x509_certificate(path.read_bytes()).serial_number
                if crl.get_revoked_certificate_by_serial_number(serial) is not None:
                    return True
        return False

    def check(self) -> None:
        """Renew if due or revoked, and keep the CRL current (run periodically from a worker thread).

        A host whose key was rejected and later accepted again finds its old certificates on the
        CRL: it gets new ones at the next check instead of failing every TLS connection.
        """
        if self.renewal_due():
            self.issue()
        elif self.revoked(self.refresh_crl()):
            log.info("this host's libvirt certificates are revoked; requesting new ones")
            self.issue()

    def _ask(self, message: Message) -> Message:
        reply = self._request(message, REQUEST_TIMEOUT).result(REQUEST_TIMEOUT + 5)
        if isinstance(reply, Failed):
            raise CertificateRefused(f"the master refused {message.KIND}: {reply.reason}")
        return reply
