"""``curate publish``: push curated tables to the 🤗 Hub as named dataset configs, with a generated card.

Pipeline (every step returns data; the CLI only prints):

1. **Token first** (:func:`curation.publish.hub.resolve_token`): ``token`` argument, else huggingface_hub's usual resolution
   (``HF_TOKEN`` env, then the cached login via :func:`huggingface_hub.get_token`).  A missing token
   raises :class:`NoTokenError` before any table is read or anything is rendered.  ``--dry-run`` needs
   none.  The token is never printed or logged; every error raised from here is scrubbed of it.
2. **Discover** (:func:`curation.publish.discover.discover`): walk ``DIR`` (sub-folders included, hidden/``_*`` folders skipped)
   for the tables the other commands write and map each to a config:

   ===========================================  ==========================  ==========================
   file                                         written by                  config
   ===========================================  ==========================  ==========================
   ``problems.parquet``                         ``build`` (or ``ingest``)   ``problems``
   ``excluded.parquet``                         ``ingest`` + ``build``      ``excluded`` (concatenated)
   ``scores.parquet`` / ``rollouts.parquet``    ``score``                   ``scores`` / ``rollouts``
   ``sft.parquet`` (``sft_text``, ``sft_mm``)   ``cot``                     ``cold_start`` (``_text``...)
   ``rl.parquet`` (``rl_text``, ``rl_mm``)      ``rl-set``                  ``rl`` (``rl_text``...)
   ===========================================  ==========================  ==========================

   The ``stats.json`` next to a table tells its stage (``steps`` = build, ``format`` = ingest).  When a
   config has several candidates, a ``build`` output beats an ``ingest`` output; two of the same stage is
   an error naming both.  ``excluded`` gathers every ``excluded.parquet`` found (its ``step`` column says
   which stage dropped each row), so the published set accounts for every input row.
3. **Stage** (:func:`curation.publish.stage.stage`; the card: :mod:`curation.publish.card`): write the Hub file tree into a folder (the ``--dry-run`` folder, or a
   temporary one): ``data/<config>/train-00000-of-0000N.parquet`` (shards of at most ``max_shard_bytes``
   in-memory bytes), ``assets/pass_rate_hist.png`` and ``assets/vps_hist.png`` (from the scores table via
   :mod:`curation.score.report`) and ``README.md`` rendered from ``data_cards/<kind>.md.j2``.  Parquet is
   written the way 🤗 ``datasets`` writes it for the Hub (content-defined chunking, page index, image
   columns stored PLAIN and uncompressed), with the ``huggingface`` schema metadata declaring image
   columns as ``Image`` features: the original image bytes are kept and ``load_dataset`` decodes them.
   The writes are deterministic (same tables -> same bytes), which makes publishing idempotent.
4. **Upload** (:func:`curation.publish.hub.publish`): ``create_repo(exist_ok=True)`` (+ ``create_branch`` for ``--revision``),
   list the remote tree, and compare each staged file with the remote one by content hash: a remote LFS
   file matches when its ``lfs.sha256`` equals our SHA-256; a regular one when its blob id equals our
   git blob SHA-1 (``sha1(b"blob <size>\\0" + content)``, git's object id).  Only new or changed files
   go into one ``create_commit`` (``CommitOperationAdd``); files under ``data/`` and ``assets/`` that we
   no longer produce are deleted (``CommitOperationDelete``); other remote files (``.gitattributes``,
   anything added by hand) are left alone.  Nothing changed -> no commit at all.

Reads every stage's tables and ``stats.json``; writes ``data/<config>/*.parquet``, ``assets/*.png`` and
``README.md``.  May import: ``curation.core``, ``curation.score`` (the score report's histograms).
"""

from curation.publish.card import ConfigInfo, card_context, render_card, validate_card
from curation.publish.discover import CONFIG_FILES, Discovery, FoundTable, PublishError, discover
from curation.publish.hub import NoTokenError, PublishResult, publish, resolve_token
from curation.publish.stage import StagedFile, Staging, git_blob_sha1, stage

__all__ = [
    "CONFIG_FILES", "ConfigInfo", "Discovery", "FoundTable", "NoTokenError", "PublishError", "PublishResult",
    "StagedFile", "Staging", "card_context", "discover", "git_blob_sha1", "publish", "render_card",
    "resolve_token", "stage", "validate_card",
]
