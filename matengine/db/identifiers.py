"""SQL identifiers: validated against a strict pattern, then quoted. Values are never formatted
into SQL; they go as bound parameters."""

from __future__ import annotations

import re

from matengine.errors import InvalidName

# fullmatch, never match + "$": "$" also matches before a trailing newline
_NAME = re.compile(r"[a-z][a-z0-9_]*")
# column names of the field's schemas keep their case (``gOSI`` of ``func_properties_bcm``);
# quoting preserves it, and the pattern still admits no quote or other special character
_QUOTABLE = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
# PostgreSQL truncates identifiers at 63 bytes; a silent truncation would alias two names.
MAX_IDENTIFIER = 63
RESERVED_SCHEMAS = {"public", "matengine", "information_schema"}


def validate_name(name: str, what: str = "name") -> str:
    """Return ``name`` if it is a safe lowercase identifier, else raise :class:`InvalidName`."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise InvalidName(
            f"invalid {what} {name!r}: use lowercase letters, digits and _, starting with a letter"
        )
    if len(name) > MAX_IDENTIFIER:
        raise InvalidName(f"invalid {what} {name!r}: longer than {MAX_IDENTIFIER} characters")
    return name


def quote(*parts: str) -> str:
    """``"schema"."table"`` from validated parts (quoted, so reserved words are fine too)."""
    out = []
    for part in parts:
        if not _QUOTABLE.fullmatch(part) or len(part) > MAX_IDENTIFIER:
            raise InvalidName(f"refusing to quote unvalidated identifier {part!r}")
        out.append('"' + part + '"')
    return ".".join(out)


def validate_datastack_name(name: str) -> str:
    validate_name(name, "datastack name")
    if name in RESERVED_SCHEMAS or name.startswith("pg_") or "__" in name:
        raise InvalidName(f"invalid datastack name {name!r}: reserved, or contains '__'")
    return name


def version_schema(datastack: str, version: int) -> str:
    """The PostgreSQL schema of a version; same name the field gives a frozen database."""
    return validate_name(f"{datastack}__mat{int(version)}", "version schema")
