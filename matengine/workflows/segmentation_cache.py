"""The process-wide segmentation cache, as workflow steps name it (one cache for queries and
workflows: :mod:`matengine.segmentation.cache`)."""

from __future__ import annotations

from matengine.segmentation.cache import segmentation as cached_segmentation

__all__ = ["cached_segmentation"]
