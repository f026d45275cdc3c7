"""What a bulk upload will write, worked out from ``column_mapping`` and the ``.npy`` headers,
and the checks that refuse bad input before anything is written."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from matengine.errors import InvalidInput
from matengine.schemas import AnnotationSchema, Kind
from matengine.sources import check_file_name
from matengine.workflows.npy_source import NpyFolder

SCAN_ROWS = 1_000_000  # rows per read while validating whole files


@dataclass(frozen=True)
class Target:
    """One logical column fed by ``file`` (column ``index`` of a 2-D file, or the whole file)."""

    column: str  # logical name: id, size, pre_pt_position, pre_pt_root_id …
    file: str
    index: int | None
    sql_type: str  # bigint / double precision / boolean / text / position
    table: str  # "live" or "segmentation"


def _logical_columns(schema: AnnotationSchema) -> dict[str, tuple[str, str, Kind | None]]:
    """logical name -> (sql type, which table, field kind)."""
    out: dict[str, tuple[str, str, Kind | None]] = {"id": ("bigint", "live", None)}
    for f in schema.fields:
        if f.is_point:
            out[f"{f.name}_position"] = ("position", "live", f.kind)
        else:
            sql = {
                Kind.FLOAT: "double precision",
                Kind.INT: "bigint",
                Kind.REFERENCE: "bigint",
                Kind.STRING: "text",
                Kind.BOOL: "boolean",
            }[f.kind]
            out[f.name] = (sql, "live", f.kind)
    for c in schema.segmentation_columns():
        out[c.name] = ("bigint", "segmentation", None)
    return out


_DTYPE_KINDS = {
    "bigint": "iu",
    "double precision": "iuf",
    "position": "iuf",
    "boolean": "b",
    "text": "US",
}


def resolve_targets(
    schema: AnnotationSchema, mapping: dict[str, Any], folder: NpyFolder
) -> tuple[list[Target], int]:
    """Check the mapping against the schema and the file headers; return targets and row count."""
    if not isinstance(mapping, dict) or not mapping:
        raise InvalidInput("column_mapping must be a non-empty object {file: column(s)}")
    logical = _logical_columns(schema)
    # a point class's own table (derived_spatial_point) also takes the field's names of its
    # values (position, dependent_chunk, …) for ours (pt_position, pt_dependent_chunk, …)
    aliases = schema.top_level_names()
    targets: list[Target] = []
    lengths: dict[str, int] = {}
    for file, cols in mapping.items():
        check_file_name(file)
        names = [
            aliases.get(c, c) if isinstance(c, str) else c
            for c in (cols if isinstance(cols, list) else [cols])
        ]
        for c in names:
            if c not in logical:
                raise InvalidInput(
                    f"column_mapping maps {file!r} to unknown column {c!r} of schema "
                    f"{schema.name!r} (known: {', '.join(sorted(logical))})",
                    field=c,
                )
        header = folder.header(file)
        lengths[file] = header.rows
        shape = header.shape
        for j, c in enumerate(names):
            sql_type, table, _ = logical[c]
            if isinstance(cols, list):
                if sql_type == "position":
                    raise InvalidInput(
                        f"{file}.npy: a position cannot be part of a list mapping; "
                        "give it its own (N, 3) file",
                        field=c,
                    )
                want, ok = f"(N, {len(names)})", len(shape) == 2 and shape[1] == len(names)
            elif sql_type == "position":
                want, ok = "(N, 3)", len(shape) == 2 and shape[1] == 3
            else:
                want, ok = "(N,)", len(shape) == 1 or (len(shape) == 2 and shape[1] == 1)
            if not ok:
                raise InvalidInput(
                    f"{file}.npy has shape {shape}; mapping it to {names} needs {want}", field=c
                )
            if header.dtype.kind not in _DTYPE_KINDS[sql_type]:
                raise InvalidInput(
                    f"{file}.npy has dtype {header.dtype}, which cannot hold {c!r} ({sql_type})", field=c
                )
            index = j if isinstance(cols, list) else None
            targets.append(Target(c, file, index, sql_type, table))
    if len(set(lengths.values())) > 1:
        detail = ", ".join(f"{f}.npy: {n}" for f, n in lengths.items())
        raise InvalidInput(f"files have different lengths ({detail})")
    seen: set[str] = set()
    for t in targets:
        if t.column in seen:
            raise InvalidInput(f"column {t.column!r} is mapped twice", field=t.column)
        seen.add(t.column)
    for f in schema.fields:
        key = f"{f.name}_position" if f.is_point else f.name
        if f.required and key not in seen:
            raise InvalidInput(
                f"required column {key!r} of schema {schema.name!r} is not in column_mapping", field=key
            )
    return targets, next(iter(lengths.values()))


def scan_files(folder: NpyFolder, targets: list[Target], rows: int) -> dict[str, Any]:
    """Read every mapped file once in slices: refuse negative, zero or duplicate ids,
    non-finite coordinates and text PostgreSQL cannot store, naming the file and row. Returns
    id range facts for the plan."""
    facts: dict[str, Any] = {}
    id_target = next((t for t in targets if t.column == "id"), None)
    positions = [t for t in targets if t.sql_type == "position"]
    texts = [t for t in targets if t.sql_type == "text"]
    # uint64 files (segmentation ids are) would wrap to negative bigints past 2**63 - 1
    unsigned: dict[str, list[Target]] = {}
    for t in targets:
        if t.sql_type == "bigint" and t.column != "id" and folder.header(t.file).dtype.kind == "u":
            unsigned.setdefault(t.file, []).append(t)
    ids_seen = _IdRange()
    for start in range(0, rows, SCAN_ROWS):
        stop = min(rows, start + SCAN_ROWS)
        for file, mapped in unsigned.items():  # one read per file, whatever it feeds
            block = folder.read_rows(file, start, stop)
            for t in mapped:
                _check_int64(t, _column(block, t.index), start)
        for t in texts:
            _check_text(t, _column(folder.read_rows(t.file, start, stop), t.index), start)
        for t in positions:
            block = folder.read_rows(t.file, start, stop)
            bad = ~np.isfinite(block.astype(np.float64, copy=False)).all(axis=1)
            if bad.any():
                row = start + int(np.argmax(bad))
                raise InvalidInput(
                    f"{t.file}.npy row {row}: coordinate is NaN or infinite ({block[row - start].tolist()})",
                    row=row,
                    field=t.column,
                )
        if id_target is not None:
            ids = _column(folder.read_rows(id_target.file, start, stop), id_target.index)
            bad = ids <= 0 if ids.dtype.kind == "i" else ids == 0
            if bad.any():
                row = start + int(np.argmax(bad))
                raise InvalidInput(
                    f"{id_target.file}.npy row {row}: id {ids[row - start]} is not positive",
                    row=row,
                    field="id",
                )
            if ids.dtype.kind == "u":  # would wrap to a negative bigint
                big = ids > np.iinfo(np.int64).max
                if big.any():
                    row = start + int(np.argmax(big))
                    raise InvalidInput(
                        f"{id_target.file}.npy row {row}: id {ids[row - start]} "
                        f"is larger than the largest id ({np.iinfo(np.int64).max})",
                        row=row,
                        field="id",
                    )
            ids_seen.add(ids.astype(np.int64))
    if id_target is not None and ids_seen.min_id is not None:
        if not ids_seen.ascending:  # only then can an id repeat: look at them all, once
            found = _first_duplicate(folder, id_target, rows)
            if found is not None:
                row, value = found
                raise InvalidInput(
                    f"{id_target.file}.npy row {row}: duplicate id {value}", row=row, field="id"
                )
        facts.update(min_id=ids_seen.min_id, max_id=ids_seen.max_id)
    return facts


class _IdRange:
    """The ids of a scan, one slice at a time, in constant memory: their range, and whether
    they are strictly ascending (as most exports are; then none repeats and the duplicate
    check needs no second look). Keeping every id instead cost 8 bytes a row, four times over
    while sorting: the upload's peak memory grew with the table (docs/operations.md §11)."""

    def __init__(self) -> None:
        self.min_id: int | None = None
        self.max_id: int | None = None
        self.ascending = True
        self._last: int | None = None

    def add(self, ids: np.ndarray) -> None:
        if not ids.size:
            return
        lo, hi = int(ids.min()), int(ids.max())
        self.min_id = lo if self.min_id is None else min(self.min_id, lo)
        self.max_id = hi if self.max_id is None else max(self.max_id, hi)
        if self.ascending and (
            (self._last is not None and int(ids[0]) <= self._last) or bool((ids[1:] <= ids[:-1]).any())
        ):
            self.ascending = False
        self._last = int(ids[-1])


