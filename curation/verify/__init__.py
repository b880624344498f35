"""Answer checking that never hangs: ``curate verify``, the accuracy reward and every stage that grades.

- ``extract``: final-answer extraction from a response (rules in order; regex only, linear time)
- ``rules``: which gold answers can be checked, and the cheap comparisons that settle most items
- ``pool``: math-verify in worker processes with a hard per-item deadline (``Verifier``, ``verify_batch``)

Reads and writes nothing.  May import: ``curation.core``.
"""

from curation.verify.extract import (
    DEFAULT_RULES,
    LENIENT_RULES,
    RULES,
    Extraction,
    choice_labels,
    extract_answer,
    final_boxes,
    last_boxed,
    map_choice,
    normalize_answer,
    resolve_rules,
)
from curation.verify.pool import STATUSES, Verdict, Verifier, get_verifier, verify_batch
from curation.verify.rules import ParsedGold, classify_gold, gold_kind, parse_gold

__all__ = [
    "DEFAULT_RULES", "LENIENT_RULES", "RULES", "STATUSES", "Extraction", "ParsedGold", "Verdict", "Verifier",
    "choice_labels", "classify_gold", "extract_answer", "final_boxes", "get_verifier", "gold_kind", "last_boxed",
    "map_choice", "normalize_answer", "parse_gold", "resolve_rules", "verify_batch",
]
