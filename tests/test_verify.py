"""Verification: agreement with real external grades, fast path, gold kinds, deadlines that hold against
hostile input, threads, daemonic processes, fork children, and the ``curate verify`` command."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from curation.verify import (
    ParsedGold,
    Verdict,
    Verifier,
    classify_gold,
    extract_answer,
    get_verifier,
    gold_kind,
    parse_gold,
    verify_batch,
)

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
GSM_KEYS = ("6b_finetuning", "6b_verification", "175b_finetuning", "175b_verification")


@pytest.fixture(scope="module")
def verifier():
    with Verifier(workers=2) as v:
        yield v


# -- agreement with the datasets' own grades ---------------------------------------------------------------


def _gsm8k():
    golds, responses, labels = [], [], []
    for line in (DATA / "gsm8k" / "example_model_solutions.jsonl").open():
        row = json.loads(line)
        gold = extract_answer(row["ground_truth"], rules=["a_line"]).answer
        for key in GSM_KEYS:
            golds.append(gold)
            responses.append(row[key]["solution"])
            labels.append(row[key]["is_correct"])
    return golds, responses, labels


def _math_vision():
    problems = {r["id"]: r for r in map(json.loads, (DATA / "math_vision" / "testmini.jsonl").open())}
    golds, responses, options, labels = [], [], [], []
    for line in (DATA / "math_vision" / "model_outputs.jsonl").open():
        row = json.loads(line)
        p = problems[row["id"]]
        golds.append(p["answer"])
        responses.append(row["response"])
        options.append(p["options"] or None)
        labels.append(row["correct"])
    return golds, responses, options, labels


def test_gsm8k_agreement(verifier):
    golds, responses, labels = _gsm8k()
    assert len(golds) == 1319 * 4
    verdicts = verifier.verify_batch(golds, responses)
    agree = sum(v.correct == lab for v, lab in zip(verdicts, labels)) / len(labels)
    print(f"\nGSM8K agreement with is_correct: {agree:.4%} over {len(labels)} solutions; "
          f"{dict(Counter(v.status for v in verdicts))}")
    assert agree >= 0.99
    assert Counter(v.rule for v in verdicts)["a_line"] > 5200


def test_math_vision_agreement(verifier):
    golds, responses, options, labels = _math_vision()
    verdicts = verifier.verify_batch(golds, responses, options=options)
    agree = sum(v.correct == lab for v, lab in zip(verdicts, labels)) / len(labels)
    print(f"\nMATH-Vision agreement with correct: {agree:.4%} over {len(labels)} responses; "
          f"{dict(Counter(v.status for v in verdicts))}")
    assert agree >= 0.96
    # known wrong external labels: the answer names the gold option, the original grader said no
    problems = {r["id"]: r for r in map(json.loads, (DATA / "math_vision" / "testmini.jsonl").open())}
    rows = [json.loads(line) for line in (DATA / "math_vision" / "model_outputs.jsonl").open()]
    flipped = [(rows[i]["response"], problems[rows[i]["id"]]["answer"]) for i, v in enumerate(verdicts)
               if v.correct and not labels[i]]
    assert ("(C) $6 \\pi$", "C") in flipped
    assert ("20%", "20") in flipped


# -- fast path and math-verify ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "gold, response, status",
    [
        ("1000", "A: 1,000", "correct"),
        ("1,000", "The answer is 1000.", "correct"),
        ("0.5", "\\boxed{\\frac{1}{2}}", "correct"),
        ("1/2", "\\boxed{0.5}", "correct"),
        ("18", "#### 18.00", "correct"),
        ("18", "#### 17", "incorrect"),
        ("-3", "\\boxed{-3}", "correct"),
        ("45", "\\boxed{45^\\circ}", "correct"),
        ("March", "\\boxed{\\text{march}}", "correct"),
        ("March", "\\boxed{April}", "incorrect"),
        # different integers are different whatever the tolerance
        ("120000", "A: 120,006", "incorrect"),
        # a number and words: neither -1.8 nor -1.8e9 is 2
        ("2", "A: -1.8 billion", "incorrect"),
        # plain expressions in different variables cannot be equal under strict comparison
        ("300", "\\boxed{[P_{0}^{2 / 5}-\\frac{2}{5} g K^{-3 / 5} z]^{5 / 2}}", "incorrect"),
        ("c x^{-2}-\\frac{\\cos (2 x)}{2 x^{2}}", "\\boxed{\\frac{\\cos (2 t)+\\sin (2 t)}{4}}", "incorrect"),
        ("\\frac{1}{4-\\omega^{2}}", "\\boxed{1.75}", "incorrect"),
    ],
)
def test_fast_path_decides_without_workers(gold, response, status):
    v = Verifier(workers=1)
    try:
        (verdict,) = v.verify_batch([gold], [response])
        assert verdict.status == status
        assert verdict.detail.startswith("fast:")
        assert v.pids == [] and v.stats["started"] == 0  # no worker was started, no IPC
    finally:
        v.close()


@pytest.mark.parametrize(
    "gold, response, status",
    [
        ("x^2+1", "\\boxed{1+x^2}", "correct"),
        ("\\frac{\\sqrt{3}}{2}", "\\boxed{\\frac{1}{2}\\sqrt{3}}", "correct"),
        ("2\\sqrt{2}", "\\boxed{\\sqrt{8}}", "correct"),
        ("[1, 3)", "\\boxed{[1,3)}", "correct"),
        ("(-\\infty, 2] \\cup [3, \\infty)", "\\boxed{(-\\infty,2]\\cup[3,\\infty)}", "correct"),
        ("[1, 3)", "\\boxed{(1,3)}", "incorrect"),
        ("\\{1, 2, 3\\}", "\\boxed{\\{3,2,1\\}}", "correct"),
        ("\\begin{pmatrix} 1 & 2 \\\\ 3 & 4 \\end{pmatrix}",
         "\\boxed{\\begin{pmatrix} 1 & 2 \\\\ 3 & 4 \\end{pmatrix}}", "correct"),
        ("\\begin{pmatrix} 1 & 2 \\\\ 3 & 4 \\end{pmatrix}",
         "\\boxed{\\begin{pmatrix} 1 & 2 \\\\ 4 & 3 \\end{pmatrix}}", "incorrect"),
        ("5", "\\boxed{x = 5}", "correct"),
        ("9", "\\boxed{9 \\text{ km}}", "correct"),
        ("20", "\\boxed{20\\%}", "correct"),
        ("\\pi/2", "\\boxed{\\frac{\\pi}{2}}", "correct"),
        ("\\pi/2", "\\boxed{\\frac{\\pi}{3}}", "incorrect"),
        # same variables, different form: math-verify decides
        ("2 \\pi r", "\\boxed{2r\\pi}", "correct"),
        ("C_{1} e^{t}+C_{2}", "\\boxed{C_{2}+C_{1} e^{t}}", "correct"),
        ("9", "\\boxed{9 \\text{ km}}", "correct"),
        # single-letter units are not variables
        ("1.8 \\mathrm{~m}", "\\boxed{1.8}", "correct"),
        ("1.8", "\\boxed{1.8 m}", "correct"),
    ],
)
def test_math_verify_comparisons(verifier, gold, response, status):
    (verdict,) = verifier.verify_batch([gold], [response])
    assert verdict.status == status, verdict


def test_multiple_choice(verifier):
    opts = ["$\\frac{1}{4}$", "$\\frac{1}{2}$", "$1:4$", "$9 \\mathrm{~cm}$", "A"]
    golds = ["B", "B", "C", "D", "E", "E", "B"]
    responses = ["(B)", "0.5", "\\boxed{\\frac{1}{4}}", "9 cm", "\\boxed{A}", "A, A, A, A", "The answer is (A)"]
    got = [v.status for v in verifier.verify_batch(golds, responses, options=[opts] * len(golds))]
    # "\frac14" is option A's text, so it names A (not C's 1:4); "A" is option E's literal text
    assert got == ["correct", "correct", "incorrect", "correct", "correct", "incorrect", "incorrect"]


def test_verdict_fields_and_no_answer(verifier):
    v = verifier.verify_batch(["7"], ["I am not sure how to solve this.\nIt seems hard."])[0]
    assert v == Verdict("no_answer", None, None, v.detail) and not v.correct
    v = verifier.verify_batch(["7"], ["<think>3+4</think> so \\boxed{7}"])[0]
    assert (v.status, v.extracted, v.rule, v.correct) == ("correct", "7", "boxed", True)
    assert verifier.verify_batch(["", None], ["\\boxed{1}", "\\boxed{1}"])[0].status == "error"
    with pytest.raises(ValueError, match="golds but"):
        verifier.verify_batch(["1", "2"], ["1"])
    with pytest.raises(ValueError, match="timeout"):
        verifier.verify_batch(["1"], ["1"], timeout=0)
    assert verifier.verify_batch([], []) == []


# -- gold kinds --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "gold, options, kind",
    [
        ("72", None, "number"),
        ("1,000", None, "number"),
        ("-\\frac{3}{4}", None, "number"),
        ("0.25", None, "number"),
        ("2\\sqrt{3}", None, "expression"),
        ("\\frac{a M^{1 / 3}}{G M^{2 / 3}+b}", None, "expression"),
        ("y = 2x + 3", None, "equation"),
        ("[2, 5)", None, "interval"),
        ("(-\\infty, 0)", None, "interval"),
        ("(3,-4)", None, "tuple"),
        ("\\{1, 2\\}", None, "set"),
        ("1, 2, 3", None, "set"),
        ("\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}", None, "matrix"),
        ("\\text{Devon}", None, "text"),
        ("C", ["1", "2", "3", "4"], "choice"),
        ("$2$", ["$1$", "$2$"], "choice"),  # option text given as the gold: mapped to its label
        ("", None, None),
        ("   ", None, None),
        ("Proof: assume the contrary ...", None, None),
        ("We show that the sequence is bounded and monotone, hence it converges to its supremum.", None, None),
        ("F", ["1", "2", "3", "4"], None),
        ("\\frac{1}{2", None, None),
    ],
)
def test_gold_kind(gold, options, kind):
    assert gold_kind(gold, options) == kind
    parsed = parse_gold(gold, options)
    assert (parsed is None) == (kind is None)
    if parsed is not None:
        assert isinstance(parsed, ParsedGold) and parsed.kind == kind


def test_gold_reasons():
    assert classify_gold(None) == (None, "empty")
    assert classify_gold("Prove that $n^2 \\geq n$.")[1] == "proof"
    assert classify_gold("It depends on how you look at the drawing and what the children agreed")[1] == "open_ended"
    assert classify_gold("\\frac{1}{2")[1] == "malformed"
    assert classify_gold("G", ["a", "b"])[1] == "choice_not_in_options"
    assert parse_gold("12").number == 12 and parse_gold("B", ["x", "y"]).choice == "B"


# -- hostile input: the caller never hangs, the pool survives ----------------------------------------------

HOSTILE = [
    "\\boxed{9^{9^{9^{9^{9}}}}}",
    "\\boxed{10^{10^{8}}}",
    "\\boxed{(10^{8})!}",
    "\\boxed{1000000!!}",
    "\\boxed{\\frac{1}{2}" + "}" * 5,
    "\\boxed{\\sqrt[}{\\frac{}}}",
    "\\boxed{\\begin{pmatrix} 1 & 2 \\end{bmatrix}}",
    "The answer is " + "(" * 300,
    "x" * 1_000_000 + " \\boxed{" + "{" * 5000,
    "A" * 1_000_000,
    "\\boxed{" + "1+" * 400_000 + "1}",
    b"\\boxed{\xff\xfe 12 \x80}".decode("utf-8", errors="surrogateescape"),
    b"\\boxed{\xff\xfe\x80}".decode("utf-8", errors="replace"),
]


def test_hostile_inputs_finish_within_deadline():
    timeout = 2.0
    with Verifier(workers=2, grace=0.5) as v:
        t0 = time.perf_counter()
        verdicts = v.verify_batch(["1"] * len(HOSTILE), HOSTILE, timeout=timeout)
        elapsed = time.perf_counter() - t0
        print(f"\n{len(HOSTILE)} hostile items in {elapsed:.1f}s: {[x.status for x in verdicts]}")
        assert all(x.status in {"timeout", "error", "no_answer", "incorrect"} for x in verdicts), verdicts
        assert not any(x.correct for x in verdicts)
        # the heavy ones really hit the deadline instead of being silently called incorrect
        assert [x.status for x in verdicts[:4]] == ["timeout"] * 4
        assert verdicts[5].status == verdicts[6].status == "error"  # invalid LaTeX
        assert verdicts[11].status in {"error", "incorrect"}  # surrogates survive pickling to a worker
        # each item costs at most timeout + grace; items run two at a time, plus start-up
        assert elapsed < len(HOSTILE) * (timeout + 0.5) / 2 + 10
        # the pool still answers correctly afterwards
        after = v.verify_batch(["x^2+1", "3"], ["\\boxed{1+x^2}", "\\boxed{2+1}"], timeout=timeout)
        assert [x.status for x in after] == ["correct", "correct"]


def test_hard_kill_replaces_a_stuck_worker():
    """With the in-worker timer off, only the parent's hard deadline can stop 10^(10^8): the worker is
    killed, the item gets ``timeout``, the rest of its chunk is re-queued, the batch goes on."""
    with Verifier(workers=1, soft_deadline=False, grace=0.3, chunk_size=8) as v:
        assert v.verify_batch(["x^2"], ["\\boxed{x \\cdot x}"])[0].correct  # start the worker
        first = v.pids
        assert len(first) == 1
        t0 = time.perf_counter()
        golds = ["1", "7", "2", "y+1"]
        out = v.verify_batch(golds, ["\\boxed{x^2}", "\\boxed{10^{10^{8}}}", "\\boxed{1+1}", "\\boxed{1+y}"],
                             timeout=1.0)
        elapsed = time.perf_counter() - t0
        assert [x.status for x in out] == ["incorrect", "timeout", "correct", "correct"]
        assert out[1].detail.startswith("hard deadline")
        assert v.stats["killed"] == 1 and v.pids != first
        assert elapsed < 8.0


def test_worker_killed_from_outside_costs_one_item(verifier):
    warm = verifier.verify_batch(["x^2", "y^2"], ["\\boxed{x \\cdot x}", "\\boxed{y \\cdot y}"])  # workers are up
    assert all(v.correct for v in warm)
    assert len(verifier.pids) == 2
    victim = verifier.pids[0]

    def kill_soon():
        time.sleep(0.5)
        os.kill(victim, signal.SIGKILL)

    t = threading.Thread(target=kill_soon)
    t.start()
    # two slow items keep both workers busy when the kill lands
    out = verifier.verify_batch(["1", "1", "2"], ["\\boxed{9^{9^{9}}}", "\\boxed{10^{10^{8}}}", "\\boxed{1+1}"],
                                timeout=2.0)
    t.join()
    statuses = [x.status for x in out]
    assert statuses[2] == "correct"
    assert sorted(statuses[:2]) in (["error", "timeout"], ["timeout", "timeout"])
    assert victim not in verifier.pids
    assert verifier.verify_batch(["4"], ["\\boxed{2+2}"])[0].correct


# -- threads, daemonic processes, forks, the shared instance ----------------------------------------------


def test_from_non_main_threads(verifier):
    results: dict[int, list[str]] = {}
    errors: list[BaseException] = []

    def work(k: int) -> None:
        try:
            golds = [f"{k}+x", "2", str(k)]
            out = verifier.verify_batch(golds, [f"\\boxed{{x+{k}}}", "\\boxed{3}", f"A: {k}"])
            results[k] = [v.status for v in out]
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert results == {k: ["correct", "incorrect", "correct"] for k in range(4)}


def _daemon_child(queue):
    # a daemonic process (like a DataLoader worker) may not normally start children
    out = verify_batch(["x^2-1", "5"], ["\\boxed{(x-1)(x+1)}", "#### 6"], timeout=5)
    queue.put([v.status for v in out])


def test_from_daemonic_process():
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    p = ctx.Process(target=_daemon_child, args=(q,), daemon=True)
    p.start()
    try:
        assert q.get(timeout=60) == ["correct", "incorrect"]
    finally:
        p.join(10)


def _fork_child(queue):
    v = get_verifier()  # inherited from the parent: must notice the new pid and start its own workers
    out = v.verify_batch(["2\\pi"], ["\\boxed{\\pi+\\pi}"])
    queue.put((out[0].status, os.getpid() not in v.pids and len(v.pids) > 0))


def test_shared_verifier_survives_fork():
    shared = get_verifier()
    assert get_verifier() is shared
    assert verify_batch(["a+b"], ["\\boxed{b+a}"])[0].correct
    parent_pids = list(shared.pids)
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    p = ctx.Process(target=_fork_child, args=(q,))
    p.start()
    assert q.get(timeout=60) == ("correct", True)
    p.join(10)
    assert shared.pids == parent_pids  # the child did not touch the parent's workers


@pytest.mark.parametrize("method", ["forkserver", "spawn"])
def test_other_start_methods(method):
    with Verifier(workers=1, start_method=method) as v:
        out = v.verify_batch(["\\sqrt{2}/2"], ["\\boxed{\\frac{1}{\\sqrt{2}}}"])
        assert out[0].correct


# -- the command --------------------------------------------------------------------------------------------


def test_curate_verify_command(tmp_path):
    from typer.testing import CliRunner

    from curation.cli import app

    problems = {r["id"]: r for r in map(json.loads, (DATA / "math_vision" / "testmini.jsonl").open())}
    rows = []
    for line in list((DATA / "math_vision" / "model_outputs.jsonl").open())[:150]:
        r = json.loads(line)
        p = problems[r["id"]]
        rows.append({"id": r["id"], "gold": p["answer"], "choices": p["options"], "text": r["response"]})
    src = tmp_path / "in.jsonl"
    with src.open("w") as f:
        for i, r in enumerate(rows):
            f.write(json.dumps(r) + "\n")
            if i == 3:
                f.write("{not json\n")
                f.write(json.dumps({"id": "no-gold", "text": "\\boxed{1}"}) + "\n")
    out = tmp_path / "out.parquet"
    res = CliRunner().invoke(app, ["verify", str(src), "--out", str(out), "--gold-col", "gold",
                                   "--response-col", "text", "--options-col", "choices", "--timeout", "3"])
    assert res.exit_code == 0, res.output
    assert "correct" in res.output and "no_answer" in res.output

    import pyarrow.parquet as pq

    table = pq.read_table(out)
    assert table.num_rows == len(rows) + 2  # bad rows are kept, with a reason
    for col in ("extracted", "extract_rule", "correct", "verdict", "id", "text"):
        assert col in table.column_names
    got = table.to_pylist()
    assert got[4]["verdict"] == "error" and "malformed JSON" in got[4]["verdict_detail"]
    assert got[5]["verdict"] == "error" and "missing column" in got[5]["verdict_detail"]
    with Verifier(workers=1) as v:
        direct = v.verify_batch([r["gold"] for r in rows], [r["text"] for r in rows],
                                options=[r["choices"] or None for r in rows], timeout=3)
    kept = [g for g in got if g["id"] != "no-gold" and g.get("gold") is not None]
    assert len(kept) == len(direct)
    # same verdicts as the library call (a slow item may time out in one run and not the other on a busy
    # machine: those are left out of the comparison)
    pairs = [(g["verdict"], d.status) for g, d in zip(kept, direct) if "timeout" not in (g["verdict"], d.status)]
    assert len(pairs) >= len(kept) - 3
    assert all(a == b for a, b in pairs), [p for p in pairs if p[0] != p[1]]
    assert sum(g["correct"] for g in kept) > 0

    jsonl_out = tmp_path / "out.jsonl"
    res = CliRunner().invoke(app, ["verify", str(src), "--out", str(jsonl_out), "--gold-col", "gold",
                                   "--response-col", "text", "--options-col", "choices"])
    assert res.exit_code == 0, res.output
    assert len(jsonl_out.read_text().splitlines()) == len(rows) + 2


def test_worker_address_space_limit():
    with Verifier(workers=1, memory_limit_mb=512) as v:
        assert v.verify_batch(["x^2"], ["\\boxed{x \\cdot x}"])[0].correct
        (pid,) = v.pids
        line = next(x for x in Path(f"/proc/{pid}/limits").read_text().splitlines()
                    if x.startswith("Max address space"))
        soft = line.split()[3]
        status = Path(f"/proc/{pid}/status").read_text()
        vm = int(next(x for x in status.splitlines() if x.startswith("VmSize:")).split()[1]) * 1024
        assert soft != "unlimited"
        # the limit is what the worker mapped at start plus 512 MiB (it has grown a little since)
        assert vm < int(soft) <= vm + 512 * 1024 * 1024


def test_workers_argument_resizes_the_pool():
    with Verifier(workers=2) as v:
        assert v.verify_batch(["x^2"], ["\\boxed{x \\cdot x}"])[0].correct
        assert len(v.pids) == 1  # one item needed math-verify: one worker started
        assert all(x.correct for x in v.verify_batch(["x^2", "y^2"], ["\\boxed{x x}", "\\boxed{y y}"]))
        assert len(v.pids) == 2
        assert v.verify_batch(["x^3"], ["\\boxed{x \\cdot x^2}"], workers=1)[0].correct
        assert len(v.pids) == 1 and v.workers == 1


# -- letter golds, decimal commas, several boxes, the lenient rule ------------------------------------------


@pytest.mark.parametrize(
    "gold, response, status",
    [
        ("C", "\\boxed{C}", "correct"),
        ("C", "The answer is (C).", "correct"),
        ("\\text{C}", "$\\boxed{\\text{(C)}}.$", "correct"),
        ("\\text{E}", "$E$", "correct"),
        ("(B)", "B", "correct"),
        ("C", "\\boxed{D}", "incorrect"),
        ("C", "\\boxed{6\\pi}", "incorrect"),  # a value, and no options to say which label it is
    ],
)
def test_letter_gold_without_options(gold, response, status):
    v = Verifier(workers=1)
    try:
        (verdict,) = v.verify_batch([gold], [response])
        assert verdict.status == status, verdict
        assert v.stats["started"] == 0  # decided by the fast path
    finally:
        v.close()


def test_letter_gold_without_options_on_real_outputs(verifier):
    """MATH-Vision problem 59 has gold "C" and no options; none of its 13 graded responses is right."""
    rows = [json.loads(line) for line in (DATA / "math_vision" / "model_outputs.jsonl").open()]
    rows = [r for r in rows if r["id"] == "59"]
    assert len(rows) == 13 and not any(r["correct"] for r in rows)
    verdicts = verifier.verify_batch(["C"] * len(rows), [r["response"] for r in rows])
    assert not any(v.correct for v in verdicts)
    assert verifier.verify_batch(["C"], [rows[0]["response"][:0] + "So it is \\boxed{C}."])[0].correct


def test_decimal_comma_gold(verifier):
    out = verifier.verify_batch(["0,111", "0,111", "0,5"], ["\\boxed{0.111}", "\\boxed{111}", "\\boxed{1/2}"])
    assert [v.status for v in out] == ["correct", "incorrect", "correct"]


@pytest.mark.parametrize(
    "gold, response, status",
    [
        ("(2,1),(1,2),(-1,-20),(-20,-1)",
         "solutions are:\n\n\\[\n\\boxed{(1, 2)}, \\boxed{(2, 1)}, \\boxed{(-1, -20)}, \\boxed{(-20, -1)}\n\\]", "correct"),
        ("(2, 2), (6, 2)", "$$\\boxed{(2, 2)} \\quad \\text{and} \\quad \\boxed{(6, 2)}$$", "correct"),
        ("\\{1,2,3\\}", "\\boxed{1},\\boxed{2},\\boxed{3}", "correct"),
        ("1, 2, 3", "\\boxed{1} and \\boxed{2} and \\boxed{4}", "incorrect"),
        ("1, 2, 3", "\\boxed{1} and \\boxed{2}", "incorrect"),  # a missing solution is wrong
        # a single-valued gold is graded on the last box only, as before
        ("3", "\\boxed{1}, \\boxed{2}, \\boxed{3}", "correct"),
        ("(3, -4)", "\\boxed{(1, 2)} and \\boxed{(3, -4)}", "correct"),
    ],
)
def test_several_boxes_against_a_list_gold(verifier, gold, response, status):
    (v,) = verifier.verify_batch([gold], [response])
    assert v.status == status, v


def test_lenient_rule_is_opt_in(verifier):
    golds = ["x >= 5", "1000.99", "7"]
    responses = ["Therefore $x \\geq 5$ is the solution.", "so the number is 10 which is 1,000.99m²",
                 "Final Answer: The final answer is 7. I hope it is correct."]
    strict = verifier.verify_batch(golds, responses)
    assert [v.status for v in strict] == ["no_answer", "no_answer", "correct"]
    lenient = verifier.verify_batch(golds, responses, lenient=True)
    assert [v.status for v in lenient] == ["correct", "correct", "correct"]
    assert [v.rule for v in lenient] == ["last_math", "last_math", "answer_is"]
    assert verify_batch(golds[:1], responses[:1], lenient=True)[0].correct
    # lenient=True appends last_math to the rules given
    mixed = verifier.verify_batch(golds, responses, lenient=True, rules=["boxed"])
    assert [(v.status, v.rule) for v in mixed] == [("correct", "last_math"), ("correct", "last_math"),
                                                   ("no_answer", None)]  # "I hope it is correct." has no value


def test_curate_verify_rules_and_lenient(tmp_path):
    from typer.testing import CliRunner

    from curation.cli import app

    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in [
        {"answer": "x >= 5", "response": "Therefore $x \\geq 5$ is the solution."},
        {"answer": "8", "response": "The answer is 7.\n#### 8"},
    ]))
    runner = CliRunner()
    got = {}
    for name, extra in {"strict": [], "lenient": ["--lenient"], "rules": ["--rules", "answer_is,last_math"]}.items():
        out = tmp_path / f"{name}.jsonl"
        res = runner.invoke(app, ["verify", str(src), "--out", str(out), *extra])
        assert res.exit_code == 0, res.output
        got[name] = [(r["verdict"], r["extract_rule"]) for r in map(json.loads, out.read_text().splitlines())]
    assert got["strict"] == [("no_answer", None), ("correct", "gsm8k")]
    assert got["lenient"] == [("correct", "last_math"), ("correct", "gsm8k")]
    assert got["rules"] == [("correct", "last_math"), ("incorrect", "answer_is")]
    res = runner.invoke(app, ["verify", str(src), "--out", str(tmp_path / "x.jsonl"), "--rules", "boxed,nope"])
    assert res.exit_code != 0 and "unknown extraction rule" in res.output


def test_values_differ_shortcut():
    """In a worker, a wrong answer with symbols is settled by evaluating both sides at two sample points
    instead of math-verify's symbolic search; identities and numbers without symbols are left to it."""
    import logging

    from math_verify import parse

    from curation.verify.pool import _values_differ

    logging.getLogger("math_verify").setLevel(logging.CRITICAL)

    def p(s):
        return parse("\\boxed{" + s + "}", parsing_timeout=None)[0]

    assert _values_differ(p("(1 - 3e^{-2t} + 2e^{-5t})"), p("(1 - 3e^{-2t} + 2e^{-6t})"))
    assert _values_differ(p("\\frac{2}{5} g K^{-3/5} z"), p("\\frac{2}{6} g K^{-3/5} z"))
    assert not _values_differ(p("\\sin^2 x + \\cos^2 x"), p("1"))  # an identity: equal at every point
    assert not _values_differ(p("(x+1)^2"), p("x^2+2x+1"))
    assert not _values_differ(p("\\frac{1}{3}"), p("0.3333"))  # no symbols: math-verify's rounding rules
    assert not _values_differ(p("x = 1"), p("x = 2"))  # relations: math-verify
    with Verifier(workers=1) as v:
        wrong, right = v.verify_batch(["(1 - 3e^{-2t} + 2e^{-5t})", "(x+1)^2"],
                                      ["\\boxed{1 - 3e^{-2t} + 2e^{-6t}}", "\\boxed{x^2+2x+1}"])
    assert wrong.status == "incorrect" and "values differ" in wrong.detail
    assert right.status == "correct" and right.detail == "math-verify"


