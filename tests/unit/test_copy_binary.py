"""Binary COPY: the buffers we send (db/copy.py) and the parser of what PostgreSQL sends back
(query/reader.py), checked byte for byte and against each other."""

from __future__ import annotations

import struct
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from matengine.db.copy import HEADER, TRAILER, binary_copy_buffer, timestamptz_value
from matengine.query.columns import ColKind
from matengine.query.reader import CopyBinaryParser, Fetch

PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)


def test_timestamptz_is_microseconds_since_2000():
    assert timestamptz_value(PG_EPOCH) == 0
    assert timestamptz_value(PG_EPOCH + timedelta(days=1, microseconds=7)) == 86_400_000_007
    assert timestamptz_value(PG_EPOCH - timedelta(microseconds=1)) == -1


def test_a_buffer_is_header_rows_and_trailer():
    buf = binary_copy_buffer([(np.array([1, -2], np.int64), "bigint"), (np.array([True, False]), "boolean")])
    assert buf.startswith(HEADER) and buf.endswith(TRAILER)
    body = buf[len(HEADER) : -len(TRAILER)]
    row1 = struct.pack(">hiqib", 2, 8, 1, 1, 1)
    row2 = struct.pack(">hiqib", 2, 8, -2, 1, 0)
    assert body == row1 + row2


def test_unsigned_ids_are_sent_by_bit_pattern():
    big = np.array([2**63 + 5], np.uint64)
    buf = binary_copy_buffer([(big, "bigint")])
    (value,) = struct.unpack(">q", buf[len(HEADER) + 6 : len(HEADER) + 14])
    assert value == np.int64(-(2**63) + 5)


def test_columns_of_different_lengths_are_refused():
    with pytest.raises(ValueError, match="different lengths"):
        binary_copy_buffer([(np.zeros(2), "double precision"), (np.zeros(3), "double precision")])


def _stream(values: np.ndarray, nulls: np.ndarray, sizes: np.ndarray, when_us: np.ndarray) -> bytes:
    """What ``COPY (SELECT COALESCE(v,0), v IS NULL, size, created) … (FORMAT binary)`` sends."""
    return binary_copy_buffer(
        [(values, "bigint"), (nulls, "boolean"), (sizes, "double precision"), (when_us, "timestamptz")]
    )


FETCHES = [
    Fetch("root", "x", ColKind.INT, nullable=True),
    Fetch("size", "y", ColKind.FLOAT, nullable=False),
    Fetch("created", "z", ColKind.TIME, nullable=False),
]


def _parse_all(data: bytes, piece: int) -> list:
    parser = CopyBinaryParser(FETCHES)
    batches = []
    for i in range(0, len(data), piece):
        parser.feed(data[i : i + piece])
        b = parser.take()
        if b is not None:
            batches.append(b)
    parser.end()
    return batches


@pytest.mark.parametrize("piece", [1, 7, 29, 10_000])
def test_the_parser_reads_what_the_buffer_wrote_however_it_is_cut(piece):
    n = 50
    roots = np.arange(n, dtype=np.int64) * 1_000_003 - 7
    nulls = (np.arange(n) % 5) == 0
    sizes = np.linspace(0.5, 99.5, n)
    created = np.arange(n, dtype=np.int64) * 1_000_000  # µs since 2000
    batches = _parse_all(_stream(roots, nulls, sizes, created), piece)
    got_roots = np.concatenate([b.values["root"] for b in batches])
    got_nulls = np.concatenate([b.nulls.get("root", np.zeros(len(b), bool)) for b in batches])
    assert np.array_equal(got_roots, roots)
    assert np.array_equal(got_nulls, nulls)
    assert np.array_equal(np.concatenate([b.values["size"] for b in batches]), sizes)
    unix_us = created + 946_684_800_000_000  # batches carry µs since the Unix epoch
    assert np.array_equal(np.concatenate([b.values["created"] for b in batches]), unix_us)
    assert all("size" not in b.nulls for b in batches)


def test_a_stream_without_rows_is_empty():
    empty = _stream(*(np.zeros(0, t) for t in (np.int64, bool, np.float64, np.int64)))
    assert _parse_all(empty, 3) == []


def test_a_wrong_header_is_refused():
    parser = CopyBinaryParser(FETCHES)
    parser.feed(b"NOTPGCOPY" + b"\x00" * 30)
    with pytest.raises(RuntimeError, match="unexpected COPY binary header"):
        parser.take()


def test_a_truncated_stream_is_refused():
    data = _stream(np.array([1], np.int64), np.array([False]), np.array([1.0]), np.array([0], np.int64))
    parser = CopyBinaryParser(FETCHES)
    parser.feed(data[:-5])  # the trailer and the end of the only row are missing
    assert parser.take() is None
    with pytest.raises(RuntimeError, match="truncated COPY binary stream"):
        parser.end()
