"""pytest plugin: run TRL's own ``tests/test_grpo_trainer.py`` against a chosen ``GRPOTrainer`` class.

Loaded with ``-p trl_grpo_plugin`` (this folder on ``PYTHONPATH``); configured by environment variables:

``RLCURATE_TRL_TRAINER``
    ``stock`` (default): ``trl.GRPOTrainer``; ``vas``: ``training.grpo.VASGRPOTrainer`` as the tests build it
    (no ``vps_table``: its VAS sampler, online refresh and PAD are all off); ``vas-on``: the same class with
    VAS switched on by default (see :func:`vas_on`); or any ``module:Class``.  The repo root must be importable
    for ``vas``/``vas-on``.
``RLCURATE_TRL_VAS_LAMBDA``
    ``vas-on`` only: the VAS fraction lambda (default 0.5, the recipe default).
``RLCURATE_TRL_REPORT``
    path of a JSON report to write: one record per test (outcome, duration, first error line).
``RLCURATE_TRL_SELECTION``
    ``0`` disables the deselection in :mod:`selection` (default on).

The swap leaves the upstream files untouched: before any test module is imported, ``trl.GRPOTrainer`` and
``trl.trainer.GRPOTrainer`` are replaced by the chosen class, so the test module's own
``from trl import GRPOTrainer`` binds it; after collection, every collected module's global ``GRPOTrainer`` is
checked (and set) to the chosen class, so ``GRPOTrainer(...)``, ``patch.object(GRPOTrainer, ...)``,
``object.__new__(GRPOTrainer)`` and ``Mock(spec=GRPOTrainer)`` in the tests all see it.
``trl.trainer.grpo_trainer.GRPOTrainer`` (the defining module) is left alone: the subclass derives from it.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import time
from pathlib import Path

import pytest

TRAINERS = {"stock": "trl:GRPOTrainer", "vas": "training.grpo:VASGRPOTrainer", "vas-on": "trl_grpo_plugin:vas_on"}

# trl.import_utils names that the vendored upstream tests/testing_utils.py imports but TRL 1.16.0 no longer
# defines (the vendored test snapshot predates 1.16.0).  Each shim answers "is the package importable".
IMPORT_UTILS_SHIMS = {"is_joblib_available": "joblib"}

_state: dict = {"shims": [], "trainer": None, "stock": None, "patched_modules": [], "deselected": []}


def _load(spec: str):
    mod, _, name = spec.partition(":")
    obj = getattr(importlib.import_module(mod), name)
    return obj() if spec == TRAINERS["vas-on"] else obj


def vas_on() -> type:
    """``VASGRPOTrainer`` subclass that, when a test does not pass ``vps_table``/``vas`` (none does), switches
    VAS on the way ``train grpo`` does with ``vas: {enabled: true}``: a :class:`training.vps.VPSTable` over the
    train dataset (uniform prior: no scores) and a ``VASSpec(enabled=True, lambda_=λ, refresh="none")``
    (no online refresh: the tests' datasets have no ``vas_index`` column / accuracy reward).  Iterable (unsized)
    train datasets keep VAS off.  Diagnostic mode: shows which upstream tests break once the VAS sampler
    replaces TRL's ``RepeatSampler``."""
    from training.config import VASSpec
    from training.grpo import VASGRPOTrainer
    from training.vps import VPSTable

    lam = float(os.environ.get("RLCURATE_TRL_VAS_LAMBDA", "0.5"))

    class VASOnGRPOTrainer(VASGRPOTrainer):
        def __init__(self, *args, vps_table=None, vas=None, **kwargs):
            ds = kwargs.get("train_dataset", args[3] if len(args) > 3 else None)
            if vps_table is None and vas is None and ds is not None and hasattr(ds, "__len__"):
                vps_table = VPSTable.uniform_prior(len(ds))
                vas = VASSpec(enabled=True, lambda_=lam, refresh="none")
            super().__init__(*args, vps_table=vps_table, vas=vas, **kwargs)

    VASOnGRPOTrainer.__module__ = __name__
    VASOnGRPOTrainer.__qualname__ = f"vas_on.<VASGRPOTrainer + VAS lambda={lam}>"
    return VASOnGRPOTrainer


def _install_shims() -> None:
    import trl.import_utils as iu

    for name, pkg in IMPORT_UTILS_SHIMS.items():
        if not hasattr(iu, name):
            setattr(iu, name, (lambda p: lambda: importlib.util.find_spec(p) is not None)(pkg))
            _state["shims"].append(f"trl.import_utils.{name}")


def pytest_configure(config):
    _install_shims()
    import trl
    import trl.trainer

    choice = os.environ.get("RLCURATE_TRL_TRAINER", "stock")
    stock = importlib.import_module("trl.trainer.grpo_trainer").GRPOTrainer
    cls = _load(TRAINERS.get(choice, choice))
    if not (isinstance(cls, type) and issubclass(cls, stock)):
        raise pytest.UsageError(f"RLCURATE_TRL_TRAINER={choice}: {cls!r} is not a subclass of {stock!r}")
    trl.GRPOTrainer = cls
    trl.trainer.GRPOTrainer = cls
    _state.update(trainer=cls, stock=stock, choice=choice)
    config.stash[_KEY] = cls


_KEY = pytest.StashKey[type]()


def pytest_report_header(config):
    cls = _state["trainer"]
    lines = [f"rlcurate: GRPOTrainer under test = {cls.__module__}.{cls.__qualname__} "
             f"(RLCURATE_TRL_TRAINER={_state.get('choice')})"]
    if _state["shims"]:
        lines.append("rlcurate: compat shims: " + ", ".join(_state["shims"]))
    return lines


def pytest_collection_modifyitems(session, config, items):
    cls = _state["trainer"]
    seen = set()
    for item in items:
        mod = getattr(item, "module", None)
        if mod is None or id(mod) in seen:
            continue
        seen.add(id(mod))
        cur = getattr(mod, "GRPOTrainer", None)
        if cur is not None and cur is not cls:
            if cur is not _state["stock"]:
                raise pytest.UsageError(f"{mod.__name__}.GRPOTrainer is {cur!r}, neither stock nor the chosen class")
            mod.GRPOTrainer = cls
        if cur is not None:
            _state["patched_modules"].append(mod.__name__)
    if os.environ.get("RLCURATE_TRL_SELECTION", "1") != "0":
        import selection

        keep, dropped = [], []
        for item in items:
            reason = selection.deselect_reason(item)
            if reason:
                dropped.append(item)
                _state["deselected"].append({"nodeid": item.nodeid, "reason": reason})
            else:
                keep.append(item)
        if dropped:
            config.hook.pytest_deselected(items=dropped)
            items[:] = keep


# ------------------------------------------------------------------------------------------------ report

_results: dict[str, dict] = {}


def _first_error_line(report) -> str:
    lr = report.longrepr
    crash = getattr(lr, "reprcrash", None)
    if crash is not None and getattr(crash, "message", None):
        msg = crash.message
    elif isinstance(lr, tuple) and len(lr) == 3:  # skip: (path, lineno, reason)
        msg = str(lr[2])
    else:
        msg = str(lr) if lr is not None else ""
    lines = [ln for ln in msg.splitlines() if ln.strip()]
    return lines[0][:400] if lines else ""


def pytest_runtest_logreport(report):
    rec = _results.setdefault(report.nodeid, {"nodeid": report.nodeid, "outcome": None, "duration": 0.0})
    rec["duration"] = round(rec["duration"] + report.duration, 3)
    xfail = hasattr(report, "wasxfail")
    if report.when == "setup":
        if report.failed:
            rec.update(outcome="error", message=_first_error_line(report), phase="setup")
        elif report.skipped:
            rec.update(outcome="xfailed" if xfail else "skipped", message=_first_error_line(report))
    elif report.when == "call":
        if report.passed:
            rec.update(outcome="xpassed" if xfail else "passed")
        elif report.failed:
            rec.update(outcome="failed", message=_first_error_line(report), phase="call")
        elif report.skipped:
            rec.update(outcome="xfailed" if xfail else "skipped",
                       message=(report.wasxfail if xfail else _first_error_line(report)))
    elif report.when == "teardown" and report.failed and rec["outcome"] in (None, "passed"):
        rec.update(outcome="error", message=_first_error_line(report), phase="teardown")


def pytest_sessionstart(session):
    _state["t0"] = time.time()


def pytest_sessionfinish(session, exitstatus):
    path = os.environ.get("RLCURATE_TRL_REPORT")
    if not path:
        return
    cls = _state["trainer"]
    out = {
        "trainer": f"{cls.__module__}.{cls.__qualname__}" if cls else None,
        "choice": _state.get("choice"),
        "exitstatus": int(exitstatus),
        "seconds": round(time.time() - _state.get("t0", time.time()), 1),
        "shims": _state["shims"],
        "patched_modules": sorted(set(_state["patched_modules"])),
        "deselected": _state["deselected"],
        "tests": list(_results.values()),
    }
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(out, indent=2))
