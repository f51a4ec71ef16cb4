"""Body encryption: a per-agent Box on the request channel, a rotating SecretBox on publish.

Both are XSalsa20-Poly1305 from libsodium (pynacl) with a random 24-byte nonce
carried in the ciphertext. The session key is the publish channel's shared
secret, like Salt's AES key; ``key_id`` names it so that an agent can tell a
frame sealed with a key it does not hold yet from garbage.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import Protocol

import nacl.exceptions
import nacl.public
import nacl.secret

from .errors import UndecryptableBody

SESSION_KEY_SIZE = nacl.secret.SecretBox.KEY_SIZE


class Cipher(Protocol):
    """Encrypts and decrypts message bodies."""

    def encrypt(self, plaintext: bytes) -> bytes:
        """Return the ciphertext of ``plaintext``."""

    def decrypt(self, ciphertext: bytes) -> bytes:
        """Return the plaintext, or raise UndecryptableBody."""


class PlainCipher:
    """No encryption: only for key submission, whose body is public keys and labels."""

    def encrypt(self, plaintext: bytes) -> bytes:
        """Return ``plaintext`` unchanged."""
        return plaintext

    def decrypt(self, ciphertext: bytes) -> bytes:
        """Return ``ciphertext`` unchanged."""
        return ciphertext


class _NaclCipher:
    def __init__(self, box: nacl.public.Box | nacl.secret.SecretBox) -> None:
        self._box = box

    def encrypt(self, plaintext: bytes) -> bytes:
        """Encrypt with a fresh random nonce."""
        return bytes(self._box.encrypt(plaintext))

    def decrypt(self, ciphertext: bytes) -> bytes:
        """Decrypt and authenticate; UndecryptableBody if either fails."""
        try:
            return self._box.decrypt(ciphertext)
        except (nacl.exceptions.CryptoError, ValueError, TypeError) as exc:
            raise UndecryptableBody("body does not decrypt with the expected key") from exc


class PeerCipher(_NaclCipher):
    """Box between one agent and the master (X25519 shared key, computed once)."""

    def __init__(self, own: nacl.public.PrivateKey, peer: nacl.public.PublicKey) -> None:
        super().__init__(nacl.public.Box(own, peer))


@dataclass(frozen=True)
class SessionKey:
    """The publish channel's symmetric key and its public id."""

    key: bytes

    @classmethod
    def generate(cls) -> SessionKey:
        """A new random session key."""
        return cls(os.urandom(SESSION_KEY_SIZE))

    @property
    def key_id(self) -> bytes:
        """An 8-byte id derived from the key (a hash, so it reveals nothing)."""
        return hashlib.blake2b(self.key, digest_size=8, person=b"smsession").digest()

    def cipher(self) -> SessionCipher:
        """A cipher that seals and opens with this key."""
        return SessionCipher(self.key)


class SessionCipher(_NaclCipher):
    """SecretBox with the publish session key."""

    def __init__(self, key: bytes) -> None:
        super().__init__(nacl.secret.SecretBox(key))
