"""The segmentation errors, now part of the one error tree in :mod:`matengine.errors`
(docs/design.md §11); kept importable from here."""

from __future__ import annotations

from matengine.errors import (
    GrapheneRefused,
    GrapheneRequestError,
    GrapheneUnavailable,
    GraphFormatError,
    SegmentationError,
    SegmentationSourceError,
)

__all__ = [
    "GrapheneRefused",
    "GrapheneRequestError",
    "GrapheneUnavailable",
    "GraphFormatError",
    "SegmentationError",
    "SegmentationSourceError",
]
