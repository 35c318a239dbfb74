"""pipeline.memory: large arrays freed are reused by the next ones, with no fresh pages to clear."""

import resource

import numpy as np
import pytest

from pipeline.memory import keep_freed_memory

BLOCK = 16 << 20  # bytes: above glibc's default mmap threshold, under the one set


def _faults_to_fill(count: int) -> int:
    """Page faults while `count` BLOCK arrays are made and written at once, then all freed (as a run's
    arrays are)."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    held = [np.ones(BLOCK // 4, np.float32) for _ in range(count)]
    del held
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


def test_freed_large_arrays_are_reused_without_page_faults():
    if not keep_freed_memory():
        pytest.skip("not glibc: the allocator has no mallopt")
    assert not np._core.multiarray._get_madvise_hugepage()  # ordinary pages for numpy's large arrays
    _faults_to_fill(4)  # the heap grows to hold them once
    # glibc's own settings give the freed 64 MiB back and fault again (~2000 times here, 16384 on
    # ordinary pages)
    assert _faults_to_fill(4) < 64
    assert keep_freed_memory()  # again: the same settings, no error
