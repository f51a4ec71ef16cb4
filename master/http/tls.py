"""The API's TLS: the operator's certificate, or one the master issues itself from its own CA.

Issued at start when none is on disk (or the one there expires within RENEW_DAYS, or names other
hosts than the settings ask for): a fresh P-256 key (``<root>/pki/http/api.key``, 0600, atomic) and a
server certificate signed by the CA that signs the agents' libvirt certificates, so a client trusts
the API with the one CA file it already has (``<root>/pki/ca/ca.crt``: ``curl --cacert``). Its names
are ``tls_names``, else this host's name, ``localhost`` and the listen address when that is one.
"""

from __future__ import annotations

import datetime
import ipaddress
import logging
import socket
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from saltmarsh.pki.ca import CertificateAuthority
from saltmarsh.pki.files import write_atomic, write_secret

from .settings import HttpSettings, TlsFiles

log = logging.getLogger(__name__)

RENEW_DAYS = 30
API_CERT_OWNER = "saltmarsh-master-api"  # how the CA's index names the API's certificates


def default_names(host: str) -> tuple[str, ...]:
    """This host's name, localhost, and ``host`` when it is a concrete address."""
    names = [socket.gethostname(), "localhost"]
    try:
        if not ipaddress.ip_address(host).is_unspecified:
            names.append(host)
    except ValueError:
        names.append(host)
    return tuple(dict.fromkeys(names))


def server_context(settings: HttpSettings, ca: CertificateAuthority, directory: Path) -> ssl.SSLContext:
    """The SSLContext the API serves with (TLS 1.2 at least)."""
    tls = settings.tls
    assert tls is not None
    cert, key = (tls.cert, tls.key) if tls.cert and tls.key else _own_certificate(settings, tls, ca, directory)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    return context


def _own_certificate(settings: HttpSettings, tls: TlsFiles, ca: CertificateAuthority,
                     directory: Path) -> tuple[Path, Path]:
    names = tls.names or default_names(settings.host)
    cert_path, key_path = directory / "api.crt", directory / "api.key"
    if _current(cert_path, key_path, names):
        return cert_path, key_path
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, names[0])]))
           .add_extension(x509.SubjectAlternativeName([_general_name(n) for n in names]), critical=False)
           .sign(key, hashes.SHA256()))
    cert_pem = ca.issue(csr.public_bytes(serialization.Encoding.PEM), API_CERT_OWNER, "server", set(names))
    write_secret(key_path, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                             serialization.NoEncryption()))
    write_atomic(cert_path, cert_pem + ca.cert_pem)
    log.info("issued the HTTP API a certificate from the master's CA for %s", ", ".join(names))
    return cert_path, key_path


def _current(cert_path: Path, key_path: Path, names: tuple[str, ...]) -> bool:
    """Whether the certificate on disk is there, names exactly ``names`` and lives past RENEW_DAYS."""
    if not cert_path.is_file() or not key_path.is_file():
        return False
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    left = cert.not_valid_after_utc - datetime.datetime.now(datetime.UTC)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    shown = [str(v) for v in san.get_values_for_type(x509.DNSName)] + \
        [str(v) for v in san.get_values_for_type(x509.IPAddress)]
    return left > datetime.timedelta(days=RENEW_DAYS) and sorted(shown) == sorted(names)


def _general_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)

