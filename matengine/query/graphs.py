"""The process-wide segmentation cache, as the query side names it (one cache for queries and
workflows: :mod:`matengine.segmentation.cache`)."""

from __future__ import annotations

from matengine.segmentation.cache import clear, root_graph, segmentation

__all__ = ["clear", "root_graph", "segmentation"]
