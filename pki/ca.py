"""The master's certificate authority for libvirt TLS: issue from CSRs, revoke, publish a CRL.

The CA key (ECDSA P-256, mode 0600) never leaves ``directory``. Each agent
makes its own keys and sends CSRs; ``issue`` signs one only when every name it
asks for is one the agent may have. Issued certificates are recorded in an
index (``issued.json``) so that ``status`` can list them and ``revoke_agent``
can put them on the CRL that every libvirtd is configured to read.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .ca_settings import CaSettings
from .errors import CsrRefused, PkiError
from .files import write_atomic, write_secret

Usage = Literal["server", "client"]
UTC = datetime.UTC


@dataclass
class IssuedCert:
    """One issued certificate, as the index records it."""

    serial: int
    agent_id: str
    usage: str
    names: list[str]
    not_before: float
    not_after: float
    revoked: float | None = None


def _name(common_name: str, organization: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def requested_names(csr: x509.CertificateSigningRequest) -> list[str]:
    """The CN and every DNS/IP subjectAltName a CSR asks for."""
    names = [a.value for a in csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME) if isinstance(a.value, str)]
    try:
        sans = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return names
    names += sans.get_values_for_type(x509.DNSName)
    names += [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)]
    return list(dict.fromkeys(names))


def _san(names: list[str]) -> x509.SubjectAlternativeName:
    entries: list[x509.GeneralName] = []
    for name in dict.fromkeys(names):
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            entries.append(x509.DNSName(name))
    return x509.SubjectAlternativeName(entries)


MAX_NAMES_SHOWN = 10  # of the refused names, in the refusal message


class CertificateAuthority:
    """A CA kept in ``directory`` (ca.key 0600, ca.crt, issued.json, crl.pem)."""

    def __init__(self, directory: Path, settings: CaSettings) -> None:
        self._dir = directory
        self._settings = settings
        self._lock = threading.Lock()
        directory.mkdir(parents=True, exist_ok=True)
        directory.chmod(0o700)
        if not self._key_path.exists():
            self._create()
        self._key = serialization.load_pem_private_key(self._key_path.read_bytes(), password=None)
        self.certificate = x509.load_pem_x509_certificate(self._cert_path.read_bytes())
        if not isinstance(self._key, ec.EllipticCurvePrivateKey):
            raise PkiError(f"{self._key_path} is not an ECDSA key")

    @property
    def _key_path(self) -> Path:
        return self._dir / "ca.key"

    @property
    def _cert_path(self) -> Path:
        return self._dir / "ca.crt"

    @property
    def _index_path(self) -> Path:
        return self._dir / "issued.json"

    @property
    def cert_pem(self) -> bytes:
        """The CA certificate (what every host trusts)."""
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    def summary(self) -> dict[str, str]:
        """Subject, expiry and SHA-256 fingerprint of the CA certificate."""
        cert = self.certificate
        digest = cert.fingerprint(hashes.SHA256()).hex()
        return {"subject": cert.subject.rfc4514_string(),
                "not_after": cert.not_valid_after_utc.strftime("%Y-%m-%d %H:%M:%S UTC"),
                "sha256": ":".join(digest[i:i + 2] for i in range(0, len(digest), 2))}

    def _create(self) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        name = _name(self._settings.common_name, self._settings.organization)
        now = datetime.datetime.now(UTC)
        cert = (
            x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=self._settings.ca_days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        write_secret(self._key_path, key.private_bytes(serialization.Encoding.PEM,
                                                       serialization.PrivateFormat.PKCS8,
                                                       serialization.NoEncryption()))
        write_atomic(self._cert_path, cert.public_bytes(serialization.Encoding.PEM))
        write_atomic(self._index_path, b"[]")

    def issue(self, csr_pem: bytes, agent_id: str, usage: Usage, allowed: set[str],
              days: int | None = None) -> bytes:
        """Sign a CSR for ``usage``; CsrRefused if it is malformed, forged, or asks for a name not in ``allowed``."""
        try:
            csr = x509.load_pem_x509_csr(csr_pem)
        except ValueError as exc:
            raise CsrRefused(f"malformed CSR from {agent_id}") from exc
        if not csr.is_signature_valid:
            raise CsrRefused(f"CSR from {agent_id} is not signed by its own key")
        names = requested_names(csr)
        if not names:
            raise CsrRefused(f"CSR from {agent_id} names no host")
        foreign = [n for n in names if n not in allowed]
        if foreign:
            # repr: the names come from the agent and go into the master's log (no control characters).
            shown = ", ".join(repr(n) for n in foreign[:MAX_NAMES_SHOWN])
            raise CsrRefused(f"CSR from {agent_id} asks for {shown}, which it may not use "
                             f"(allowed: {', '.join(sorted(allowed))})")
        now = datetime.datetime.now(UTC)
        not_after = now + datetime.timedelta(days=days or self._settings.cert_days)
        eku = ExtendedKeyUsageOID.SERVER_AUTH if usage == "server" else ExtendedKeyUsageOID.CLIENT_AUTH
        assert isinstance(self._key, ec.EllipticCurvePrivateKey)
        cert = (
            x509.CertificateBuilder().subject_name(_name(names[0], self._settings.organization))
            .issuer_name(self.certificate.subject).public_key(csr.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=True,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                         crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([eku]), critical=False)
            .add_extension(_san(names), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()), critical=False)
            .sign(self._key, hashes.SHA256())
        )
        self._record(IssuedCert(cert.serial_number, agent_id, usage, names, now.timestamp(), not_after.timestamp()))
        return cert.public_bytes(serialization.Encoding.PEM)

    def issued(self) -> list[IssuedCert]:
        """Every certificate issued, oldest first."""
        return [IssuedCert(**entry) for entry in json.loads(self._index_path.read_text())]

    def _record(self, cert: IssuedCert) -> None:
        with self._lock:
            entries = self.issued()
            entries.append(cert)
            self._save(entries)

    def _save(self, entries: list[IssuedCert]) -> None:
        write_atomic(self._index_path, json.dumps([asdict(e) for e in entries], indent=1).encode())

    def revoke_agent(self, agent_id: str) -> list[int]:
        """Revoke every unrevoked certificate of ``agent_id``; return their serials."""
        now = datetime.datetime.now(UTC).timestamp()
        with self._lock:
            entries = self.issued()
            revoked = [e.serial for e in entries if e.agent_id == agent_id and e.revoked is None]
            for entry in entries:
                if entry.serial in revoked:
                    entry.revoked = now
            if revoked:
                self._save(entries)
        return revoked

    @property
    def _crl_path(self) -> Path:
        return self._dir / "crl.pem"

    def crl_pem(self) -> bytes:
        """The CRL listing every revoked certificate still within its lifetime.

        Signed again only when that list changed or the kept one is past half its life (``crl_days``),
        and kept in ``crl.pem``: every host that fetches it gets the same bytes until then, so a CRL
        installed on a hypervisor (libvirt_tls, the agent's TLS check) does not look changed at each
        fetch, and host setup reports no false change.
        """
        now = datetime.datetime.now(UTC)
        revoked = {entry.serial: entry.revoked for entry in self.issued()
                   if entry.revoked is not None and entry.not_after > now.timestamp()}
        with self._lock:
            kept = self._kept_crl(set(revoked), now)
            if kept is not None:
                return kept
            builder = (x509.CertificateRevocationListBuilder().issuer_name(self.certificate.subject)
                       .last_update(now - datetime.timedelta(minutes=5))
                       .next_update(now + datetime.timedelta(days=self._settings.crl_days)))
            for serial, when in sorted(revoked.items()):
                builder = builder.add_revoked_certificate(
                    x509.RevokedCertificateBuilder().serial_number(serial)
                    .revocation_date(datetime.datetime.fromtimestamp(when, UTC)).build()
                )
            assert isinstance(self._key, ec.EllipticCurvePrivateKey)
            pem = builder.sign(self._key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)
            write_atomic(self._crl_path, pem)
            return pem

    def _kept_crl(self, serials: set[int], now: datetime.datetime) -> bytes | None:
        """The CRL in crl.pem if it lists exactly ``serials`` and has more than half its life left."""
        try:
            pem = self._crl_path.read_bytes()
            crl = x509.load_pem_x509_crl(pem)
        except (OSError, ValueError):
            return None
        left = (crl.next_update_utc or now) - now
        if left <= datetime.timedelta(days=self._settings.crl_days / 2):
            return None
        if not crl.is_signature_valid(self.certificate.public_key()):  # type: ignore[arg-type]
            return None
        return pem if {revoked.serial_number for revoked in crl} == serials else None
