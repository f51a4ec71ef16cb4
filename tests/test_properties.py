"""Property-based tests (hypothesis) of the envelope, the codec and every message schema.

- Arbitrary bytes and arbitrary lists of frames, through the decoders and
  through the master's real request channel (fuzz/fuzz_envelope.py's Harness):
  only our own ProtocolError types come out of the decoders, and the channel
  refuses or dispatches, never fails inside.
- Every message schema (found in protocol/messages.py, so a new one is
  covered without touching this file) round-trips, with values generated
  from the schema's own constraints (msgspec.inspect); mutated encodings
  decode to a valid message or raise MalformedFrame; unknown fields are refused.
- sign -> verify with real keys: any single-bit change anywhere in a frame is
  refused.
- Memory: tens of thousands of malformed frames do not grow the process.

The default example counts keep this file near half a minute on a busy
2-core machine; ``HYPOTHESIS_PROFILE=thorough`` runs many more.
"""

from __future__ import annotations

import importlib.util
import inspect
import os
import random
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from saltmarsh.pki.keys import Identity
from saltmarsh.protocol import envelope, messages
from saltmarsh.protocol.codec import MAX_REASON, decode, encode
from saltmarsh.protocol.envelope import Outer, SignedHeader, parse_outer, seal, verify
from saltmarsh.protocol.errors import MalformedFrame, ProtocolError
from saltmarsh.protocol.limits import Limits

settings.register_profile("default", max_examples=60, deadline=None, database=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("thorough", max_examples=3000, deadline=None, database=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

ROOT = Path(__file__).resolve().parent.parent
LIMITS = Limits(max_frame=64 * 1024)


def _load_fuzz_target() -> Any:
    spec = importlib.util.spec_from_file_location("fuzz_envelope", ROOT / "fuzz" / "fuzz_envelope.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["fuzz_envelope"] = module
    spec.loader.exec_module(module)
    return module


fuzz_target = _load_fuzz_target()


@pytest.fixture(scope="module")
def harness() -> Iterator[Any]:
    """The fuzz target's Harness: a real RequestChannel with real keys, made once for this module."""
    made = fuzz_target.Harness(LIMITS)
    yield made
    made.close()


# ---- strategies from the schemas themselves ---------------------------------------------------

INT_MIN, INT_MAX = -(2**63), 2**64 - 1  # what msgpack carries
SMALL = 6  # items per generated list or map, characters past a schema's minimum: enough to vary, fast to run

_scalars = (st.none() | st.booleans() | st.integers(INT_MIN, INT_MAX) | st.floats(allow_nan=False)
            | st.text(max_size=SMALL) | st.binary(max_size=SMALL))
ANY = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=3)
                   | st.dictionaries(st.text(max_size=SMALL), inner, max_size=3), max_leaves=8)


def _sized(lo: int | None, hi: int | None) -> tuple[int, int]:
    low = lo or 0
    return low, max(low, min(hi if hi is not None else low + SMALL, low + SMALL))


def strategy_for(t: msgspec.inspect.Type) -> st.SearchStrategy[Any]:
    """Valid values of one msgspec type, constraints included."""
    mi = msgspec.inspect
    if isinstance(t, mi.StrType):
        if t.pattern:
            return st.from_regex(t.pattern, fullmatch=True).filter(
                lambda s: (t.min_length or 0) <= len(s) <= (t.max_length or len(s)))
        lo, hi = _sized(t.min_length, t.max_length)
        return st.text(min_size=lo, max_size=hi)
    if isinstance(t, mi.BytesType):
        lo, hi = _sized(t.min_length, t.max_length)
        return st.binary(min_size=lo, max_size=hi)
    if isinstance(t, mi.IntType):
        lo = t.ge if t.ge is not None else (t.gt + 1 if t.gt is not None else INT_MIN)
        hi = t.le if t.le is not None else (t.lt - 1 if t.lt is not None else INT_MAX)
        return st.integers(lo, hi)
    if isinstance(t, mi.FloatType):
        bounded = t.ge is not None or t.gt is not None or t.le is not None or t.lt is not None
        return st.floats(
            min_value=t.ge if t.ge is not None else t.gt, max_value=t.le if t.le is not None else t.lt,
            exclude_min=t.gt is not None, exclude_max=t.lt is not None,
            allow_nan=False, allow_infinity=not bounded,
        )
    if isinstance(t, mi.BoolType):
        return st.booleans()
    if isinstance(t, mi.NoneType):
        return st.none()
    if isinstance(t, mi.AnyType):
        return ANY
    if isinstance(t, mi.ListType):
        lo, hi = _sized(t.min_length, t.max_length)
        return st.lists(strategy_for(t.item_type), min_size=lo, max_size=hi)
    if isinstance(t, mi.DictType):
        lo, hi = _sized(t.min_length, t.max_length)
        return st.dictionaries(strategy_for(t.key_type), strategy_for(t.value_type), min_size=lo, max_size=hi)
    if isinstance(t, mi.UnionType):
        return st.one_of(*(strategy_for(member) for member in t.types))
    if isinstance(t, mi.StructType):
        return st.builds(t.cls, **{f.name: strategy_for(f.type) for f in t.fields})
    raise AssertionError(f"no strategy for {t!r}: teach strategy_for this type")


def valid(cls: type[Any]) -> st.SearchStrategy[Any]:
    """Valid instances of a Struct."""
    return strategy_for(msgspec.inspect.type_info(cls))


def _schemas() -> list[type[msgspec.Struct]]:
    found = {cls for _, cls in inspect.getmembers(messages, inspect.isclass)
             if issubclass(cls, msgspec.Struct) and cls is not messages.Message and cls.__module__ == messages.__name__}
    found |= {Outer, SignedHeader}
    return sorted(found, key=lambda cls: cls.__name__)


SCHEMAS = _schemas()


def test_every_kind_has_a_schema_here() -> None:
    kinds = {cls.KIND for cls in SCHEMAS if issubclass(cls, messages.Message)}
    assert set(messages.REQUEST_KINDS) | set(messages.REPLY_KINDS) | {messages.Job.KIND} <= kinds


def _one_line_reason(exc: ProtocolError) -> None:
    text = str(exc)
    assert "\n" not in text and "\r" not in text, text
    assert len(text) < MAX_REASON + 200, len(text)


# ---- (a) arbitrary input: only our own errors, the channel never fails inside --------------------


@given(st.binary(max_size=2048))
def test_envelope_decoder_on_arbitrary_bytes(data: bytes) -> None:
    try:
        outer = parse_outer(data, LIMITS)
    except ProtocolError as exc:
        _one_line_reason(exc)
        return
    for key in (outer.presented_key, Identity.generate().public_key):
        try:
            verify(outer, key)
        except ProtocolError as exc:
            _one_line_reason(exc)


@pytest.mark.parametrize("schema", SCHEMAS, ids=lambda cls: cls.__name__)
@given(data=st.binary(max_size=512))
def test_codec_on_arbitrary_bytes(schema: type[Any], data: bytes) -> None:
    try:
        message = decode(data, schema)
    except MalformedFrame as exc:
        _one_line_reason(exc)
        return
    assert decode(encode(message), schema) == message


# msgpack that decodes as some structure, nested and typed arbitrarily: deeper than random bytes get
_msgpack_values = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=6)
                               | st.dictionaries(st.text(max_size=12), inner, max_size=6), max_leaves=30)


