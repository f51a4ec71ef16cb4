"""msgpack encoding with typed, strict decoding (msgspec).

msgspec decodes msgpack straight into typed Structs, rejects unknown fields,
wrong types and over-long strings in one pass, in C; that is the schema check
of DESIGN.md's property 7 and it is several times faster than msgpack plus a
hand-written validator. Every decoding error becomes MalformedFrame here.
"""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec

from .errors import MalformedFrame

T = TypeVar("T")

_encoder = msgspec.msgpack.Encoder()


def encode(obj: Any) -> bytes:
    """Encode a Struct or plain data as msgpack."""
    return _encoder.encode(obj)


_decoders: dict[Any, msgspec.msgpack.Decoder[Any]] = {}


def _decoder(kind: Any) -> msgspec.msgpack.Decoder[Any]:
    # One decoder per type, built on first use (building one compiles the schema).
    decoder = _decoders.get(kind)
    if decoder is None:
        decoder = _decoders[kind] = msgspec.msgpack.Decoder(kind)
    return decoder


def decode(data: bytes, kind: type[T], what: str = "message") -> T:
    """Decode msgpack ``data`` as ``kind``; MalformedFrame with the schema path otherwise."""
    try:
        result: T = _decoder(kind).decode(data)
    except msgspec.ValidationError as exc:
        raise MalformedFrame(f"{what} violates its schema: {exc}") from exc
    except msgspec.DecodeError as exc:
        raise MalformedFrame(f"{what} is not valid msgpack: {exc}") from exc
    except RecursionError as exc:
        # msgspec stops at Python's recursion limit on deeply nested arrays and maps, and
        # raises RecursionError rather than DecodeError: still just a malformed frame.
        raise MalformedFrame(f"{what} is nested too deeply: {exc}") from exc
    return result


def to_builtins(obj: Any) -> Any:
    """Turn Structs into plain dicts and lists (for JSON output and storage)."""
    return msgspec.to_builtins(obj)
