"""libvirt TLS on the agent: its own keys, certificates from the master's CA, renewal, the CRL.

Files are written in libvirt's layout under ``pki_root`` (default /etc/pki),
each atomically, private keys 0600:

    CA/cacert.pem  CA/cacrl.pem  libvirt/servercert.pem  libvirt/private/serverkey.pem
    libvirt/clientcert.pem  libvirt/private/clientkey.pem

Certificates are renewed once ``renew_fraction`` of their lifetime has passed;
the CRL is fetched again at every check so that a revoked peer is refused. The
flat ``libvirt/pkipath`` copy of the client side carries the CRL too, so that a
libvirtd connecting out (the source of a peer-to-peer migration) refuses a
revoked target.

libvirtd reads its CA, CRL and server certificate only at start, so after new
certificates or a changed CRL the agent asks it to reload them
(``virt-admin server-update-tls``; libvirt-python has no admin API). libvirt
reloads from its *default* locations (/etc/pki/...), not from ``key_file`` and
friends in libvirtd.conf: the reload takes effect when ``pki_root`` is /etc/pki
as libvirtd sees it (the default).

cryptography is imported where it is used, not at the top: it is 9 MB of every
agent's memory (bench/bus.py), and an agent without libvirt TLS never needs it.
"""

from __future__ import annotations

import datetime
import logging
import ssl
import subprocess
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, quote, urlsplit

from saltmarsh.pki.files import write_atomic, write_secret
from saltmarsh.protocol.messages import CertIssued, CertRequest, CrlData, CrlRequest, Failed, Message

from .errors import AgentError

if TYPE_CHECKING:
    from cryptography import x509

log = logging.getLogger(__name__)

Request = Callable[[Message, float], "Future[Message]"]
REQUEST_TIMEOUT = 30.0
VIRT_ADMIN = "virt-admin"
ADMIN_TIMEOUT = 15.0  # a reload answers in well under a second
PEER_TIMEOUT = 5.0  # fetching a peer's certificate for a diagnosis


class CertificateRefused(AgentError):
    """The master refused our certificate request (the reason says why)."""


def admin_uri_for(libvirt_uri: str) -> str:
    """The admin URI of the libvirtd behind a local ``libvirt_uri`` ("" for a remote or test driver).

    ``qemu:///system`` -> ``libvirtd:///system``; a ``?socket=`` moves the admin socket beside it.
    """
    parts = urlsplit(libvirt_uri)
    if parts.scheme not in ("qemu", "qemu+unix") or parts.netloc or parts.path not in ("/system", "/session"):
        return ""
    socket = parse_qs(parts.query).get("socket")
    if not socket:
        return f"libvirtd://{parts.path}"
    admin = Path(socket[0]).parent / "libvirt-admin-sock"
    return f"libvirtd://{parts.path}?socket={quote(str(admin))}"


