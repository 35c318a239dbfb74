"""Face restorers: one protocol (base.Restorer), backends picked by name (registry)."""

from .base import Restorer, TrackRefs
from .registry import describe_models, download_model, get_restorer

__all__ = ["Restorer", "TrackRefs", "describe_models", "download_model", "get_restorer"]
