"""Supervoxel and root ids for annotations the moment they are posted.

The field's annotation service posts rows, then asks the materialization service to look up
their supervoxels (``lookup_svid``); its live queries answer them once that task ran. Here the
annotation route looks the ids up itself, in the request, right after the rows commit: a
batch of caveclient's (at most 10,000 rows) costs one supervoxel lookup (every point column
at once) and one root lookup, so ``live_live_query`` right after ``post_annotation`` has their
roots.

The lookup itself is :func:`matengine.workflows.sync_steps.ingest_rows_by_id`, the one
"ingest just these rows" of the code: roots at the table's ``roots_last_updated`` L (or at
the time a running update-roots moves it to) read under ``FOR KEY SHARE`` on the table's
catalog row, so update-roots cannot move L under it; a table without L yet gets the time of
the datastack's latest version (else now), so versions still go forward from it. This module
is the routes' side of it: a larger batch starts an ingest run instead, and a segmentation
that cannot be reached never fails the post: the rows wait for ingest, as before.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from sqlalchemy import Engine

from matengine.segmentation.errors import SegmentationError
from matengine.workflows.sync_steps import ingest_rows_by_id

log = logging.getLogger("matengine.lookup")

# above this many rows a request triggers an ingest run instead (caveclient posts at most 10k)
MAX_IN_REQUEST = 10_000


def lookup_after_post(engine: Engine, datastack: str, table_name: str, ids: Sequence[int]) -> int:
    """The annotation routes' hook: ids in the request for a batch up to
    :data:`MAX_IN_REQUEST`, an ingest run of the table for a larger one. Never fails the
    post: when the segmentation fails us the rows wait for the next ingest."""
    if len(ids) > MAX_IN_REQUEST:
        trigger_ingest(engine, datastack, table_name)
        return 0
    try:
        return ingest_rows_by_id(engine, datastack, table_name, ids)
    except SegmentationError as exc:
        log.warning("lookup of %d rows of %s.%s left to ingest: %s", len(ids), datastack, table_name, exc)
    except Exception:  # the rows are committed; a failed lookup must not turn the post into an error
        log.exception("lookup of %d rows of %s.%s left to ingest", len(ids), datastack, table_name)
    return 0


def trigger_ingest(engine: Engine, datastack: str, table_name: str) -> int | None:
    """Start an ingest run of one table; None if one is already running (it takes the rows)."""
    from matengine.errors import Conflict
    from matengine.workflows.submit import submit, sync_parameters

    params = sync_parameters(engine, "ingest", datastack, table=table_name)
    try:
        return submit(engine, "ingest", params, datastack=datastack, table=table_name)
    except Conflict:
        return None