@pytest.mark.parametrize("schema", SCHEMAS, ids=lambda cls: cls.__name__)
@given(value=_msgpack_values)
def test_codec_on_arbitrary_msgpack(schema: type[Any], value: Any) -> None:
    try:
        message = decode(encode(value), schema)
    except MalformedFrame as exc:
        _one_line_reason(exc)
        return
    assert decode(encode(message), schema) == message


def test_codec_on_nesting_past_the_recursion_limit() -> None:
    for opener in (b"\x91", b"\x81\xa1k"):
        deep = opener * (sys.getrecursionlimit() * 4) + b"\xc0"
        for schema in SCHEMAS:
            with pytest.raises(MalformedFrame):
                decode(deep, schema)


@given(data=st.binary(max_size=1024))
def test_request_channel_on_arbitrary_input(harness: Any, data: bytes) -> None:
    before = harness.channel.rejected + harness.handled
    harness.feed(data)  # FailedInside if the channel failed instead of refusing
    direct = data[:1] and data[0] % 7 == 6  # that mode decodes every schema without the channel
    assert harness.channel.rejected + harness.handled == before + (0 if direct else 1)


@given(parts=st.lists(st.binary(max_size=256), max_size=5))
def test_request_channel_on_arbitrary_frame_lists(harness: Any, parts: list[bytes]) -> None:
    before = harness.channel.rejected
    harness.answer(parts)
    assert harness.channel.rejected == before + 1  # nothing arbitrary is signed: every one refused


# ---- (b) every schema: round trip, mutations, unknown fields, wrong types -----------------------


@pytest.mark.parametrize("schema", SCHEMAS, ids=lambda cls: cls.__name__)
@given(data=st.data())
def test_schema_round_trip(schema: type[Any], data: st.DataObject) -> None:
    message = data.draw(valid(schema))
    assert decode(encode(message), schema) == message