def _first_duplicate(folder: NpyFolder, id_target: Target, rows: int) -> tuple[int, int] | None:
    """(row, id) of the second occurrence of the smallest repeated id, or None: the ids sorted
    in place (8 bytes a row, only for ids that are not ascending), then one more slice pass
    to find where the repeat is."""

    def slices() -> Any:
        for start in range(0, rows, SCAN_ROWS):
            block = folder.read_rows(id_target.file, start, min(rows, start + SCAN_ROWS))
            yield start, _column(block, id_target.index).astype(np.int64)

    ids = np.empty(rows, np.int64)
    for start, got in slices():
        ids[start : start + len(got)] = got
    ids.sort()
    repeats = np.flatnonzero(ids[1:] == ids[:-1])
    if not repeats.size:
        return None
    value = int(ids[repeats[0]])
    del ids
    seen = 0
    for start, got in slices():
        at = np.flatnonzero(got == value)
        if seen + at.size >= 2:
            return start + int(at[1 - seen]), value
        seen += at.size
    raise AssertionError("a repeated id was sorted but not found again")


def _check_int64(t: Target, values: np.ndarray, start: int) -> None:
    big = values > np.iinfo(np.int64).max
    if big.any():
        row = start + int(np.argmax(big))
        raise InvalidInput(
            f"{t.file}.npy row {row}: {t.column} {values[row - start]} is larger than "
            f"a 64-bit signed integer can hold ({np.iinfo(np.int64).max})",
            row=row,
            field=t.column,
        )


