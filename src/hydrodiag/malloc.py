"""glibc's allocator told to keep freed memory for the next forward pass (`MALLOC_KEEP_MB`).

A forward pass allocates and frees the same few large tensors every time. With glibc's defaults,
blocks over its dynamic mmap threshold are mapped and unmapped per allocation, and freed memory at
the top of the heap beyond the trim threshold is handed back to the kernel, so the next pass
faults every page in again: at batch 32 that was ~5x the page faults and 1.4-1.8x the forward time
(`python -m bench.model_bench --batch-sizes 1,8,16,32`, README's MALLOC_KEEP_MB row). Both knobs
are set together: setting one through mallopt turns glibc's dynamic adjustment of the other off.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

logger = logging.getLogger(__name__)

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# The largest mmap threshold glibc accepts on 64-bit (half its heap size); larger blocks are mapped.
MAX_MMAP_THRESHOLD = 32 * 1024 * 1024


def keep_freed_memory(keep_mb: int) -> bool:
    """Serve blocks up to 32 MB from the heap and return its free top to the kernel only beyond
    `keep_mb`. True when applied; False for 0 (glibc's defaults) or where the C library is not glibc."""
    if keep_mb <= 0:
        return False
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        logger.info("MALLOC_KEEP_MB ignored: the C library has no mallopt (not glibc)")
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    applied = bool(mallopt(_M_MMAP_THRESHOLD, MAX_MMAP_THRESHOLD)) and bool(
        mallopt(_M_TRIM_THRESHOLD, keep_mb * 1024 * 1024))
    if not applied:
        logger.warning("MALLOC_KEEP_MB=%d: mallopt refused it; glibc's defaults stay", keep_mb)
    return applied
