"""The house rules of the layout (README "Project layout"): every package imports only the layers below it.

    curation.core  <-  verify, engines  <-  generation  <-  the stages (ingest, build, score, cot, rlset,
    publish, report)  <-  flow  <-  commands  <-  cli;   training may import curation.core, curation.verify
    and curation.score, and curation never imports training.

Every import statement is checked, including the lazy ones inside functions."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

STAGES = ["ingest", "build", "score", "cot", "rlset", "publish", "report"]
ALLOWED: dict[str, set[str]] = {
    "curation.core": set(),
    "curation.verify": {"curation.core"},
    "curation.engines": {"curation.core"},
    "curation.generation": {"curation.core", "curation.verify", "curation.engines"},
    "curation.ingest": {"curation.core", "curation.verify"},
    "curation.build": {"curation.core", "curation.verify"},
    "curation.score": {"curation.core", "curation.verify", "curation.engines", "curation.generation"},
    # cot reuses score's edit distance for diverse selection
    "curation.cot": {"curation.core", "curation.verify", "curation.engines", "curation.generation", "curation.score"},
    "curation.rlset": {"curation.core", "curation.verify"},
    "curation.publish": {"curation.core", "curation.score"},
    "curation.report": {"curation.core", "curation.score"},
    "curation.flow": {"curation.core"},
    "curation.commands": {"curation.core", "curation.verify", "curation.engines", "curation.generation",
                          "curation.flow", *(f"curation.{s}" for s in STAGES)},
    "curation.cli": {"curation.commands"},
    "training": {"curation.core", "curation.verify", "curation.score"},
}


def _package_of(module: str) -> str | None:
    """The layer key of a dotted module name (``curation.score.job`` -> ``curation.score``)."""
    if module == "training" or module.startswith("training."):
        return "training"
    parts = module.split(".")
    if parts[0] != "curation" or len(parts) < 2:
        return None
    if parts[1] in ("_moved",):
        return None
    return ".".join(parts[:2])


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(source: str, module: str, is_package: bool = False) -> list[tuple[int, str]]:
    """(line, absolute module) of every import in ``source`` (the code of ``module``), relative ones resolved."""
    tree = ast.parse(source)
    me = module.split(".")
    pkg = me if is_package else me[:-1]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg[: len(pkg) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            out.append((node.lineno, mod))
            # ``from curation import score`` imports the sub-package
            if mod in ("curation", "training"):
                out += [(node.lineno, f"{mod}.{a.name}") for a in node.names]
    return out


def _sources() -> list[Path]:
    return sorted(p for d in ("curation", "training") for p in (ROOT / d).rglob("*.py"))


def test_every_package_has_a_layer():
    missing = sorted({_package_of(_module_name(p)) for p in _sources()} - set(ALLOWED) - {None})
    assert not missing, f"packages without a place in the layer map: {missing}"


def _violations(module: str, imports: list[tuple[int, str]], where: str) -> list[str]:
    me = _package_of(module)
    if me is None:
        return []
    bad = []
    for line, mod in imports:
        other = _package_of(mod)
        if other is not None and other != me and other not in ALLOWED[me]:
            bad.append(f"{where}:{line} imports {mod} ({me} may import {sorted(ALLOWED[me])})")
    return bad


@pytest.mark.parametrize("path", _sources(), ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_only_lower_layers(path: Path):
    module = _module_name(path)
    bad = _violations(module, _imports(path.read_text(), module, path.name == "__init__.py"),
                      str(path.relative_to(ROOT)))
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("module, source, ok", [
    ("curation.core.io", "def f():\n    from curation.score.job import run_score_job\n", False),
    ("curation.score.scores", "from training.sampler import VASSampler\n", False),
    ("curation.verify.pool", "from ..core import schema\n", True),
    ("curation.verify.pool", "from ..score import scores\n", False),
    ("curation.build.steps.near_dup", "from curation import cot\n", False),
    ("training.grpo", "from curation.score.vas import vas_probabilities\n", True),
    ("training.grpo", "from curation.publish import publish\n", False),
    ("training.dynamic", "from curation.score.posterior import zero_variance_prob\n", True),
    ("curation.score.posterior", "from training.dynamic import refill_draw\n", False),
])
def test_the_rule_fires(module, source, ok):
    """Lazy (function-level), relative and ``from curation import pkg`` imports are all seen."""
    assert (not _violations(module, _imports(source, module), module)) is ok


@pytest.mark.parametrize("old, new", [
    ("curation.scoring", "curation.score.scores"),
    ("curation.score_job", "curation.score.job"),
    ("curation.steps.near_dup", "curation.build.steps.near_dup"),
    ("curation.answers", "curation.verify.extract"),
    ("curation.io", "curation.core.io"),
])
def test_old_import_paths_still_work_with_a_deprecation_warning(old, new):
    """One module object under both names (so patching through either name affects both)."""
    import importlib
    import subprocess
    import sys

    code = (f"import warnings, importlib; warnings.simplefilter('error', DeprecationWarning)\n"
            f"try:\n    importlib.import_module({old!r})\nexcept DeprecationWarning as w:\n    print('warned:', w)\n"
            f"warnings.simplefilter('ignore')\nimport {old} as a, {new} as b\nprint(a is b)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True).stdout
    # the first moved name on the path warns (a sub-module's package warns before the sub-module)
    from curation._moved import MOVED

    first = next(m for m in MOVED if old == m or old.startswith(m + "."))
    assert f"warned: {first} moved to {MOVED[first]}" in out and out.strip().endswith("True"), out
    assert importlib.import_module(new).__name__ == new


def test_cli_command_table_is_complete():
    """`curate NAME` registers only NAME's module (start-up time): curation.cli.COMMANDS must name every
    command each module registers, and the full app must hold exactly those commands."""
    import typer

    from curation import cli

    names = {}
    for module in cli._COMMAND_MODULES:
        one = cli.build_app([module])
        names.update({c.name: module for c in one.registered_commands})
    assert names == cli.COMMANDS
    assert {c.name for c in cli.build_app().registered_commands} == set(cli.COMMANDS)
    assert isinstance(cli.app, typer.Typer)
