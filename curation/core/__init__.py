"""Shared infrastructure every stage uses; imports nothing else from ``curation``.

- ``schema``: the Arrow schemas of every table (problems, excluded, rollouts, scores, sft, rl) and row checks
- ``io``: JSONL/Parquet readers, atomic writers, the exclusion writer, resumable chunk stores
- ``images``: decoding, content hashes and perceptual hashes of problem images (``dhash`` for ``near_dup``;
  ``image_signatures`` - pHash-256 + thumbnail correlation after margin trimming - for decontamination)
- ``columns``: the column-mapping vocabulary (``--map``) shared by ingest and benchmark files
- ``prompts``: prompt templates (``pipelines/prompts/*.yaml``) and chat messages with images
- ``plots``: histograms and Markdown tables for reports and cards
- ``models``: local model helpers (tiny test models, SmolLM2 from PyPI, processors without torchvision)
- ``console``: the rich console and progress bars of the CLIs
- ``bands``: pass-rate bands (``">0"``, ``"<=0.9"``) shared by rl-set and adaptive scoring
"""
