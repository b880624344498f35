"""``curate report``: one Markdown report (+ PNGs) over a whole run folder, every number read from the
tables the run produced (rows per step, pass-rate / VPS histograms, VAS vs uniform, training curves).

Reads every stage's outputs; writes ``report/``.  May import: ``curation.core``, ``curation.score``.
"""

from curation.report.run import expected_zero_variance, vas_vs_uniform, write_run_report

__all__ = ["expected_zero_variance", "vas_vs_uniform", "write_run_report"]

# The names of the old ``curation.report`` module (now ``curation.core.plots`` and ``curation.score.report``).
from curation.core.plots import histogram_png, markdown_table  # noqa: E402
from curation.score.report import score_summary, write_score_report  # noqa: E402

__all__ += ["histogram_png", "markdown_table", "score_summary", "write_score_report"]
