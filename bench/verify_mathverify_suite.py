"""math-verify's own regression cases through ``curation.verify.verify_batch``: how often we agree with them.

Run: ``.venv/bin/python bench/verify_mathverify_suite.py [--tests DIR] [--show] [--lenient]``

The cases are the parametrised ``(gold, pred, expected)`` tests of math-verify 0.9.0's test suite
(``tests/test_*.py`` of its source distribution; fetched with ``pip download --no-deps --no-binary :all:
math-verify==0.9.0`` into a temporary folder unless ``--tests`` names an unpacked ``tests`` folder). Cases
that need a non-default math-verify option (``strict=False``, ``allow_set_relation_comp=True``, a
``float_rounding`` other than 6) are left out: ``verify_batch`` runs math-verify with its defaults.

For each case the *gold* string is given as our gold answer and *pred* as the response, with the default
extraction rules (``--lenient`` adds the lenient ``last_math`` rule). Agreement: ``verdict == correct``
exactly when the case expects 1. math-verify's own agreement is its test function run as written
(the same cases; it passes all of them). Prints the agreement per test file and overall, and with
``--show`` every case where we disagree.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import subprocess
import sys
import tarfile
import tempfile
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

VERSION = "0.9.0"
# test functions whose extra argument changes math-verify's options, and the value that is the default
DEFAULT_OPTIONS = {"precision": 6, "strict": True, "allow_set_relation_comp": False}


def fetch_tests(dest: Path) -> Path:
    """Download and unpack math-verify's sdist; returns its root (holding ``tests/``)."""
    subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
                    f"math-verify=={VERSION}", "-d", str(dest)], check=True)
    (sdist,) = dest.glob("math_verify-*.tar.gz")
    with tarfile.open(sdist) as tar:
        tar.extractall(dest, filter="data")
    return next(dest.glob("math_verify-*/tests")).parent


def collect(root: Path) -> list[dict]:
    """Every parametrised (gold, pred, expected) case, with the test function that checks it."""
    sys.path.insert(0, str(root))
    cases = []
    for path in sorted((root / "tests").glob("test_*.py")):
        mod = importlib.import_module(f"tests.{path.stem}")
        for name, fn in vars(mod).items():
            if not name.startswith("test_") or not callable(fn):
                continue
            for mark in getattr(fn, "pytestmark", []):
                if mark.name != "parametrize":
                    continue
                argnames = [a.strip() for a in (mark.args[0].split(",") if isinstance(mark.args[0], str)
                                                else mark.args[0])]
                if argnames[:2] != ["gold", "pred"]:
                    continue
                for values in mark.args[1]:
                    values = getattr(values, "values", values)  # pytest.param(...)
                    args = dict(zip(argnames, values))
                    expected = args.get("expected", args.get("result"))
                    extra = {k: v for k, v in args.items() if k not in ("gold", "pred", "expected", "result")}
                    default = all(DEFAULT_OPTIONS.get(k) == v for k, v in extra.items())
                    cases.append({"file": path.name, "test": name, "gold": args["gold"], "pred": args["pred"],
                                  "expected": int(expected), "args": args, "fn": fn, "default": default})
    return cases


def math_verify_passes(case: dict) -> bool:
    try:
        case["fn"](**case["args"])
        return True
    except AssertionError:
        return False


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tests", type=Path, help="unpacked math-verify sdist (the folder holding tests/)")
    ap.add_argument("--show", action="store_true", help="print every case where we disagree")
    ap.add_argument("--lenient", action="store_true", help="extract with the lenient last_math rule too")
    args = ap.parse_args()
    logging.getLogger("math_verify").setLevel(logging.CRITICAL)
    logging.getLogger("latex2sympy2_extended").setLevel(logging.CRITICAL)

    from curation.verify import Verifier

    with tempfile.TemporaryDirectory() as tmp:
        root = args.tests if args.tests else fetch_tests(Path(tmp))
        if (root / "tests").is_dir() is False and root.name == "tests":
            root = root.parent
        every = collect(root)
        cases = [c for c in every if c["default"]]
        mv_ok = [math_verify_passes(c) for c in cases]
    with Verifier(workers=2) as v:
        verdicts = v.verify_batch([c["gold"] for c in cases], [c["pred"] for c in cases], timeout=5.0,
                                  lenient=args.lenient)
    ours_ok = [(vd.status == "correct") == bool(c["expected"]) for c, vd in zip(cases, verdicts)]

    print(f"math-verify {VERSION} suite: {len(every)} parametrised (gold, pred, expected) cases, "
          f"{len(cases)} with default options ({len(every) - len(cases)} need strict=False, "
          f"allow_set_relation_comp=True or another float precision: left out)")
    per_file: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    for c, a, b in zip(cases, ours_ok, mv_ok):
        per_file[c["file"]][0] += 1
        per_file[c["file"]][1] += a
        per_file[c["file"]][2] += b
    print(f"{'file':<26}{'cases':>7}{'ours':>7}{'math-verify':>13}")
    for f, (n, a, b) in sorted(per_file.items()):
        print(f"{f:<26}{n:>7}{a:>7}{b:>13}")
    print(f"{'total':<26}{len(cases):>7}{sum(ours_ok):>7}{sum(mv_ok):>13}")
    rules = "default rules + last_math" if args.lenient else "default rules"
    print(f"\nagreement with the expected value ({rules}): ours {sum(ours_ok)}/{len(cases)}, "
          f"math-verify {sum(mv_ok)}/{len(cases)}")
    by_status = defaultdict(int)
    for c, vd, ok in zip(cases, verdicts, ours_ok):
        if not ok:
            by_status[f"expected {c['expected']}, got {vd.status}"] += 1
    print("disagreements:", dict(by_status))
    if args.show:
        for c, vd, ok in zip(cases, verdicts, ours_ok):
            if not ok:
                print(f"\n[{c['file']}::{c['test']}] expected {c['expected']}, got {vd.status} ({vd.detail})"
                      f"\n  gold: {c['gold'][:200]!r}\n  pred: {c['pred'][:300]!r}\n  extracted: {vd.extracted!r}"
                      f" by {vd.rule}")


if __name__ == "__main__":
    main()
