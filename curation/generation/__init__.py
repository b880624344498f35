"""Generation jobs shared by ``curate score`` and ``curate cot``: a problems table cut into chunks, each chunk
rendered to prompts, sampled by an engine (``curation.engines``), verified (``curation.verify``) and
returned as Arrow tables; run in this process (``local``) or on a Ray cluster (``ray``).

- ``jobs``: problems loading, shards, per-prompt seeds (what every executor and stage agrees on)
- ``executors``: the job spec, one chunk's processing, the local and Ray executors

May import: ``curation.core``, ``curation.verify``, ``curation.engines``.
"""
