"""curate run (flow recipes) and the run report's formulas, without models."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curation.flow import FlowError, command_argv, load_flow, run_flow
from curation.report.run import expected_zero_variance, vas_vs_uniform, write_run_report


def _recipe(tmp_path: Path, flow: str) -> Path:
    p = tmp_path / "r.yaml"
    p.write_text(flow)
    return p


def test_flow_runs_skips_and_reports_failures(tmp_path):
    marker = tmp_path / "made.txt"
    r = _recipe(tmp_path, f"""
vars: {{out: {tmp_path}}}
flow:
  - name: make
    run: ${{python}} -c "open('${{out}}/made.txt', 'w').write('x')"
    creates: ${{out}}/made.txt
""")
    res = run_flow(r)
    assert [x.status for x in res] == ["ran"] and marker.read_text() == "x"
    marker.write_text("kept")
    assert [x.status for x in run_flow(r)] == ["skipped"] and marker.read_text() == "kept"
    run_flow(r, force=True)
    assert marker.read_text() == "x"
    bad = _recipe(tmp_path, "flow:\n  - {name: boom, run: '${python} -c \"raise SystemExit(3)\"'}\n")
    with pytest.raises(FlowError, match="step 'boom' failed \\(exit 3\\)"):
        run_flow(bad)
    with pytest.raises(FlowError, match=r"unknown variable \$\{nope\}"):
        run_flow(_recipe(tmp_path, "flow:\n  - {name: a, run: 'echo ${nope}'}\n"))
    with pytest.raises(FlowError, match="did not create"):
        run_flow(_recipe(tmp_path, f"flow:\n  - {{name: a, run: 'true', creates: {tmp_path}/never}}\n"))


def test_flow_recipe_validation_and_argv():
    steps, variables = load_flow(Path(__file__).resolve().parents[1] / "pipelines" / "demo.yaml", {"out": "/x"})
    assert variables["out"] == "/x" and steps[0].name == "ingest-gsm8k"
    assert len({s.name for s in steps}) == len(steps)
    argv = command_argv("curate score --n 4")
    assert argv[1:] == ["-m", "curation.cli", "score", "--n", "4"]
    assert command_argv("train staged -c x.yaml")[2] == "training.cli"


def test_expected_zero_variance_formula():
    p = np.array([0.0, 1.0, 0.5, 0.25])
    q = np.full(4, 0.25)
    g = 4
    manual = sum(0.25 * (pi**g + (1 - pi) ** g) for pi in p)
    assert expected_zero_variance(p, q, g) == pytest.approx(manual)
    # all mass on p = 0.5 -> only 2 of 16 outcomes are constant
    assert expected_zero_variance(p, np.array([0, 0, 1.0, 0]), g) == pytest.approx(2 / 16)


def test_vas_lowers_expected_zero_variance_on_real_gsm8k_scores(tmp_path):
    """On the real GSM8K example solutions' scores, VPS-weighted sampling draws fewer zero-variance groups."""
    from curation.score.job import score_pregenerated

    data = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "gsm8k" / "example_model_solutions.jsonl"
    res = score_pregenerated(data, tmp_path / "score")
    vu = vas_vs_uniform(tmp_path / "score" / "scores.parquet", group_size=4, lam=0.5)
    print(f"\nexpected zero-variance fraction: uniform {vu['uniform']:.3f}, VAS mix {vu['vas_mix']:.3f}, "
          f"VAS only {vu['vas_only']:.3f}")
    assert vu["prompts"] == res.scores.num_rows == 1319
    assert vu["vas_only"] < vu["vas_mix"] < vu["uniform"]


def test_report_reads_numbers_from_tables(tmp_path):
    run = tmp_path / "run"
    (run / "build").mkdir(parents=True)
    stats = {"input_rows": 10, "output_rows": 7, "excluded_rows": 3, "excluded_by_reason": {"x": 3},
             "steps": [{"step": "exact_dedup", "rows_in": 10, "rows_out": 7, "excluded": {"exact_duplicate": 3}}]}
    (run / "build/stats.json").write_text(json.dumps(stats))
    (run / "score").mkdir()
    pq.write_table(pa.table({"problem_id": ["a", "b", "c"], "model": ["m"] * 3, "n": [4, 4, 4],
                             "pass_rate": [0.0, 0.5, 1.0], "vps": [0.05, 0.25, 0.05]}), run / "score/scores.parquet")
    path = write_run_report(run)
    text = path.read_text()
    assert "10 rows in = 7 kept + 3 excluded" in text and "exact_duplicate: 3" in text
    assert "prompts scored: 3;" in text and "66.7%" in text  # p in {0, 1} for 2 of 3 prompts
    assert "Not in this run folder: rl, cot, staged" in text
    assert "credible interval" not in text  # a scores table without the posterior columns
    # no tds column: the VPS split says why it is not shown, the rest of the report stands
    assert "How VPS splits between OVS and TDS" in text and "has no tds column(s)" in text
    # with tds but no ovs: MMR1's OVS p (1 - p) from the pass rate
    pq.write_table(pa.table({"problem_id": ["a", "b", "c"], "model": ["m"] * 3, "n": [4, 4, 4],
                             "pass_rate": [0.0, 0.5, 1.0], "tds": [0.5, 0.5, 0.0], "vps": [0.1, 0.3, 0.0]}),
                   run / "score/scores.parquet")
    write_run_report(run)
    sp = json.loads((run / "report/vps_split.json").read_text())
    g = {r["group"]: r for r in sp["groups"]}
    assert g["0 < p < 1"]["mean_vps_paper"] == pytest.approx(0.8 * 0.25 + 0.2 * 0.5)
    # an adaptive run: rollouts per prompt vary, posterior widths and why prompts stopped are reported
    pq.write_table(pa.table({"problem_id": list("abcdef"), "model": ["m"] * 6, "n": [4, 8, 12, 16, 32, 4],
                             "pass_rate": [0.0, 0.5, 0.25, 0.0, 0.1, 1.0], "vps": [0.1] * 6,
                             "post_lo": [0.0, 0.2, 0.1, 0.0, 0.05, 0.6], "post_hi": [0.5, 0.8, 0.5, 0.2, 0.2, 1.0]}),
                   run / "score/scores.parquet")
    (run / "score/stats.json").write_text(json.dumps({"settings": {"credible": 0.9}, "adaptive": {
        "rollouts": 76, "fraction_of_n_max": 76 / 192, "stopped_because": {"in_band": 3, "out_of_band": 3}}}))
    text = write_run_report(run).read_text()
    assert "rollouts per prompt: mean 12.67 (min 4, max 32)" in text
    assert "mean width of the 90% credible interval 0.3750" in text
    assert "adaptive scoring: 76 rollouts (39.6% of n_max for every prompt); stopped because in_band 3" in text
