"""Stage ``curate publish``: the tables under a run folder -> a 🤗 Hub dataset repo with named configs and a
generated card (or the same files in a local folder with ``--dry-run``).

Reads every stage's tables and ``stats.json``; writes ``data/<config>/*.parquet``, ``assets/*.png`` and
``README.md``.  May import: ``curation.core``, ``curation.score`` (the score report's histograms).
"""

from curation.publish.stage import (
    CONFIG_FILES,
    Discovery,
    FoundTable,
    NoTokenError,
    PublishError,
    PublishResult,
    StagedFile,
    Staging,
    card_context,
    discover,
    git_blob_sha1,
    publish,
    render_card,
    resolve_token,
    stage,
    validate_card,
)

__all__ = [
    "CONFIG_FILES", "Discovery", "FoundTable", "NoTokenError", "PublishError", "PublishResult", "StagedFile",
    "Staging", "card_context", "discover", "git_blob_sha1", "publish", "render_card", "resolve_token", "stage",
    "validate_card",
]
