"""The step contract of ``curate build`` (datatrove style: one small step per module, a ``run`` generator).

A step consumes problem rows (dicts in the ``problems`` schema) and yields, for every input row, either
the row (kept, possibly modified) or an :class:`Excluded` wrapping it with a reason. Steps never drop a
row silently: the pipeline checks that kept + excluded = input after every step.

Steps are registered by ``name`` and built from recipe YAML::

    steps:
      - normalize: {}
      - near_dup: {threshold: 0.8, ngram: 5}

so ``Step.from_config("near_dup", {"threshold": 0.8})`` works for any registered step.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, Iterable, Iterator


@dataclass
class Excluded:
    """A row a step dropped: ``reason`` is a short stable code (e.g. ``near_duplicate``), ``detail`` free
    text, ``duplicate_of`` the id of the kept row it duplicates (dedup steps)."""

    row: dict
    reason: str
    detail: str | None = None
    duplicate_of: str | None = None


class Step(ABC):
    """Base class. Subclasses are dataclasses of their options and implement :meth:`run`."""

    name: ClassVar[str]
    registry: ClassVar[dict[str, type["Step"]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__:
            Step.registry[cls.name] = cls

    @abstractmethod
    def run(self, rows: Iterable[dict]) -> Iterator[dict | Excluded]:
        """Yield each input row, kept or wrapped in :class:`Excluded`."""

    @classmethod
    def from_config(cls, name: str, options: dict | None = None) -> "Step":
        import curation.build.steps  # noqa: F401  (registers the built-in steps)

        if name not in Step.registry:
            known = ", ".join(sorted(Step.registry))
            raise ValueError(f"unknown step {name!r}; known steps: {known}")
        klass = Step.registry[name]
        options = dict(options or {})
        if dataclasses.is_dataclass(klass):
            allowed = {f.name for f in dataclasses.fields(klass)}
            bad = sorted(set(options) - allowed)
            if bad:
                raise ValueError(f"step {name!r}: unknown option(s) {bad}; allowed: {sorted(allowed)}")
        return klass(**options)

    def summary(self) -> dict:
        """What the last :meth:`run` found beyond the exclusion counts (e.g. per-benchmark counts of
        ``decontaminate``); merged into the step's entry of stats.json. Empty by default."""
        return {}

    def describe(self) -> dict:
        opts = dataclasses.asdict(self) if dataclasses.is_dataclass(self) else {}
        return {"step": self.name, **opts}
