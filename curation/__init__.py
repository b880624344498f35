"""rlcurate.curation: ingest, build (clean, dedup, decontaminate), verify, score (MMR1 VPS), build SFT/RL
sets, publish and report.

The package is laid out like the data flow (see the README's "Project layout")::

    core/        shared infrastructure: table schemas, Parquet/JSONL I/O, images, prompts, plots, models, console
    verify/      answer extraction, comparison rules, the worker pool with hard deadlines
    engines/     rollout engines (transformers, vLLM) behind one interface
    generation/  chunked, resumable generation jobs over a problems table (local and Ray executors)
    ingest/ build/ score/ cot/ rlset/ publish/ report/    one package per stage of the flow
    flow.py      `curate run`: a recipe's flow of ordinary commands
    commands/    the thin `curate` sub-commands; cli.py assembles them

Lower layers never import higher ones (checked by tests/test_layers.py).
"""

from curation import _moved

__version__ = "0.2.0"

_moved.install()
