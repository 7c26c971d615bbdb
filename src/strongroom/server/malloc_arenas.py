"""Fewer glibc malloc arenas for ``strongroom serve``, a long-running process with many threads.

glibc gives each thread that contends for the heap an arena of its own, up to 8 per core, and keeps what an
arena freed mapped. A copy into an S3 vault runs the writer's and the read-back's pools (16 threads each by
default), so the server's resident set grew to about 400 MiB on the 2-core bench machine, against about 270 MiB
with two arenas (bench/s3_restic.py, docs/performance.md). ``MALLOC_ARENA_MAX`` in the environment still wins:
an operator who set it is not overridden.
"""

from __future__ import annotations

import ctypes
import os

M_ARENA_MAX = -8  # glibc's mallopt parameter (malloc.h)
DEFAULT_ARENAS = 2


def limit_malloc_arenas(count: int = DEFAULT_ARENAS) -> bool:
    """Ask glibc for at most ``count`` arenas from now on; False where that is not possible (not glibc) or the
    environment already chose (``MALLOC_ARENA_MAX``)."""
    if os.environ.get("MALLOC_ARENA_MAX"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_ARENA_MAX, count))
