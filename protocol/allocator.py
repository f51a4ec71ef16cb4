"""Keep glibc from mapping and unmapping every large buffer (image chunks, big frames).

glibc serves an allocation past M_MMAP_THRESHOLD (128 KiB at first) with a fresh mmap
and gives it back with munmap when freed, so each MiB buffer of an image chunk costs
256 page faults and their zeroing: copying 1 MiB into a new bytes took 1.2 ms here,
0.06 ms once buffers of that size come from the heap. glibc raises the threshold by
itself only after it frees such a block, and the heap's top is trimmed past
M_TRIM_THRESHOLD, which undoes it again. Both are set once at daemon start: buffers up
to MMAP_THRESHOLD from the heap, and up to TRIM_THRESHOLD of free heap kept for reuse
(bounded: a busy daemon holds at most that much more than it uses).

On a C library other than glibc (no ``mallopt``), nothing is changed.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

# mallopt's parameter numbers (glibc's malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
# Above the largest frame a daemon builds in one piece (a 1 MiB chunk, sealed and framed, and its copies).
MMAP_THRESHOLD = 8 * 1024 * 1024
TRIM_THRESHOLD = 64 * 1024 * 1024


def keep_large_buffers() -> bool:
    """Tune glibc's malloc for large buffers (see the module docstring); False where it cannot be."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    done = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    if not done:
        log.info("the C library refused the large-buffer malloc settings; image transfers will be slower")
    return done
