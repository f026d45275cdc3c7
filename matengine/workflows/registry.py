"""Importing this module registers every workflow kind with the engine."""

from matengine.workflows import bulk_upload, export, live_sync, materialize  # noqa: F401
