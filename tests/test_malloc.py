"""MALLOC_KEEP_MB: a buffer freed and allocated again, as every forward pass does with its tensors,
is served from memory the process kept instead of being faulted in from the kernel each time."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

from hydrodiag.malloc import keep_freed_memory

# 30 rounds of six 3 MB buffers written in full, then all freed, as a forward pass frees its tensors:
# the page faults they cost. (3 MB: below numpy's 4 MB threshold for asking for huge pages.)
_PROBE = """
import resource, sys
import numpy as np
from hydrodiag.malloc import keep_freed_memory
print(keep_freed_memory(int(sys.argv[1])), file=sys.stderr)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(30):
    buffers = [np.ones(384 * 1024, dtype=np.float64) for _ in range(6)]
    del buffers
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""
ROUND_PAGES = 6 * 3 * 1024 * 1024 // 4096


def _faults(keep_mb: int) -> int:
    run = subprocess.run([sys.executable, "-c", _PROBE, str(keep_mb)], capture_output=True, text=True, check=True,
                         timeout=60)
    return int(run.stdout.strip())


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="MALLOC_KEEP_MB tunes glibc's allocator only")
def test_kept_memory_is_not_faulted_in_again() -> None:
    default, kept = _faults(0), _faults(128)
    assert default > 10 * ROUND_PAGES, default  # glibc's defaults: the heap is trimmed every round
    assert kept < 3 * ROUND_PAGES, kept  # kept: faulted in once


def test_zero_leaves_the_allocator_alone() -> None:
    assert keep_freed_memory(0) is False
