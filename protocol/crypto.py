"""Body encryption: a per-agent key on the request channel, a rotating session key on publish.

Every body is sealed with AES-256-GCM (the ``cryptography`` package, OpenSSL underneath)
under a random 12-byte nonce carried in front of the ciphertext, 28 bytes of overhead in
all. Measured here (bench/images.py's reasoning, issue 11): AES-256-GCM seals a MiB in
0.11 ms with AES-NI, where libsodium's XSalsa20-Poly1305 through PyNaCl took 3.8 ms
(SecretBox.encrypt copies the padded message twice) and ChaCha20-Poly1305 0.31 ms: the
cipher was most of an image chunk's cost. Every x86-64 hypervisor CPU of the last decade
has AES-NI.

The per-agent key comes from the X25519 exchange PyNaCl's Box already does between the
agent's and the master's Curve25519 keys (converted from their Ed25519 identities): its
shared key, hashed with BLAKE2b under our own label, so it is used for nothing else. The
session key is the publish channel's shared secret, like Salt's AES key; ``key_id`` names
it so that an agent can tell a frame sealed with a key it does not hold yet from garbage.

Random 96-bit nonces keep the chance of a repeat below 2^-32 for 2^32 messages under one
key, far past what one agent and its master exchange (a heartbeat a second is 2^25 a
year); session and job keys are fresh far more often.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import Protocol

import nacl.public
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .errors import UndecryptableBody

SESSION_KEY_SIZE = 32
AEAD_NONCE_SIZE = 12
AEAD_TAG_SIZE = 16
# What sealing adds to a plaintext: the nonce in front, the tag behind.
CIPHER_OVERHEAD = AEAD_NONCE_SIZE + AEAD_TAG_SIZE
PEER_KEY_LABEL = b"sm-peer-aes256"


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


class AeadCipher:
    """AES-256-GCM under one 32-byte key: ``nonce || ciphertext || tag``."""

    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key)

    def encrypt(self, plaintext: bytes) -> bytes:
        """Seal with a fresh random nonce."""
        nonce = os.urandom(AEAD_NONCE_SIZE)
        return nonce + self._aead.encrypt(nonce, plaintext, None)

    def decrypt(self, ciphertext: bytes) -> bytes:
        """Open and authenticate; UndecryptableBody if either fails."""
        if len(ciphertext) < CIPHER_OVERHEAD:
            raise UndecryptableBody(f"body of {len(ciphertext)} bytes is shorter than a sealed empty one")
        view = memoryview(ciphertext)
        try:
            return self._aead.decrypt(view[:AEAD_NONCE_SIZE], view[AEAD_NONCE_SIZE:], None)
        except InvalidTag as exc:
            raise UndecryptableBody("body does not decrypt with the expected key") from exc


class PeerCipher(AeadCipher):
    """The key between one agent and the master (X25519 shared key, computed once)."""

    def __init__(self, own: nacl.public.PrivateKey, peer: nacl.public.PublicKey) -> None:
        shared = nacl.public.Box(own, peer).shared_key()
        super().__init__(hashlib.blake2b(shared, digest_size=32, person=PEER_KEY_LABEL).digest())


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


class SessionCipher(AeadCipher):
    """AES-256-GCM with the publish session key (or one job's key)."""
