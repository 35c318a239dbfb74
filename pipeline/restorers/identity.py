"""The `identity` restorer: gives the crops back unchanged (baseline for overhead benchmarks and tests)."""

from __future__ import annotations

import torch

from .base import TrackRefs, check_crops


class IdentityRestorer:
    name = "identity"
    temporal_radius = 0
    crop_size = None  # any size: it changes nothing
    keeps_colour = True

    def __init__(self, restore_cfg=None):
        self.cfg = restore_cfg

    def restore(self, crops: torch.Tensor, refs: list[TrackRefs] | None = None, scale: float = 1.0) -> torch.Tensor:
        check_crops(crops, self.crop_size)
        return crops
