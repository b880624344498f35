"""Stage ``curate score``: a policy's N rollouts per prompt -> ``rollouts.parquet`` + ``scores.parquet``
(pass rate, OVS, TDS, VPS) + ``report/``.

- ``scores``: the MMR1 formulas (pass rate, OVS, TDS variants, VPS) where they are computed
- ``posterior``: the Beta posterior of every pass rate (priors: uniform, Jeffreys, empirical Bayes, another
  model's scores), its credible interval and E[p(1-p)]
- ``adaptive``: adaptive scoring's stopping rules and budget (rounds of rollouts until the posterior decides)
- ``vas``: the VAS sampling probabilities and the expected zero-variance fraction of a batch
- ``job``: the resumable scoring job (fixed N or adaptive rounds), pre-generated rollouts and replay, merge and
  filter
- ``report``: the score report (histograms, summary)

May import: ``curation.core``, ``curation.verify``, ``curation.engines``, ``curation.generation``.
``training`` imports ``scores`` and ``vas`` from here (never the reverse).
"""
