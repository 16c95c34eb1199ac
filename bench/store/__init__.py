"""Parquet store and its DuckDB views."""

from bench.store.layout import Store

__all__ = ["Store"]
