"""The cleaning steps of ``curate build``; importing this package registers them all."""

# Each module registers its Step subclass(es) by ``name``.
from curation.build.steps import decontaminate, exact_dedup, near_dup, normalize, sanity, verifiable  # noqa: F401,E402
from curation.build.steps.base import Excluded, Step  # noqa: F401

__all__ = ["Excluded", "Step"]
