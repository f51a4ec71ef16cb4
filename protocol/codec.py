"""msgpack encoding with typed, strict decoding (msgspec).

msgspec decodes msgpack straight into typed Structs, rejects unknown fields,
wrong types and over-long strings in one pass, in C; that is the schema check
of docs/architecture.md's property 7 and it is several times faster than msgpack plus a
hand-written validator. Every decoding error becomes MalformedFrame here,
with msgspec's message cut to MAX_REASON characters and its control
characters escaped: msgspec quotes an unknown field's name verbatim, and that
name is whatever the peer sent (a newline that forges a log line, or a
megabyte of text), while the reason ends up in a log line.
"""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec

from .errors import MalformedFrame

T = TypeVar("T")

MAX_REASON = 200

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


def decode(data: bytes | memoryview, kind: type[T], what: str = "message") -> T:
    """Decode msgpack ``data`` as ``kind``; MalformedFrame with the schema path otherwise.

    ``data`` may be a view of a received ZeroMQ frame: decoded fields are copies, so none keeps it alive.
    """
    try:
        result: T = _decoder(kind).decode(data)
    except msgspec.ValidationError as exc:
        raise MalformedFrame(f"{what} violates its schema: {_reason(exc)}") from exc
    except msgspec.DecodeError as exc:
        raise MalformedFrame(f"{what} is not valid msgpack: {_reason(exc)}") from exc
    except UnicodeDecodeError as exc:
        # msgspec raises this, not DecodeError, for a field name that is not UTF-8 (found by
        # fuzz/fuzz_envelope.py: any key could send it in a hello and make the master fail inside).
        raise MalformedFrame(f"{what} has a field name that is not UTF-8: {_reason(exc)}") from exc
    except RecursionError as exc:
        # msgspec stops at Python's recursion limit on deeply nested arrays and maps, and
        # raises RecursionError rather than DecodeError: still just a malformed frame.
        raise MalformedFrame(f"{what} is nested too deeply: {_reason(exc)}") from exc
    return result


def _reason(exc: Exception) -> str:
    """``str(exc)``, at most MAX_REASON characters, with anything unprintable escaped."""
    text = str(exc)
    cut = text[:MAX_REASON]
    printable = "".join(c if c.isprintable() else ascii(c)[1:-1] for c in cut)
    return printable + ("..." if len(text) > MAX_REASON else "")


def to_builtins(obj: Any) -> Any:
    """Turn Structs into plain dicts and lists (for JSON output and storage)."""
    return msgspec.to_builtins(obj)
