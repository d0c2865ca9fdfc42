"""Give hydrodiag's background threads their names at the operating-system level.

Python 3.11 names threads for Python only; `top -H`, `ps -L`, `/proc/<pid>/task/*/comm` and the
benchmark's CPU-per-thread table would show every thread as the process. Each long-lived thread
calls `name_os_thread()` first thing, so an operator sees which one burns the CPU (the forward
pass, the history writer) without attaching a profiler.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
import threading

PR_SET_NAME = 15  # linux/prctl.h
OS_NAME_LIMIT = 15  # the kernel keeps 15 bytes (16 with the terminating NUL)
_PREFIX = "hydrodiag-"


def os_thread_name(python_name: str) -> str:
    """The kernel-sized name: without the `hydrodiag-` prefix every such thread shares, truncated."""
    return python_name.removeprefix(_PREFIX)[:OS_NAME_LIMIT]


def name_os_thread() -> None:
    """Best effort: Linux only, never raises."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        name = os_thread_name(threading.current_thread().name).encode("ascii", "replace")
        libc.prctl(PR_SET_NAME, ctypes.c_char_p(name), 0, 0, 0)
    except (OSError, AttributeError):
        pass
