"""Stage ``curate build``: ``problems`` tables -> cleaned ``problems`` + ``excluded`` + ``stats.json``.

``pipeline`` runs a recipe's steps (one module per step in ``steps/``: normalize, sanity, verifiable,
exact_dedup, near_dup, decontaminate) and checks kept + excluded = input after each; ``minhash`` is the
MinHash-LSH index behind near-duplicate detection and decontamination.
May import: ``curation.core``, ``curation.verify``.
"""

from curation.build.pipeline import build, run_pipeline

__all__ = ["build", "run_pipeline"]
