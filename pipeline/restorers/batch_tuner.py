"""Pick the largest batch that fits in GPU memory, from two measured passes (memory is linear in batch)."""

from __future__ import annotations

from collections.abc import Callable

import torch

MAX_BATCH = 64  # past this, throughput no longer grows on one GPU and latency does
CPU_BATCH = 4  # on the CPU a bigger batch only costs memory


def batch_from_measurements(peak_1: int, peak_2: int, budget: int, max_batch: int = MAX_BATCH) -> int:
    """Peak bytes at batch 1 and 2 -> the largest batch whose linear estimate fits `budget` bytes.

    Rounded down to a multiple of 8 above 8 (tensor-core friendly shapes, fewer compiled variants).
    """
    per_item = max(peak_2 - peak_1, 1)
    fixed = peak_1 - per_item
    batch = int((budget - fixed) // per_item)
    if batch >= 8:
        batch -= batch % 8
    return max(1, min(batch, max_batch))


def fit_batch_size(run: Callable[[int], None], device: torch.device, headroom: float = 0.85,
                   max_batch: int = MAX_BATCH) -> int:
    """Measure peak memory of `run(1)` and `run(2)` on `device` and fit the batch to its free memory."""
    if device.type != "cuda":
        return CPU_BATCH
    peaks = []
    for batch in (1, 2):
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        run(batch)
        torch.cuda.synchronize(device)
        peaks.append(torch.cuda.max_memory_allocated(device))
    torch.cuda.empty_cache()
    free, _ = torch.cuda.mem_get_info(device)
    # Memory the allocator holds now is reusable by the next batch; the free memory is the rest.
    budget = int((free + torch.cuda.memory_allocated(device)) * headroom)
    return batch_from_measurements(peaks[0], peaks[1], budget, max_batch)