MUTATIONS = ("flip", "truncate", "insert", "append", "replace")


def mutate(data: st.DataObject, encoded: bytes) -> bytes:
    """One random change to an encoding: a bit flip, a cut, bytes inserted, appended or overwritten."""
    how = data.draw(st.sampled_from(MUTATIONS))
    at = data.draw(st.integers(0, max(0, len(encoded) - 1)))
    if how == "flip" and encoded:
        bit = data.draw(st.integers(0, 7))
        return encoded[:at] + bytes([encoded[at] ^ (1 << bit)]) + encoded[at + 1:]
    if how == "truncate":
        return encoded[:at]
    extra = data.draw(st.binary(min_size=1, max_size=8))
    if how == "insert":
        return encoded[:at] + extra + encoded[at:]
    if how == "append":
        return encoded + extra
    return encoded[:at] + extra + encoded[at + len(extra):]


@pytest.mark.parametrize("schema", SCHEMAS, ids=lambda cls: cls.__name__)
@given(data=st.data())
def test_mutated_encodings_decode_valid_or_raise_malformed(schema: type[Any], data: st.DataObject) -> None:
    encoded = encode(data.draw(valid(schema)))
    for _ in range(5):
        encoded = mutate(data, encoded)
        try:
            message = decode(encoded, schema)
        except MalformedFrame as exc:
            _one_line_reason(exc)
            continue
        assert isinstance(message, schema)
        assert decode(encode(message), schema) == message  # what decodes is valid by the schema


def _fields(schema: type[Any]) -> list[str]:
    info = msgspec.inspect.type_info(schema)
    assert isinstance(info, msgspec.inspect.StructType)
    return [f.encode_name for f in info.fields]


@pytest.mark.parametrize("schema", SCHEMAS, ids=lambda cls: cls.__name__)
@given(data=st.data())
def test_unknown_fields_are_refused(schema: type[Any], data: st.DataObject) -> None:
    plain = msgspec.to_builtins(data.draw(valid(schema)))
    value = data.draw(ANY)
    if isinstance(plain, list):  # array_like: one element too many
        extended: Any = [*plain, value]
    else:
        name = data.draw(st.text(min_size=1, max_size=20).filter(lambda n: n not in _fields(schema)))
        extended = {**plain, name: value}
    with pytest.raises(MalformedFrame) as raised:
        decode(encode(extended), schema)
    _one_line_reason(raised.value)


@pytest.mark.parametrize("schema", [s for s in SCHEMAS if _fields(s)], ids=lambda cls: cls.__name__)
@given(data=st.data())
def test_wrong_types_decode_valid_or_raise_malformed(schema: type[Any], data: st.DataObject) -> None:
    plain = msgspec.to_builtins(data.draw(valid(schema)))
    index = data.draw(st.integers(0, len(_fields(schema)) - 1))
    value = data.draw(ANY)
    if isinstance(plain, list):
        plain[index] = value
    else:
        plain[_fields(schema)[index]] = value
    try:
        message = decode(encode(plain), schema)
    except MalformedFrame as exc:
        _one_line_reason(exc)
        return
    assert decode(encode(message), schema) == message


def test_schema_patterns_do_not_take_a_trailing_newline() -> None:
    # msgspec matches patterns with re.search, where "$" also matches before a final newline.
    jid = "1" * 20
    assert decode(encode({"jids": [jid]}), messages.Ack).jids == [jid]
    for bad in ({"jids": [jid + "\n"]}, {"jids": ["\n" + jid]}):
        with pytest.raises(MalformedFrame):
            decode(encode(bad), messages.Ack)
    with pytest.raises(MalformedFrame):
        decode(encode({"state": "accepted\n"}), messages.Welcome)
    patterns = [p for schema in SCHEMAS for p in _patterns(msgspec.inspect.type_info(schema), set())]
    assert patterns, "no pattern found: the walk below is broken"
    assert [p for p in patterns if p.endswith("$")] == [], "end patterns with \\Z, not $"


def _patterns(t: msgspec.inspect.Type, seen: set[type[Any]]) -> list[str]:
    """Every string pattern inside a type."""
    mi = msgspec.inspect
    if isinstance(t, mi.StrType):
        return [t.pattern] if t.pattern else []
    if isinstance(t, mi.StructType):
        if t.cls in seen:
            return []
        seen.add(t.cls)
        return [p for f in t.fields for p in _patterns(f.type, seen)]
    inner = [getattr(t, a) for a in ("item_type", "key_type", "value_type") if hasattr(t, a)]
    inner += list(getattr(t, "types", ()))
    return [p for i in inner for p in _patterns(i, seen)]


