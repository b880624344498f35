"""Stage ``curate ingest``: raw files (GSM8K, MATH, MATH-Vision, generic JSONL/Parquet/``save_to_disk``
with a ``--map``) -> a ``problems`` table + ``excluded.parquet`` + ``stats.json``.

Reads raw files; writes Parquet through ``curation.core``.  May import: ``curation.core``, ``curation.verify``.
"""

from curation.ingest.sources import FORMATS, MappingError, RowProblem, ingest, write_ingest

__all__ = ["FORMATS", "MappingError", "RowProblem", "ingest", "write_ingest"]
