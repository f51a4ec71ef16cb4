"""The signed envelope every frame on both channels travels in.

Wire form (msgpack array)::

    [sender, presented_key, signed, signature, body]

``signed`` is the msgpack of a :class:`SignedHeader` and ``signature`` is
Ed25519 over exactly those bytes. The header commits to the (encrypted) body
by its BLAKE3 digest, so the signature covers the body too while Ed25519 hashes
only a small header: Ed25519 over a 1 MiB image chunk would cost two SHA-512
passes (4 ms here), SHA-256 one pass (0.6 ms with SHA-NI), BLAKE3 0.18 ms, which
is what lets images cross at memory speed. BLAKE3 is collision resistant like
SHA-256, so the digest binds the body for any holder of the key it is sealed
with (the publish session key is shared by every agent: an AEAD tag alone would
not bind a body for them). The receiver finds the
verification key from ``sender`` (the key store, or the pinned master key) or,
for key submission only, from ``presented_key``; it verifies the signature
*before* it decodes ``signed``, and checks the body against the signed digest
before anything reads it, so no field is trusted before it is authenticated.
"""

from __future__ import annotations

import hmac
import os
import time
from typing import Annotated

import msgspec
import nacl.exceptions
import nacl.signing

from saltmarsh.pki.keys import Identity

from .codec import decode, encode
from .digest import DIGEST_SIZE, digest
from .errors import BadSignature, MalformedFrame, OversizedFrame
from .limits import MAX_ID_LENGTH, Limits
from .version import PROTOCOL_VERSION

NONCE_SIZE = 16
SIGNATURE_SIZE = 64

Sender = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_ID_LENGTH)]
Kind = Annotated[str, msgspec.Meta(min_length=1, max_length=32)]


class Outer(msgspec.Struct, array_like=True, frozen=True, forbid_unknown_fields=True):
    """The outer array of a frame, before the signature is checked."""

    sender: Sender
    presented_key: Annotated[bytes, msgspec.Meta(max_length=32)]
    signed: bytes
    signature: Annotated[bytes, msgspec.Meta(min_length=SIGNATURE_SIZE, max_length=SIGNATURE_SIZE)]
    body: bytes


class SignedHeader(msgspec.Struct, array_like=True, frozen=True, forbid_unknown_fields=True):
    """The signed part of a frame: who, what, when, and the BLAKE3 digest of the (encrypted) body."""

    v: int
    kind: Kind
    sender: Sender
    ts: float
    nonce: Annotated[bytes, msgspec.Meta(min_length=NONCE_SIZE, max_length=NONCE_SIZE)]
    reply_to: Annotated[bytes, msgspec.Meta(max_length=NONCE_SIZE)]
    key_id: Annotated[bytes, msgspec.Meta(max_length=16)]
    body_digest: Annotated[bytes, msgspec.Meta(min_length=DIGEST_SIZE, max_length=DIGEST_SIZE)]


class Header(msgspec.Struct, frozen=True):
    """A verified frame: the signed header's fields and the body that matched its digest."""

    v: int
    kind: str
    sender: str
    ts: float
    nonce: bytes
    reply_to: bytes
    key_id: bytes
    body: bytes


def seal(
    identity: Identity,
    sender: str,
    kind: str,
    body: bytes,
    *,
    reply_to: bytes = b"",
    key_id: bytes = b"",
    present_key: bool = False,
) -> tuple[bytes, bytes]:
    """Sign an already-encrypted body; return (frame, nonce)."""
    nonce = os.urandom(NONCE_SIZE)
    header = SignedHeader(PROTOCOL_VERSION, kind, sender, time.time(), nonce, reply_to, key_id,
                          digest(body))
    return sign_frame(identity, header, body, present_key=present_key), nonce


def sign_frame(identity: Identity, header: SignedHeader, body: bytes, *, present_key: bool = False) -> bytes:
    """Encode ``header``, sign it, and wrap it with ``body`` into a frame (tests build odd headers with it)."""
    signed = encode(header)
    presented = identity.public_key if present_key else b""
    return encode(Outer(header.sender, presented, signed, identity.sign(signed), body))


def parse_outer(frame: bytes | memoryview, limits: Limits) -> Outer:
    """Check the size and shape of a frame; nothing in it is trusted yet."""
    if len(frame) > limits.max_frame:
        raise OversizedFrame(f"frame of {len(frame)} bytes exceeds the {limits.max_frame}-byte limit")
    return decode(frame, Outer, "envelope")


def verify(outer: Outer, public_key: bytes | nacl.signing.VerifyKey) -> Header:
    """Verify the signature with ``public_key``, then decode and check the header."""
    key = public_key if isinstance(public_key, nacl.signing.VerifyKey) else _verify_key(public_key)
    try:
        key.verify(outer.signed, outer.signature)
    except nacl.exceptions.BadSignatureError as exc:
        raise BadSignature(f"signature of frame from {outer.sender!r} does not verify") from exc
    header = decode(outer.signed, SignedHeader, "header")
    if header.v != PROTOCOL_VERSION:
        raise MalformedFrame(f"protocol version {header.v}, this end speaks {PROTOCOL_VERSION}")
    if header.sender != outer.sender:
        raise MalformedFrame(f"signed sender {header.sender!r} differs from {outer.sender!r}")
    if not hmac.compare_digest(digest(outer.body), header.body_digest):
        raise BadSignature(f"body of frame from {outer.sender!r} does not match its signed digest")
    return Header(header.v, header.kind, header.sender, header.ts, header.nonce, header.reply_to, header.key_id,
                  outer.body)


def _verify_key(public_key: bytes) -> nacl.signing.VerifyKey:
    try:
        return nacl.signing.VerifyKey(public_key)
    except (ValueError, TypeError, nacl.exceptions.CryptoError) as exc:
        raise MalformedFrame("presented key is not an Ed25519 public key") from exc