class LibvirtTls:
    """Keeps this host's libvirt certificates issued, renewed, and its CRL current."""

    def __init__(self, root: Path, names: list[str], request: Request, renew_fraction: float,
                 admin_uri: str = "") -> None:
        self._root = root
        self._names = names
        self._request = request
        self._renew_fraction = renew_fraction
        self._admin_uri = admin_uri

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
        from cryptography import x509
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
        crl = self.files["crl"]
        if crl.exists() and self.revoked(crl.read_bytes()):
            return f"this hypervisor's libvirt client certificate is revoked (on the CRL at {crl})" + RENEW_HINT
        return ""

    def renewal_due(self, now: datetime.datetime | None = None) -> bool:
        """True if there is no certificate yet or ``renew_fraction`` of its lifetime has passed."""
        from cryptography import x509
        path = self.files["server_cert"]
        if not path.exists():
            return True
        cert = x509.load_pem_x509_certificate(path.read_bytes())
        start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
        due = start + (end - start) * self._renew_fraction
        return (now or datetime.datetime.now(datetime.UTC)) >= due

    def issue(self) -> dict[str, Any]:
        """Make new keys, have the master sign them, and write libvirt's files."""
        from cryptography import x509

        from saltmarsh.pki.csr import build_csr, key_pem, new_key
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
        # libvirt clients (and a libvirtd migrating peer to peer) also take a flat ?pkipath= directory.
        flat = self.pkipath
        write_atomic(flat / "cacert.pem", reply.ca_cert)
        write_atomic(flat / "clientcert.pem", reply.client_cert)
        write_secret(flat / "clientkey.pem", key_pem(client_key))
        self._write_crl(reply.crl)
        expires = x509.load_pem_x509_certificate(reply.server_cert).not_valid_after_utc
        log.info("libvirt TLS certificates for %s written under %s (valid until %s)",
                 ", ".join(self._names), self._root, expires)
        reloaded = self.reload_libvirtd()
        return {"names": self._names, "not_after": expires.isoformat(), "libvirtd_reloaded": reloaded,
                "files": {k: str(v) for k, v in files.items()}}

    def refresh_crl(self) -> tuple[bytes, bool]:
        """Fetch the current CRL and write it: (the CRL, whether it differs from the one on disk)."""
        crl = self.current_crl()
        path = self.files["crl"]
        changed = not path.exists() or path.read_bytes() != crl
        if changed:
            self._write_crl(crl)
        return crl, changed

    def current_crl(self) -> bytes:
        """The master's current CRL (nothing written)."""
        reply = self._ask(CrlRequest())
        if not isinstance(reply, CrlData):
            raise CertificateRefused(f"unexpected {reply.KIND} reply to a CRL request")
        return reply.crl

    def _write_crl(self, crl: bytes) -> None:
        # Both the server side (crl_file) and a client connecting out with ?pkipath= check peers against it.
        write_atomic(self.files["crl"], crl)
        write_atomic(self.pkipath / "cacrl.pem", crl)

    def revoked(self, crl_pem: bytes) -> bool:
        """True if the CRL lists this host's server or client certificate."""
        from cryptography import x509
        crl = x509.load_pem_x509_crl(crl_pem)
        for role in ("server_cert", "client_cert"):
            path = self.files[role]
            if path.exists():
                serial = x509.load_pem_x509_certificate(path.read_bytes()).serial_number
                if crl.get_revoked_certificate_by_serial_number(serial) is not None:
                    return True
        return False

    def check(self) -> dict[str, Any]:
        """Renew if due or revoked, and keep the CRL current (run periodically from a worker thread).

        A host whose key was rejected and later accepted again finds its old certificates on the
        CRL: it gets new ones at the next check instead of failing every TLS connection. A CRL that
        changed is loaded into libvirtd at once, so that it refuses a newly revoked peer.
        """
        if self.renewal_due():
            return {"issued": self.issue(), "crl_changed": True}
        crl, changed = self.refresh_crl()
        if self.revoked(crl):
            log.info("this host's libvirt certificates are revoked; requesting new ones")
            return {"issued": self.issue(), "crl_changed": changed}
        reloaded = self.reload_libvirtd() if changed else False
        return {"issued": None, "crl_changed": changed, "libvirtd_reloaded": reloaded}

    def reload_libvirtd(self) -> bool:
        """Have libvirtd re-read its CA, CRL and server certificate; False (and the reason logged) if it did not."""
        if not self._admin_uri:
            log.debug("no libvirtd admin URI: libvirtd picks up new TLS files at its next start")
            return False
        server = urlsplit(self._admin_uri).scheme  # the daemon's name: libvirtd or virtproxyd
        argv = [VIRT_ADMIN, "-q", "-c", self._admin_uri, "server-update-tls", server]
        try:
            proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                                  timeout=ADMIN_TIMEOUT, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            log.warning("libvirtd did not reload its TLS files: %s: %s", " ".join(argv), exc)
            return False
        if proc.returncode != 0:
            reason = " ".join(proc.stderr.split())[-500:] or f"exit status {proc.returncode}"
            log.warning("libvirtd did not reload its TLS files: %s: %s", " ".join(argv), reason)
            return False
        log.info("libvirtd (%s) reloaded its TLS files", self._admin_uri)
        return True

    def refusal_cause(self, host: str, port: int) -> str:
        """Why a TLS connection to ``host:port`` was likely refused, by the master's current CRL ("" if unknown).

        libvirt's own message on either side is opaque ("Failed to verify peer's certificate", "Unable to read
        TLS confirmation"); the CRL and the peer's certificate say which end was refused and why.
        """
        from cryptography import x509
        try:
            crl = x509.load_pem_x509_crl(self.current_crl())
        except (AgentError, TimeoutError, ValueError) as exc:
            log.info("cannot fetch the CRL to explain a TLS refusal: %s", exc)
            return ""
        for role in ("client_cert", "server_cert"):
            path = self.files[role]
            if path.exists():
                own = x509.load_pem_x509_certificate(path.read_bytes())
                if crl.get_revoked_certificate_by_serial_number(own.serial_number) is not None:
                    return "this hypervisor's own libvirt certificate is revoked by the master's CA" + RENEW_HINT
        peer = _peer_certificate(host, port)
        if peer is None:
            return ""
        entry = crl.get_revoked_certificate_by_serial_number(peer.serial_number)
        if entry is not None:
            return (f"the target {host}'s libvirt certificate ({peer.subject.rfc4514_string()}) was revoked by the "
                    f"master's CA on {entry.revocation_date_utc:%Y-%m-%d %H:%M} UTC; it gets a new one at its next "
                    "certificate check (or run virt.keys on it)")
        if datetime.datetime.now(datetime.UTC) >= peer.not_valid_after_utc:
            return f"the target {host}'s libvirt certificate expired on {peer.not_valid_after_utc:%Y-%m-%d %H:%M} UTC"
        return ""

    def _ask(self, message: Message) -> Message:
        reply = self._request(message, REQUEST_TIMEOUT).result(REQUEST_TIMEOUT + 5)
        if isinstance(reply, Failed):
            raise CertificateRefused(f"the master refused {message.KIND}: {reply.reason}")
        return reply


RENEW_HINT = ("; its key was rejected or deleted: it gets new certificates at the next check once accepted again "
              "(or run virt.keys)")


def _peer_certificate(host: str, port: int) -> x509.Certificate | None:
    """The certificate a TLS server presents (not verified: only read, to explain a refusal); None if unreachable."""
    from cryptography import x509
    try:
        pem = ssl.get_server_certificate((host, port), timeout=PEER_TIMEOUT)
    except (OSError, ssl.SSLError) as exc:
        log.info("cannot read %s:%d's certificate to explain a TLS refusal: %s", host, port, exc)
        return None
    return x509.load_pem_x509_certificate(pem.encode())
