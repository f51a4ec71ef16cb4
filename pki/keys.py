"""Ed25519 identities of the master and the agents.

An identity signs with Ed25519; the same seed, converted to X25519, gives the
Curve25519 key used to encrypt bodies (pynacl's ``to_curve25519_*``), so each
party has exactly one secret to keep.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from pathlib import Path

import nacl.exceptions
import nacl.public
import nacl.signing

from .errors import KeyFileError
from .files import write_atomic, write_secret

PUBLIC_KEY_SIZE = 32


def fingerprint(public_key: bytes) -> str:
    """Return the SHA-256 fingerprint of a raw public key, as colon-separated hex pairs."""
    digest = hashlib.sha256(public_key).hexdigest()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


def encode_public_key(public_key: bytes) -> str:
    """Encode a raw public key for files and the CLI (base64, one line)."""
    return base64.b64encode(public_key).decode("ascii")


def decode_public_key(text: str) -> bytes:
    """Decode a public key written by ``encode_public_key``; ValueError if it is not one."""
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except ValueError as exc:
        raise ValueError("public key is not base64") from exc
    if len(raw) != PUBLIC_KEY_SIZE:
        raise ValueError(f"public key has {len(raw)} bytes, expected {PUBLIC_KEY_SIZE}")
    return raw


@dataclass(frozen=True)
class Identity:
    """A private Ed25519 identity: signs frames and opens boxes addressed to it."""

    signing_key: nacl.signing.SigningKey

    @classmethod
    def generate(cls) -> Identity:
        """Make a new random identity."""
        return cls(nacl.signing.SigningKey.generate())

    @property
    def public_key(self) -> bytes:
        """The raw 32-byte Ed25519 public key."""
        return bytes(self.signing_key.verify_key)

    @property
    def fingerprint(self) -> str:
        """Fingerprint of the public key."""
        return fingerprint(self.public_key)

    @property
    def curve_private(self) -> nacl.public.PrivateKey:
        """The X25519 private key derived from the signing seed."""
        return self.signing_key.to_curve25519_private_key()

    def unseal(self, sealed: bytes) -> bytes:
        """Open a box sealed to this identity (``seal_to``); nacl.exceptions.CryptoError if it is not."""
        return nacl.public.SealedBox(self.curve_private).decrypt(sealed)

    def sign(self, data: bytes) -> bytes:
        """Return the 64-byte detached signature of ``data``."""
        return self.signing_key.sign(data).signature

    def save(self, path: Path) -> None:
        """Write the seed atomically, mode 0600, and the public key beside it (``.pub``)."""
        write_secret(path, base64.b64encode(bytes(self.signing_key)) + b"\n")
        write_atomic(path.with_suffix(".pub"), encode_public_key(self.public_key).encode() + b"\n")

    @classmethod
    def load(cls, path: Path) -> Identity:
        """Load an identity written by ``save``; KeyFileError if missing or not a key."""
        try:
            seed = base64.b64decode(path.read_bytes().strip(), validate=True)
            return cls(nacl.signing.SigningKey(seed))
        except OSError as exc:
            raise KeyFileError(f"cannot read key {path}: {exc.strerror}") from exc
        except (ValueError, nacl.exceptions.CryptoError) as exc:
            raise KeyFileError(f"{path} does not hold an Ed25519 key") from exc

    @classmethod
    def load_or_create(cls, path: Path) -> Identity:
        """Load the identity at ``path``, creating it first if the file does not exist."""
        if not path.exists():
            cls.generate().save(path)
        return cls.load(path)


def verify_key(public_key: bytes) -> nacl.signing.VerifyKey:
    """Return a VerifyKey for a raw public key."""
    return nacl.signing.VerifyKey(public_key)


def seal_to(public_key: bytes, data: bytes) -> bytes:
    """Encrypt ``data`` so that only the holder of ``public_key`` can read it (anonymous sender)."""
    return bytes(nacl.public.SealedBox(curve_public(public_key)).encrypt(data))


def curve_public(public_key: bytes) -> nacl.public.PublicKey:
    """Return the X25519 public key matching a raw Ed25519 public key."""
    return verify_key(public_key).to_curve25519_public_key()
