"""Where the server may read and write bucket data: the configured source roots.

Bulk upload reads ``.npy`` folders and export writes files at URLs a caller names. Without
a check, a caller could make the server read any folder it can see (``file:///etc``), fetch
internal URLs (``http://127.0.0.1:…``, cloud metadata at ``169.254.169.254``) or escape a
folder with ``..``. :func:`check_source_url` admits a URL only if

* its scheme is one matengine reads (``file``, ``gs``, ``s3``, ``http``, ``https``, or a
  bare local path),
* no path segment is ``..`` (also percent-encoded),
* it lies at or under one of ``MATENGINE_SOURCE_ROOTS`` (comma-separated bucket prefixes and
  local folders; the embedded demo's own folder is always admitted), compared segment by
  segment after local paths are resolved (symlinks included), and
* an http(s) host, or an S3 endpoint's host, does not resolve to a loopback, link-local,
  private or otherwise non-public address, unless that host is named in
  ``MATENGINE_SOURCE_PRIVATE_HOSTS`` (a local bucket emulator, say).

Refusals are :class:`~matengine.errors.InvalidInput` (HTTP 422 over the API) naming the
field ``source`` and never anything read from the store.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from matengine.config import Settings, get_settings
from matengine.errors import InvalidInput

SCHEMES = ("file", "gs", "s3", "http", "https")
# a file named in column_mapping (or written by export) is a plain name inside its folder
_FILE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,199}")


@dataclass(frozen=True)
class Location:
    """A URL reduced to what roots are compared on."""

    scheme: str
    authority: str  # bucket-less endpoint or host:port, lowercased; "" for file, gs, s3
    segments: tuple[str, ...]
    host: str | None = None  # to resolve: the http(s) host or the S3 endpoint's host

    def under(self, root: Location) -> bool:
        return (
            self.scheme == root.scheme
            and self.authority == root.authority
            and self.segments[: len(root.segments)] == root.segments
        )


def _refuse(url: str, why: str) -> InvalidInput:
    return InvalidInput(f"source {url!r} {why}", field="source")


def _segments(path: str, url: str) -> tuple[str, ...]:
    parts = [unquote(p) for p in path.split("/") if p]
    if any(p in ("..", ".") or "/" in p or "\\" in p or "\x00" in p for p in parts):
        raise _refuse(url, "has a '.' or '..' segment (or an encoded '/'); name the folder directly")
    return tuple(parts)


def parse_location(url: str) -> Location:
    """``url`` as a :class:`Location`, or :class:`InvalidInput` for what cannot be a source."""
    if not isinstance(url, str) or not url.strip() or "\x00" in url:
        raise InvalidInput("source must be a folder URL (file://, gs://, s3://, http(s)://)", field="source")
    scheme, sep, rest = url.partition("://")
    if not sep:  # a bare local path, as cloud-files reads it
        scheme, rest = "file", url
    scheme = scheme.lower()
    if scheme not in SCHEMES:
        raise _refuse(url, f"uses protocol {scheme!r}; use file://, gs://, s3:// or http(s)://")
    if scheme == "file":
        _segments(rest, url)  # refuse '..' before resolving would hide it
        real = os.path.realpath(os.path.expanduser(rest))
        return Location("file", "", _segments(real, url))
    if scheme == "s3" and re.match(r"https?://", rest, re.IGNORECASE):
        # cloud-files' S3-compatible endpoint form: s3://http://host:port/bucket/path
        inner = urlsplit(rest)
        endpoint = f"{inner.scheme.lower()}://{inner.netloc.lower()}"
        return Location("s3", endpoint, _segments(inner.path, url), inner.hostname)
    if scheme in ("gs", "s3"):
        segments = _segments(rest, url)
        if not segments:
            raise _refuse(url, "names no bucket or folder")
        return Location(scheme, "", segments)
    parts = urlsplit(url)
    if not parts.hostname:
        raise _refuse(url, "names no host")
    if parts.username or parts.password:
        raise _refuse(url, "carries credentials; configure them on the server instead")
    return Location(scheme, parts.netloc.lower(), _segments(parts.path, url), parts.hostname)


def _split(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def source_roots(settings: Settings) -> list[Location]:
    """The configured roots, plus the embedded demo's folder (so ``matengine demo`` works)."""
    roots = [parse_location(r) for r in _split(settings.source_roots)]
    roots.append(parse_location(str(Path(settings.home) / "demo")))
    return roots


def _public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def _check_host(url: str, host: str, settings: Settings) -> None:
    allowed = {h.lower() for h in _split(settings.source_private_hosts)}
    if host.lower() in allowed:
        return
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError):
        raise _refuse(url, f"names host {host!r}, which does not resolve") from None
    if not infos or not all(_public(str(info[4][0])) for info in infos):
        raise _refuse(
            url,
            f"names host {host!r}, which resolves to a loopback, link-local or private address; "
            "an operator can allow it in MATENGINE_SOURCE_PRIVATE_HOSTS",
        )


def check_source_url(url: str, settings: Settings | None = None) -> None:
    """Raise :class:`InvalidInput` unless ``url`` may be read from (or written to).

    Used by bulk upload before any byte is fetched, and by export before any is written.
    """
    settings = settings or get_settings()
    where = parse_location(url)
    if not any(where.under(root) for root in source_roots(settings)):
        raise _refuse(url, "is outside the configured source roots (MATENGINE_SOURCE_ROOTS)")
    if where.host is not None:
        _check_host(url, where.host, settings)


def check_file_name(name: object, field: str = "column_mapping") -> str:
    """A file name inside a source folder: no separators, no ``..``, not absolute."""
    if not isinstance(name, str) or not _FILE_NAME.fullmatch(name) or ".." in name:
        shown = name[:80] if isinstance(name, str) else name
        raise InvalidInput(
            f"file name {shown!r} must be a plain name in the source folder (letters, digits, "
            "'_', '-', '.'; no '/', no '..')",
            field=field,
        )
    return name
