"""Freed memory kept in the process for the next array, instead of handed back to the system at once.

The face path makes and drops many large float arrays: a run's crops, its colour planes, its restored
crops, each filter's temporaries. glibc gives a large freed block back to the system (unmapped, or the
heap trimmed) and maps fresh pages for the next one, and numpy asks for transparent huge pages on arrays
of 4 MiB or more, so the kernel clears fresh pages for nearly every such array: on hamilton.mp4 the
kernel had 14-15% of the restore's CPU, clearing pages 6.5% (perf). Here blocks up to 32 MiB (glibc's
largest threshold) come from the heap, the heap keeps up to 1 GiB free, and numpy's arrays are on
ordinary pages: the restore's system time 8.5-10.2 s -> 5.8-6.5 s, the same output to the bit
(benchmarks/README.md, issue 16). Neither half does it alone: without huge-page advice a trimmed block
faults once for each 4 KiB page, and the allocator alone did not lower the system time. A whole run's
array of the largest crops is bigger than 32 MiB and is still mapped freshly.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

import numpy as np

MMAP_THRESHOLD = 32 << 20  # bytes: glibc's largest (HEAP_MAX / 2 on 64-bit); blocks above it are mapped freshly
TRIM_THRESHOLD = 1 << 30  # bytes of free heap top kept before any is given back
TOP_PAD = 64 << 20  # bytes the heap grows by at a time
# mallopt's parameter numbers (malloc.h)
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3


@functools.cache  # once a process: every Ray task calls it, and find_library runs ldconfig
def keep_freed_memory() -> bool:
    """Set this process's allocator as above. Returns whether the allocator took it (glibc); elsewhere,
    or where numpy lacks its switch, that part stays as it was."""
    # numpy's own switch (as NUMPY_MADVISE_HUGEPAGE=0 at its import), private: numpy 2 keeps it here
    set_advice = getattr(np._core.multiarray, "_set_madvise_hugepage", None)
    if set_advice is not None:
        set_advice(False)
    name = ctypes.util.find_library("c")
    mallopt = getattr(ctypes.CDLL(name), "mallopt", None) if name else None
    if mallopt is None:
        return False
    return all(mallopt(option, value) == 1 for option, value in
               ((_M_MMAP_THRESHOLD, MMAP_THRESHOLD), (_M_TRIM_THRESHOLD, TRIM_THRESHOLD), (_M_TOP_PAD, TOP_PAD)))
