"""Throwaway certificate authorities and /etc/pki-style layouts for libvirt TLS tests (no saltmarsh code).

``ThrowawayCa`` makes a CA and host certificates with ``cryptography`` (ECDSA P-256 by default, like
pki/ca.py); ``HostPki`` names the files of one host's directory, laid out like libvirt's /etc/pki.
"""

from __future__ import annotations

import datetime
import ipaddress
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class HostPki:
    """A host's certificates laid out like libvirt's /etc/pki (the defaults libvirtd and clients read)."""

    root: Path

    @property
    def ca_cert(self) -> Path:
        return self.root / "CA" / "cacert.pem"

    @property
    def crl(self) -> Path:
        return self.root / "CA" / "cacrl.pem"

    @property
    def server_cert(self) -> Path:
        return self.root / "libvirt" / "servercert.pem"

    @property
    def server_key(self) -> Path:
        return self.root / "libvirt" / "private" / "serverkey.pem"

    @property
    def client_cert(self) -> Path:
        return self.root / "libvirt" / "clientcert.pem"

    @property
    def client_key(self) -> Path:
        return self.root / "libvirt" / "private" / "clientkey.pem"

    def write_pkipath(self, path: Path) -> Path:
        """A flat directory for a client URI's ``?pkipath=``: cacert.pem, clientcert.pem, clientkey.pem."""
        path.mkdir(parents=True, exist_ok=True)
        path.chmod(0o700)
        for src, name in ((self.ca_cert, "cacert.pem"), (self.client_cert, "clientcert.pem"),
                          (self.client_key, "clientkey.pem")):
            shutil.copyfile(src, path / name)
        (path / "clientkey.pem").chmod(0o600)
        return path


class ThrowawayCa:
    """A CA made with python ``cryptography`` that issues libvirt server/client certificates.

    The profile follows pki/ca.py (the product CA): ECDSA P-256 keys (``key_type="rsa"`` gives RSA 2048),
    CA with BasicConstraints(ca, pathlen 0) and KeyUsage keyCertSign+cRLSign (both critical); leaves with
    BasicConstraints(ca=False), KeyUsage digitalSignature+keyEncipherment (critical: libvirt refuses a
    critical KeyUsage without keyEncipherment), one ExtendedKeyUsage (serverAuth or clientAuth) and SANs.
    """

    def __init__(self, common_name: str = "saltmarsh test libvirt CA", key_type: str = "ec") -> None:
        self.key_type = key_type
        self._key = self._new_key()
        now = datetime.datetime.now(datetime.UTC)
        name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "saltmarsh tests"),
                          x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        self.cert = (
            x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self._key.public_key()), critical=False)
            .sign(self._key, hashes.SHA256())
        )
        self._revoked: list[int] = []

    def _new_key(self) -> ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey:
        if self.key_type == "rsa":
            return rsa.generate_private_key(public_exponent=65537, key_size=2048)
        return ec.generate_private_key(ec.SECP256R1())

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def issue(self, common_name: str, usage: str, names: Sequence[str]) -> tuple[bytes, bytes, int]:
        """(certificate PEM, key PEM, serial) for ``usage`` "server" or "client"; ``names`` become SANs."""
        key = self._new_key()
        now = datetime.datetime.now(datetime.UTC)
        eku = ExtendedKeyUsageOID.SERVER_AUTH if usage == "server" else ExtendedKeyUsageOID.CLIENT_AUTH
        sans: list[x509.GeneralName] = []
        for n in names:
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(n)))
            except ValueError:
                sans.append(x509.DNSName(n))
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "saltmarsh tests"),
                                     x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(self.cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=True,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                         crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([eku]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()),
                           critical=False)
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(self._key, hashes.SHA256())
        key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
        return cert.public_bytes(serialization.Encoding.PEM), key_pem, cert.serial_number

    def revoke(self, serial: int) -> None:
        self._revoked.append(serial)

    def crl_pem(self) -> bytes:
        now = datetime.datetime.now(datetime.UTC)
        builder = (x509.CertificateRevocationListBuilder().issuer_name(self.cert.subject)
                   .last_update(now - datetime.timedelta(minutes=5)).next_update(now + datetime.timedelta(days=1)))
        for serial in self._revoked:
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(now).build())
        return builder.sign(self._key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)

    def host_pki(self, root: Path, host: str, server_names: Sequence[str]) -> HostPki:
        """Write ``root`` laid out like /etc/pki: the CA, a server cert (``server_names`` as SANs, the first
        also as CN) and a client cert for ``host``. Keys are 0600, their directory 0700."""
        pki = HostPki(root)
        server = self.issue(server_names[0] if server_names else host, "server", server_names)
        client = self.issue(f"{host} libvirt client", "client", [])
        for path, data, mode in ((pki.ca_cert, self.cert_pem, 0o644), (pki.server_cert, server[0], 0o644),
                                 (pki.server_key, server[1], 0o600), (pki.client_cert, client[0], 0o644),
                                 (pki.client_key, client[1], 0o600)):
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            path.chmod(mode)
        pki.server_key.parent.chmod(0o700)
        return pki


# ----- the daemons -------------------------------------------------------------------------------
