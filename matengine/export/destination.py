"""Where an export may write, and the filesystem that writes there.

A destination is ``file:///absolute/path``, ``gs://bucket/prefix`` or ``s3://bucket/prefix``,
opened through fsspec (gcsfs / s3fs take credentials and endpoints from the environment the
way their clients do: ``STORAGE_EMULATOR_HOST``, ``AWS_ENDPOINT_URL``, …).

Every destination passes :func:`_check_destination` before anything is written: the export's
own rules (absolute folders and buckets only, no ``..``), then the server-wide root check of
:func:`matengine.sources.check_source_url` (``MATENGINE_SOURCE_ROOTS``), which bulk upload
uses for what it reads.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from matengine.errors import InvalidInput
from matengine.sources import check_source_url

SCHEMES = ("file", "gs", "s3")
MAX_URL = 1024
MARKER = ".matengine-export"  # written first: says the folder is ours to overwrite


def _check_destination(url: str) -> str:
    """Refuse anything but an absolute file://, gs:// or s3:// URL without ``..`` segments.

    The message names the rule, never echoes the URL (it came from the caller)."""
    if not isinstance(url, str) or not url or len(url) > MAX_URL:
        raise InvalidInput(f"destination must be a URL of at most {MAX_URL} characters", field="to")
    if any(ord(ch) < 32 for ch in url):
        raise InvalidInput("destination contains control characters", field="to")
    parts = urlsplit(url)
    if parts.scheme not in SCHEMES:
        raise InvalidInput("destination must start with file://, gs:// or s3://", field="to")
    if parts.query or parts.fragment:
        raise InvalidInput("destination must not have a query or fragment", field="to")
    path = parts.path
    if ".." in path.split("/") or "\\" in url:
        raise InvalidInput("destination must not contain '..' segments or backslashes", field="to")
    if parts.scheme == "file":
        if parts.netloc or not path.startswith("/") or path.rstrip("/") == "":
            raise InvalidInput("file:// destinations must be an absolute folder, not /", field="to")
    elif not parts.netloc or "@" in parts.netloc or ":" in parts.netloc:
        raise InvalidInput("bucket destinations must be <scheme>://bucket/prefix", field="to")
    # and only under the roots the operator configured, as for every URL the server touches
    check_source_url(url)
    return url


@dataclass(frozen=True)
class Destination:
    """A checked destination: its URL and the fsspec filesystem + root path for it."""

    url: str

    @classmethod
    def parse(cls, url: str) -> Destination:
        return cls(_check_destination(url.rstrip("/")))

    @property
    def scheme(self) -> str:
        return urlsplit(self.url).scheme

    @property
    def root(self) -> str:
        """The path fsspec knows the destination by (``bucket/prefix`` for buckets)."""
        parts = urlsplit(self.url)
        return parts.path if self.scheme == "file" else f"{parts.netloc}{parts.path}"

    def filesystem(self) -> Any:
        import fsspec

        if self.scheme == "file":
            return fsspec.filesystem("file", auto_mkdir=True)
        return fsspec.filesystem(self.scheme)

    def path(self, *parts: str) -> str:
        return posixpath.join(self.root, *parts)

    def url_of(self, *parts: str) -> str:
        return posixpath.join(self.url, *parts)
