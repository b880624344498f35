"""Stage ``curate score``: a policy's N rollouts per prompt -> ``rollouts.parquet`` + ``scores.parquet``
(pass rate, OVS, TDS, VPS) + ``report/``.

- ``scores``: the MMR1 formulas (pass rate, OVS, TDS variants, VPS) where they are computed
- ``vas``: the VAS sampling probabilities and the expected zero-variance fraction of a batch
- ``job``: the resumable scoring job, pre-generated rollouts, merge and filter
- ``report``: the score report (histograms, summary)

May import: ``curation.core``, ``curation.verify``, ``curation.engines``, ``curation.generation``.
``training`` imports ``scores`` and ``vas`` from here (never the reverse).
"""