def test_identical_items_are_checked_once():
    """16 rollouts of one prompt, three distinct answers: math-verify checks 3 items for all 16."""
    with Verifier(workers=1) as v:
        golds = ["\\frac{\\sqrt{3}}{2}"] * 16
        responses = ["so \\boxed{\\frac{1}{2}\\sqrt{3}}"] * 12 + ["\\boxed{\\sqrt{3}/2}"] * 3 + ["\\boxed{7}"]
        done = []
        out = v.verify_batch(golds, responses, progress=done.append)
    assert [x.status for x in out] == ["correct"] * 15 + ["incorrect"]
    assert v.stats["math_verify"] == 16 and v.stats["duplicates"] == 13 and sum(done) == 16


def test_option_value_with_a_unit(verifier):
    """MATH-Vision: the value of the gold option without its unit ("1.8" for option E "$1.8 \\mathrm{~m}$") is
    right; a single-letter unit is not a variable."""
    opts = ["$2 \\mathrm{~m}$", "$1.5 \\mathrm{~m}$", "$1.2 \\mathrm{~m}$", "$2.8 \\mathrm{~m}$", "$1.8 \\mathrm{~m}$"]
    got = verifier.verify_batch(["E", "E", "C"], ["The answer is \\boxed{1.8}.", "\\boxed{1.5}", "\\boxed{1.2 m}"],
                                options=[opts] * 3)
    assert [v.status for v in got] == ["correct", "incorrect", "correct"]