# ---- (c) sign -> verify: every single-bit change is refused ------------------------------------


@pytest.fixture(scope="module")
def signer() -> Identity:
    """A real Ed25519 identity, made for this module's tests."""
    return Identity.generate()


def receive(frame: bytes, sender: str, public_key: bytes) -> envelope.Header:
    """What the master does with a frame from an accepted ``sender``: the accepted key, or the one presented."""
    outer = parse_outer(frame, LIMITS)
    key = public_key if outer.presented_key in (b"", public_key) else outer.presented_key
    header = verify(outer, key)
    if header.sender != sender:
        raise MalformedFrame(f"from {header.sender!r}, not {sender!r}")
    return header


@given(kind=st.sampled_from(sorted(messages.REQUEST_KINDS)), body=st.binary(max_size=64),
       present=st.booleans(), data=st.data())
def test_any_single_bit_change_is_refused(signer: Identity, kind: str, body: bytes, present: bool,
                                          data: st.DataObject) -> None:
    frame, nonce = seal(signer, "hv1", kind, body, present_key=present)
    header = receive(frame, "hv1", signer.public_key)
    assert (header.kind, header.sender, header.body, header.nonce) == (kind, "hv1", body, nonce)
    bit = data.draw(st.integers(0, len(frame) * 8 - 1))
    flipped = frame[:bit // 8] + bytes([frame[bit // 8] ^ (1 << bit % 8)]) + frame[bit // 8 + 1:]
    with pytest.raises(ProtocolError):
        receive(flipped, "hv1", signer.public_key)


def test_every_single_bit_of_one_frame(signer: Identity) -> None:
    # Exhaustive for one small frame of each shape: hypothesis samples, this covers every bit.
    for present in (False, True):
        frame, _ = seal(signer, "hv1", "returns", b"body", present_key=present)
        for bit in range(len(frame) * 8):
            flipped = frame[:bit // 8] + bytes([frame[bit // 8] ^ (1 << bit % 8)]) + frame[bit // 8 + 1:]
            with pytest.raises(ProtocolError):
                receive(flipped, "hv1", signer.public_key)


# ---- memory: malformed input does not grow the process ----------------------------------------


def _rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS in /proc/self/status")


@pytest.mark.timeout(240)
def test_malformed_frames_do_not_grow_memory(harness: Any, signer: Identity) -> None:
    rng = random.Random(11)
    valid_frames = [seal(signer, "hv1", k, rng.randbytes(rng.randrange(200)), present_key=bool(i % 2))[0]
                    for i, k in enumerate(sorted(messages.REQUEST_KINDS))]

    def malformed(i: int) -> bytes:
        if i % 3 == 0:
            return rng.randbytes(rng.randrange(1, 400))
        if i % 3 == 1:
            # Well signed, by a key never seen before and never accepted: refused, and answered.
            kind = rng.choice(sorted(set(messages.REQUEST_KINDS) - {"hello"}))
            return seal(Identity.generate(), f"peer{i}", kind, rng.randbytes(40), present_key=True)[0]
        frame = bytearray(rng.choice(valid_frames))
        for _ in range(rng.randrange(1, 4)):
            frame[rng.randrange(len(frame))] ^= 1 << rng.randrange(8)
        return bytes(frame)

    def run(n: int) -> None:
        for i in range(n):
            frame = malformed(i)
            harness.answer([frame])  # the channel's whole path, refusals logged (and rate-limited)
            for schema in (messages.Returns, messages.Events, messages.Hello, messages.Job):
                try:
                    decode(frame, schema)
                except MalformedFrame:
                    pass

    run(5_000)  # warm-up: the allocator's arenas, the rate limiter's buckets, part of the Box cache
    before = _rss_kib()
    run(45_000)
    grown = _rss_kib() - before
    # Measured here: about 1 MB, the Box cache filling up to MAX_CIPHERS; with that cache unbounded,
    # the 15,000 fresh keys among these frames add over 6 MB.
    assert grown < 4 * 1024, f"RSS grew by {grown} KiB over 45,000 malformed frames"


# ---- inputs the fuzzer once found a failure with ------------------------------------------------


@pytest.mark.parametrize("path", sorted((ROOT / "fuzz" / "regressions").iterdir()), ids=lambda p: p.name)
def test_fuzz_regressions(harness: Any, path: Path) -> None:
    before = harness.channel.rejected + harness.handled
    harness.feed(path.read_bytes())
    assert harness.channel.rejected + harness.handled == before + 1
