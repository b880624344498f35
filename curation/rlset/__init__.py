"""Stage ``curate rl-set``: problems (+ scores) -> GRPO sets ``rl.parquet``, ``rl_text.parquet``,
``rl_multimodal.parquet`` (TRL's conversational ``prompt`` + ``images`` + answer + VPS columns).

May import: ``curation.core``, ``curation.verify``.
"""

from curation.rlset.build import (
    BALANCE,
    MODALITIES,
    Bound,
    RlSetResult,
    balance_groups,
    band_text,
    build_rl_set,
    difficulty_bin,
    load_scores,
    parse_bound,
)

__all__ = ["BALANCE", "MODALITIES", "Bound", "RlSetResult", "balance_groups", "band_text", "build_rl_set",
           "difficulty_bin", "load_scores", "parse_bound"]
