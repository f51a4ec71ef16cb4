"""agent/virt/imagefile.py: chunks written at their offsets, past the page cache where the filesystem allows."""

from __future__ import annotations

import os
import random
import subprocess
from pathlib import Path

import pytest

from saltmarsh.agent.virt.imagefile import ALIGNMENT, ImageFile, ReserveFailed

pytestmark = pytest.mark.timeout(60)

CHUNK = 64 * 1024


def _chunks(size: int) -> list[bytes]:
    data = random.Random(size).randbytes(size)
    return [data[offset:offset + CHUNK] for offset in range(0, size, CHUNK)]


@pytest.mark.parametrize("size", [CHUNK * 5, CHUNK * 5 + 1, CHUNK * 5 + ALIGNMENT + 17, 100])
def test_chunks_out_of_order_give_the_exact_file(tmp_path: Path, size: int) -> None:
    chunks = _chunks(size)
    path = tmp_path / "image"
    with ImageFile(path, size, CHUNK) as file:
        order = list(range(len(chunks)))
        random.Random(1).shuffle(order)
        for index in order:
            file.write(index, chunks[index])
        file.finish(0o644)
        direct = file.direct
    assert path.read_bytes() == b"".join(chunks)
    assert path.stat().st_mode & 0o777 == 0o644
    # /tmp here is ext4, which takes O_DIRECT: the fast path is the one tested.
    assert direct, "the test directory's filesystem refused O_DIRECT"


def test_a_chunk_size_that_is_not_block_aligned_writes_through_the_page_cache(tmp_path: Path) -> None:
    step = ALIGNMENT + 3
    data = os.urandom(step * 3 - 5)
    path = tmp_path / "image"
    with ImageFile(path, len(data), step) as file:
        assert not file.direct
        for index in range(3):
            file.write(index, data[index * step:(index + 1) * step])
        file.finish(0o600)
    assert path.read_bytes() == data


def test_a_file_larger_than_the_disk_is_refused_before_any_write(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    small = tmp_path / "small"
    small.mkdir()

    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(small)], check=True)
    try:
        with pytest.raises(ReserveFailed), ImageFile(small / "image", 4 << 20, CHUNK):
            pass
        # The caller removes the partial file; the descriptor is closed, so the tmpfs unmounts cleanly.
        (small / "image").unlink()
    finally:
        subprocess.run(["umount", str(small)], check=True)
