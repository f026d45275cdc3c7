"""Query engine: version tables and live tables at any timestamp, read in bounded batches.

Entry points: :func:`version_query`, :func:`live_query` (both return a
:class:`QueryResult`), and the writers in :mod:`matengine.query.output`.
"""

from matengine.query.engine import MissingLookups, QueryResult, live_query, version_query

__all__ = ["MissingLookups", "QueryResult", "live_query", "version_query"]
