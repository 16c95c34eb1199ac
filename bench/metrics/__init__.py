"""Metric table (single source of truth) and the pyiqa factory."""

from bench.metrics.table import MetricSpec, get, load_table, select

__all__ = ["MetricSpec", "get", "load_table", "select"]
