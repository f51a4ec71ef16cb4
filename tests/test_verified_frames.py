"""agent/verified.py: a frame remembered as verified is only ever the very same frame, from the same key."""

from __future__ import annotations

import msgspec
import pytest

from saltmarsh.agent.verified import VerifiedFrames
from saltmarsh.pki.keys import Identity
from saltmarsh.protocol.envelope import Outer, parse_outer, seal, verify
from saltmarsh.protocol.errors import BadSignature, MalformedFrame
from saltmarsh.protocol.limits import Limits

MASTER = Identity.generate()


def frame(body: bytes = b"sealed job") -> Outer:
    raw, _nonce = seal(MASTER, "master", "job", body, key_id=b"k" * 16)
    return parse_outer(raw, Limits())


def test_the_same_frame_gives_the_same_header_as_verify() -> None:
    frames = VerifiedFrames()
    outer = frame()
    first = frames.verify(outer, MASTER.public_key)
    assert first == verify(outer, MASTER.public_key)
    assert frames.verify(outer, MASTER.public_key) is first  # remembered, not checked again


@pytest.mark.parametrize("change", ["body", "sender", "signature"])
def test_a_frame_that_differs_from_one_remembered_is_checked_afresh(change: str) -> None:
    frames = VerifiedFrames()
    outer = frame()
    frames.verify(outer, MASTER.public_key)
    if change == "body":
        altered = msgspec.structs.replace(outer, body=b"another body")
        expected: type[Exception] = BadSignature
    elif change == "sender":
        altered = msgspec.structs.replace(outer, sender="impostor")
        expected = MalformedFrame
    else:
        altered = msgspec.structs.replace(outer, signature=bytes(64))
        expected = BadSignature
    with pytest.raises(expected):
        frames.verify(altered, MASTER.public_key)


def test_a_remembered_frame_is_not_taken_as_verified_for_another_key() -> None:
    frames = VerifiedFrames()
    outer = frame()
    frames.verify(outer, MASTER.public_key)
    with pytest.raises(BadSignature):
        frames.verify(outer, Identity.generate().public_key)


def test_it_remembers_a_bounded_number_of_frames() -> None:
    frames = VerifiedFrames(size=2)
    outers = [frame(f"job {n}".encode()) for n in range(3)]
    headers = [frames.verify(outer, MASTER.public_key) for outer in outers]
    assert frames.verify(outers[2], MASTER.public_key) is headers[2]
    assert frames.verify(outers[0], MASTER.public_key) is not headers[0]  # forgotten: verified again
