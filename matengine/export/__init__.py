"""Versions out to the tools that scale: Parquet / Delta Lake datasets and Neuroglancer
precomputed annotations of a version's tables (see docs/export.md)."""