def _check_text(t: Target, values: np.ndarray, start: int) -> None:
    """What a text column refuses, found before the first write: NUL characters, and bytes
    (``S`` dtype) that are not UTF-8 or strings UTF-8 cannot encode (lone surrogates)."""
    raw = values.dtype.kind == "S"
    # numpy pads strings with NULs and str.find ignores them: look at the code units instead;
    # a NUL with a non-NUL after it in the same string is a real one
    unit = np.dtype(np.uint8 if raw else np.uint32)
    codes = np.ascontiguousarray(values).view(unit)
    filled = codes.reshape(len(values), values.dtype.itemsize // unit.itemsize) != 0
    later = np.logical_or.accumulate(filled[:, ::-1], axis=1)[:, ::-1]
    bad = (~filled[:, :-1] & later[:, 1:]).any(axis=1)
    if bad.any():
        row = start + int(np.argmax(bad))
        raise InvalidInput(
            f"{t.file}.npy row {row}: text for {t.column!r} contains a NUL "
            "character, which PostgreSQL text cannot hold",
            row=row,
            field=t.column,
        )
    try:
        np.char.decode(values, "utf-8") if raw else np.char.encode(values, "utf-8")
    except UnicodeError:
        for i, v in enumerate(values.tolist()):
            try:
                v.decode("utf-8") if raw else v.encode("utf-8")
            except (UnicodeDecodeError, UnicodeEncodeError) as exc:
                row = start + i
                raise InvalidInput(
                    f"{t.file}.npy row {row}: text for {t.column!r} is not valid UTF-8 ({exc.reason})",
                    row=row,
                    field=t.column,
                ) from None


def text_values(values: np.ndarray) -> np.ndarray:
    """Strings to COPY: ``S`` (bytes) columns are UTF-8 text, decoded (checked by the scan)."""
    return np.char.decode(values, "utf-8") if values.dtype.kind == "S" else values


def _column(block: np.ndarray, index: int | None) -> np.ndarray:
    if index is not None:
        return block[:, index]
    return block.reshape(len(block), -1)[:, 0] if block.ndim == 2 else block
