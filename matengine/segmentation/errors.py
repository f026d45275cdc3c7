"""Exceptions raised by segmentation sources.

They all derive from :class:`SegmentationError` so callers (workflows, API) can catch one
type and report a clean message instead of a traceback from CloudVolume or httpx.
"""

from __future__ import annotations


class SegmentationError(Exception):
    """Base class of every error raised by ``matengine.segmentation``."""


class SegmentationSourceError(SegmentationError):
    """The segmentation URL is malformed, unsupported, or its data cannot be opened."""


class GraphFormatError(SegmentationSourceError):
    """A ``local://`` edit-log graph directory is missing a file or is inconsistent."""


class GrapheneRequestError(SegmentationError):
    """A PyChunkedGraph server answered with an error (after retries) or was unreachable."""

    def __init__(self, message: str, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code
