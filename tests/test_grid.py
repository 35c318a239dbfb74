"""The 1/65535 grid of crops and restorer outputs (restorers.base): its meaning, and the numpy conversions
giving exactly the numbers of the torch arithmetic that the Ray side (restorer_output) uses."""

from __future__ import annotations

import numpy as np
import torch

from pipeline.restorers.base import crops_on_grid, crops_to_tensor, on_grid, restorer_output, tensor_to_crops


def _values() -> np.ndarray:
    """0..255 crop values as (1, H, W, 3): every 8-bit level, half levels, 10-bit levels, the points
    half-way between grid steps, random floats, and some beyond 0..255 (cubic warps overshoot)."""
    between = (np.arange(65535) + 0.5) * (255 / 65535)
    rng = np.random.default_rng(0)
    values = np.concatenate([np.arange(256), np.arange(255) + 0.5, np.arange(1024) * (255 / 1023), between,
                             rng.uniform(0, 255, 200_000), rng.uniform(-3, 258, 20_000), [-0.0, -1e-3, 255 + 1e-3]])
    values = values[:len(values) // 3 * 3].astype(np.float32)
    return values.reshape(1, -1, 1, 3)


def _nearest_step(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The documented meaning, in float64: round(x / 255 * 65535) steps; and where that is clear, i.e.
    not within float32's rounding of a half step (there either neighbour is right)."""
    exact = values.astype(np.float64) / 255 * 65535
    return np.round(exact), np.abs(exact - np.floor(exact) - 0.5) > 0.01


def test_crops_to_tensor_is_the_nearest_grid_value():
    values = _values()
    steps, clear = _nearest_step(values)
    got = crops_to_tensor(values).permute(0, 2, 3, 1).numpy()
    assert got.dtype == np.float32 and np.array_equal(got[clear], (steps / 65535).astype(np.float32)[clear])
    assert np.all(np.abs(np.rint(got.astype(np.float64) * 65535) - steps) <= 1)


def test_crops_on_grid_is_the_nearest_grid_value_clamped():
    values = _values()
    steps, clear = _nearest_step(values)
    got = crops_on_grid(values)
    assert got.dtype == np.float32 and got.min() == 0 and got.max() == 255
    # a grid crop / 255 is its grid value exactly (checked for all 65536 steps in the next test)
    expected = (np.clip(steps, 0, 65535) / 65535).astype(np.float32)
    assert np.array_equal((got / np.float32(255))[clear], expected[clear])
    assert np.all(np.abs(np.rint(got.astype(np.float64) / 255 * 65535) - np.clip(steps, 0, 65535)) <= 1)


def test_every_grid_crop_value_goes_back_to_its_step_exactly():
    steps = np.arange(65536, dtype=np.float32)
    grid = steps / np.float32(65535)
    crops = crops_on_grid(np.float32(255) * grid.reshape(1, -1, 1, 1).repeat(3, -1))
    assert np.array_equal(crops / np.float32(255), np.broadcast_to(grid.reshape(1, -1, 1, 1), crops.shape))
    assert torch.equal(crops_to_tensor(crops), torch.from_numpy(crops).permute(0, 3, 1, 2) / 255)


def test_numpy_conversions_are_bit_identical_to_the_torch_arithmetic():
    values = _values()
    for crops in (values, values.astype(np.float64), np.rint(np.clip(values, 0, 255)).astype(np.uint8)):
        as_torch = on_grid(torch.from_numpy(crops).permute(0, 3, 1, 2).float().div(255.0))
        got = crops_to_tensor(crops)
        assert got.dtype == torch.float32 and torch.equal(got, as_torch)
        kept = restorer_output(as_torch).mul(255.0).permute(0, 2, 3, 1).numpy()
        assert np.array_equal(crops_on_grid(crops), kept)
        if crops.dtype == np.float32:  # in place, as the face path cuts its runs
            own = crops.copy()
            assert crops_on_grid(own, own) is own and np.array_equal(own, kept)
        assert np.array_equal(tensor_to_crops(as_torch), kept)
    # a restorer's raw output: beyond [0, 1], NaN, off the grid, channels first or last in memory
    raw = torch.randn(2, 3, 40, 48, generator=torch.Generator().manual_seed(0)) * 0.7 + 0.5
    raw[0, 0, 0, :3] = torch.tensor([float("nan"), 0.5 / 65535, 1.5 / 65535])
    for batch in (raw, raw.contiguous(memory_format=torch.channels_last), raw.double()):
        crops = tensor_to_crops(batch)
        assert crops.flags.c_contiguous and crops.dtype == np.float32
        assert np.array_equal(crops, restorer_output(batch).mul(255.0).permute(0, 2, 3, 1).numpy(), equal_nan=True)


def test_conversions_leave_the_callers_arrays_alone():
    crops = np.full((1, 4, 4, 3), 100.3, np.float32)
    batch = torch.full((1, 3, 4, 4), 1.5)
    crops_to_tensor(crops), crops_on_grid(crops), tensor_to_crops(batch)
    assert np.all(crops == np.float32(100.3)) and torch.all(batch == 1.5)
