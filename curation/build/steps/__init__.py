"""The cleaning steps of ``curate build``; importing this package registers them all."""

from curation.build.steps.base import Excluded, Step  # noqa: F401

# Each module registers its Step subclass(es) by ``name``.
from curation.build.steps import normalize, exact_dedup, sanity, near_dup, decontaminate, verifiable  # noqa: F401,E402

__all__ = ["Excluded", "Step"]
