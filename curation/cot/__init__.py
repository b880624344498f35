"""Stage ``curate cot``: a teacher's long chain-of-thought solutions -> the cold-start ``sft.parquet`` (TRL
conversational format) + ``excluded.parquet``.

- ``generate``: K samples per problem through ``curation.generation``, rejection sampling by the verifier,
  selection (shortest / longest / diverse), the SFT rows
- ``quality``: the quality filters (structure, truncation, repetition, length, language mixing, answer leak)

May import: ``curation.core``, ``curation.verify``, ``curation.engines``, ``curation.generation``,
``curation.score`` (edit distance for diverse selection).
"""

from curation.cot.generate import (
    KEEP_MODES,
    VERDICT_REASONS,
    CotResult,
    edit_distance_matrix,
    farthest_point_selection,
    judge_sample,
    parse_keep,
    read_responses,
    run_cot,
    select_solutions,
    sft_row,
)
from curation.cot.quality import REASONS, QualityConfig, check_solution, to_think_format

__all__ = [
    "KEEP_MODES", "REASONS", "VERDICT_REASONS", "CotResult", "QualityConfig", "check_solution",
    "edit_distance_matrix", "farthest_point_selection", "judge_sample", "parse_keep", "read_responses",
    "run_cot", "select_solutions", "sft_row", "to_think_format",
]
