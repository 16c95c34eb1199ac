"""iqa-study bench: NR-IQA metric selection on human preference pairs.

Data flow: manifests -> scoring -> store (Parquet) -> agreement / study (DuckDB) -> report.
"""

__version__ = "0.1.0"
