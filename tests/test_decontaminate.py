"""The ``decontaminate`` step against the real AMC23 / Minerva-Math benchmark files, among GSM8K problems."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curation.build.steps.base import Excluded, Step
from curation.build.steps.decontaminate import Decontaminate, load_benchmark

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
AMC = str(DATA / "benchmarks" / "amc23.jsonl")
MINERVA = str(DATA / "benchmarks" / "minerva_math.jsonl")
BENCHMARKS = [AMC, MINERVA]

AMC0 = (  # amc23 row 0, verbatim
    "Cities $A$ and $B$ are $45$ miles apart. Alicia lives in $A$ and Beth lives in $B$. Alicia bikes towards "
    "$B$ at 18 miles per hour. Leaving at the same time, Beth bikes toward $A$ at 12 miles per hour. How many "
    "miles from City $A$ will they be when they meet?"
)
PLANTED = {
    "exact": AMC0,
    "numbers": AMC0.replace("45", "60").replace("18", "21").replace("12", "9"),
    "paraphrase": (
        "Cities $A$ and $B$ are $50$ miles apart. Alicia lives in $A$ and Beth lives in $B$. Alicia rides "
        "towards $B$ at 20 miles per hour. Starting at the same moment, Beth rides toward $A$ at 15 miles per "
        "hour. How far from City $A$ will they be when they meet?"
    ),
    # reworded often enough that no 8-gram survives in quantity: only the fuzzy check sees it
    "fuzzy": (
        "Cities A and B lie 50 miles apart. Alicia resides in A while Beth resides in B. Alicia cycles toward "
        "B at 20 miles an hour. Starting at the same moment, Beth cycles towards A at 15 miles an hour. How "
        "many miles from City A are they when they meet?"
    ),
}


@pytest.fixture(scope="module")
def gsm8k_rows() -> list[dict]:
    with (DATA / "gsm8k" / "train.jsonl").open() as f:
        rows = [json.loads(line) for line in f]
    return [{"id": f"gsm8k-{i}", "source": "gsm8k", "problem": r["question"], "images": [],
             "answer": r["answer"].split("####")[-1].strip()} for i, r in enumerate(rows)]


def _run(step: Step, rows: list[dict]) -> tuple[list[dict], list[Excluded]]:
    out = list(step.run(rows))
    assert len(out) == len(rows)
    for o, r in zip(out, rows):
        assert (o.row if isinstance(o, Excluded) else o) is r
    return [o for o in out if not isinstance(o, Excluded)], [o for o in out if isinstance(o, Excluded)]


def test_planted_copies_caught_and_gsm8k_not_flagged(gsm8k_rows):
    rng = random.Random(0)
    clean = rng.sample(gsm8k_rows, 2000)
    with open(MINERVA) as f:
        minerva = [json.loads(line) for line in f]
    planted = [{"id": f"planted-{k}", "source": "x", "problem": t, "answer": "0"} for k, t in PLANTED.items()]
    planted.append({"id": "planted-minerva", "source": "x", "answer": "0",
                    "problem": "Solve the following. " + minerva[17]["problem"] + " Show your work."})
    rows = clean + planted
    rng.shuffle(rows)
    step = Step.from_config("decontaminate", {"benchmarks": BENCHMARKS})
    _, excluded = _run(step, rows)
    got = {e.row["id"]: e for e in excluded}
    assert sorted(got) == sorted(p["id"] for p in planted)  # all caught, 0 of 2,000 GSM8K flagged
    for e in excluded:
        assert e.reason == "benchmark_contamination"
    for k in ("exact", "numbers", "paraphrase"):
        d = got[f"planted-{k}"].detail
        assert d.startswith("ngram: ") and d.endswith(f"{AMC} row 0"), d
    assert "45 shared 8-grams (100%" in got["planted-exact"].detail
    assert "45 shared 8-grams (100%" in got["planted-numbers"].detail  # numbers are masked
    fuzzy = got["planted-fuzzy"].detail
    assert fuzzy.startswith("fuzzy: jaccard 0.") and fuzzy.endswith(f"{AMC} row 0"), fuzzy
    assert got["planted-minerva"].detail.endswith(f"{MINERVA} row 17 (id=17)") or got[
        "planted-minerva"].detail.endswith(f"{MINERVA} row 17")


def test_all_gsm8k_train_false_positives(gsm8k_rows):
    """Measured false positives over all 7,473 GSM8K train problems vs both benchmarks."""
    texts = [r["problem"] for r in gsm8k_rows]
    assert Decontaminate(benchmarks=BENCHMARKS).matches(texts).count(None) == len(texts)
    # open-r1's rule (any shared 8-gram), with numbers masked, flags 2 GSM8K train problems through the
    # stock phrase "at <n> miles per hour how many miles": why the default asks for 20% n-gram coverage
    loose = Decontaminate(benchmarks=BENCHMARKS, ngram_overlap=0.0, fuzzy=False).matches(texts)
    flagged = [m for m in loose if m is not None]
    assert len(flagged) == 2
    assert all("'at 0 miles per hour how many miles'" in m[1] for m in flagged)


def test_short_problems_compare_whole_text(tmp_path):
    bench = tmp_path / "short.jsonl"
    bench.write_text(json.dumps({"question": "What is $2+3$?", "unique_id": "s/1"}) + "\n"
                     + json.dumps({"question": AMC0}) + "\n")
    step = Decontaminate(benchmarks=[str(bench)], fuzzy=False)
    rows = [{"id": "a", "problem": "what is 17 + 4 ?"}, {"id": "b", "problem": "What is 2 times 3?"},
            {"id": "c", "problem": "Compute: what is 2+3? Then add 7 to it and report the answer."}]
    _, excluded = _run(step, rows)
    assert [e.row["id"] for e in excluded] == ["a"]
    assert excluded[0].detail == f"ngram: same normalised text 'what is 0 0' as {bench} row 0 (id=s/1)"


def test_benchmark_formats_and_errors(tmp_path):
    with open(AMC) as f:
        amc = [json.loads(line) for line in f]
    pq.write_table(pa.table({"question": [r["question"] for r in amc], "id": [r["id"] for r in amc]}),
                   tmp_path / "amc.parquet")
    step = Decontaminate(benchmarks=[str(tmp_path / "amc.parquet")])
    _, excluded = _run(step, [{"id": "x", "problem": amc[5]["question"]}, {"id": "ok", "problem": "Hi there."}])
    assert [e.row["id"] for e in excluded] == ["x"] and "amc.parquet row 5" in excluded[0].detail

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"problem": "fine"}\n{"text": "no problem column"}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2.*no string 'problem' or 'question'"):
        load_benchmark(str(bad))
    with pytest.raises(ValueError, match=r"bad.jsonl:2: column 'problem' is not a string"):
        load_benchmark(str(bad), column="problem")
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"problem": "fine"}\n{not json\n')
    with pytest.raises(ValueError, match="broken.jsonl:2"):
        load_benchmark(str(broken))
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        load_benchmark(str(tmp_path / "nope.jsonl"))
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        Step.from_config("decontaminate", {"benchmarks": [AMC, str(tmp_path / "nope.jsonl")]})
    rows = [{"id": "c", "problem": AMC0}]
    with pytest.warns(UserWarning, match="no benchmarks configured"):
        assert list(Step.from_config("decontaminate", {"benchmarks": []}).run(rows)) == rows


def test_rows_without_text_pass_through():
    rows = [{"id": "a", "problem": None}, {"id": "b"}, {"id": "c", "problem": AMC0}]
    kept, excluded = _run(Decontaminate(benchmarks=[AMC]), rows)
    assert [r["id"] for r in kept] == ["a", "b"] and [e.row["id"] for e in excluded] == ["c"]
