"""Old import paths of modules that moved in 0.2 (the package-per-stage layout) keep working for one release.

``import curation.scoring`` (or ``from curation.score_job import run_score_job``) still works: a finder at the
front of ``sys.meta_path`` maps the old dotted name to the new module, which is registered under both names
(one module object, so monkeypatching through either name affects both), and a ``DeprecationWarning``
names the new path.  Sub-modules follow their package (``curation.steps.near_dup`` ->
``curation.build.steps.near_dup``).  Old names that equal a new package (``curation.verify``,
``curation.cot``, ``curation.rlset``, ``curation.publish``, ``curation.report``) need no alias: those
packages re-export the names the old modules had.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

# old dotted name -> new dotted name (packages map their sub-modules too)
MOVED: dict[str, str] = {
    "curation.schema": "curation.core.schema",
    "curation.io": "curation.core.io",
    "curation.images": "curation.core.images",
    "curation.console": "curation.core.console",
    "curation.models": "curation.core.models",
    "curation.prompts": "curation.core.prompts",
    "curation.answers": "curation.verify.extract",
    "curation.sources": "curation.ingest.sources",
    "curation.pipeline": "curation.build.pipeline",
    "curation.minhash": "curation.build.minhash",
    "curation.steps": "curation.build.steps",
    "curation.scoring": "curation.score.scores",
    "curation.score_job": "curation.score.job",
    "curation.executors": "curation.generation.executors",
    "curation.quality": "curation.cot.quality",
    "curation.run_report": "curation.report.run",
}


def new_name(fullname: str) -> str | None:
    """The new dotted name of a moved module (or of a sub-module of a moved package), else ``None``."""
    if fullname in MOVED:
        return MOVED[fullname]
    for old, new in MOVED.items():
        if fullname.startswith(old + "."):
            return new + fullname[len(old):]
    return None


class _AliasLoader(importlib.abc.Loader):
    def __init__(self, target: str):
        self.target = target

    def create_module(self, spec):  # the new module itself, registered under the old name as well
        module = importlib.import_module(self.target)
        self._spec = module.__spec__
        return module

    def exec_module(self, module) -> None:  # already executed under its new name; keep its own spec
        module.__spec__ = self._spec


class MovedModuleFinder(importlib.abc.MetaPathFinder):
    """Resolves the old names in :data:`MOVED` to the new modules (with a ``DeprecationWarning``)."""

    def find_spec(self, fullname, path=None, target=None):
        target_name = new_name(fullname)
        if target_name is None:
            return None
        warnings.warn(
            f"{fullname} moved to {target_name}; the old import path will be removed in the next release",
            DeprecationWarning,
            stacklevel=2,
        )
        is_pkg = importlib.util.find_spec(target_name).submodule_search_locations is not None
        return importlib.util.spec_from_loader(fullname, _AliasLoader(target_name), is_package=is_pkg)


def install() -> None:
    if not any(isinstance(f, MovedModuleFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, MovedModuleFinder())
