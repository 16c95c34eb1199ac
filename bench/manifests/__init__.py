"""Pair manifests: importers for each dataset layout, one canonical Parquet schema."""

from bench.manifests.schema import read, write

__all__ = ["read", "write"]