def test_schedule_starts_costly_items_first_and_keeps_golds_together():
    """The pool's queue order: relations (math-verify's ``solve``) and long items first, items with the same
    gold adjacent (the worker's parse cache), every job exactly once."""
    from curation.verify.pool import _schedule

    jobs = [(0, ["5"], "4"), (1, ["x = 2"], "x = 3"), (2, ["5"], "6"), (3, [r"\frac{a}{b}"], r"\frac{a}{c}"),
            (4, ["x = 2"], "2 x = 5"), (5, ["y"], r"y \le 3"), (6, ["7"], "7.5")]
    order = [j[0] for j in _schedule(jobs)]
    assert sorted(order) == list(range(len(jobs)))
    relations = {1, 4, 5}
    assert set(order[:3]) == relations  # every relation before any other item
    for gold in ("5", "x = 2"):  # same gold: adjacent
        pos = sorted(order.index(j[0]) for j in jobs if j[1] == [gold])
        assert pos[-1] - pos[0] == len(pos) - 1
    assert order.index(3) < order.index(6)  # the longer plain item first


def test_long_batch_result_is_independent_of_the_queue_order(verifier):
    """Scheduling changes when an item runs, never its verdict: the same items reversed give the same verdicts."""
    golds = [r"x^{\prime}+\frac{r}{V} x-r c=0", r"\frac{2}{5} g", "1.6", r"\sqrt{2} \cos (2 t-\pi / 4)", "y=2x+1"]
    answers = [r"x^{\prime}+\frac{r}{V} x-r c=1", r"\frac{2}{5} g", "1.7", r"\sqrt{2} \cos (2 t-\pi / 4)", "y=1+2x"]
    fwd = verifier.verify_batch(golds, [f"\\boxed{{{a}}}" for a in answers])
    rev = verifier.verify_batch(golds[::-1], [f"\\boxed{{{a}}}" for a in answers[::-1]])
    assert [v.status for v in fwd] == [v.status for v in rev][::-1]
    assert [v.status for v in fwd] == ["incorrect", "correct", "incorrect", "correct", "correct"]
