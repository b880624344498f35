"""Helpers of scripts/gpu_smoke.sh: build the inputs, then read what the runs wrote and print one
``CHECK name: PASS|FAIL (detail)`` line per check.  Everything comes from the repository (a tiny random
Qwen2.5-VL, pipelines/demo_data's GSM8K and MATH-Vision problems with their images) - no Hub, no shared data.

    python scripts/gpu_smoke.py prepare WORK
    python scripts/gpu_smoke.py check-score WORK/score_a WORK/score_b DEVICE
    python scripts/gpu_smoke.py check-staged WORK/staged LOG DEVICE [--zero3]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "pipelines" / "demo_data"


def check(name: str, ok: bool, detail: str = "") -> bool:
    print(f"CHECK {name}: {'PASS' if ok else 'FAIL'}" + (f" ({detail})" if detail else ""), flush=True)
    return ok


def prepare(work: Path) -> None:
    """The tiny Qwen2.5-VL (+ tokenizer), the SFT table and the text RL table (the multimodal RL table comes
    from `curate ingest` -> `curate score` -> `curate rl-set` in the shell script)."""
    from curation.core.io import write_parquet_atomic
    from curation.core.models import build_tiny_qwen2_vl, build_tiny_tokenizer
    from curation.core.schema import to_table

    work.mkdir(parents=True, exist_ok=True)
    tok = build_tiny_tokenizer(work / "tokenizer")
    build_tiny_qwen2_vl(work / "tiny_qwen2_5_vl", variant="qwen2_5_vl", tokenizer_dir=tok, hidden=128, heads=2)
    rows = [json.loads(x) for x in (DEMO / "gsm8k" / "train_sample.jsonl").read_text().splitlines() if x.strip()]
    sft, rl = [], []
    for i, r in enumerate(rows[:48]):
        gold = r["answer"].split("####")[-1].strip().replace(",", "")
        sol = r["answer"].replace("####", "The answer is")
        sft.append({"id": f"gsm8k-sft-{i}", "problem_id": f"gsm8k-{i}", "source": "gsm8k",
                    "messages": [{"role": "user", "content": r["question"]}, {"role": "assistant", "content": sol}],
                    "vps": None})
        rl.append({"problem_id": f"gsm8k-{i}", "source": "gsm8k",
                   "prompt": [{"role": "user", "content": r["question"] + " Put the final answer in \\boxed{}."}],
                   "answer": gold, "options": None, "pass_rate": None, "ovs": None, "tds": None, "vps": None})
    write_parquet_atomic(to_table(sft, "sft_text"), work / "sft.parquet")
    write_parquet_atomic(to_table(rl, "rl_text"), work / "rl_text.parquet")
    print(f"prepared {work}: tiny_qwen2_5_vl, sft.parquet ({len(sft)} rows), rl_text.parquet ({len(rl)} rows)")


def check_score(a: Path, b: Path, device: str) -> bool:
    import pyarrow.parquet as pq

    ok = True
    ra, rb = pq.read_table(a / "rollouts.parquet"), pq.read_table(b / "rollouts.parquet")
    key = ["problem_id", "sample"]
    cols = [c for c in ("problem_id", "sample", "text", "num_tokens", "verdict") if c in ra.column_names]
    sa = ra.select(cols).sort_by([(k, "ascending") for k in key]).to_pylist()
    sb = rb.select(cols).sort_by([(k, "ascending") for k in key]).to_pylist()
    # the generation settings the resumable job was started with (curation.generation.jobs)
    opts = json.loads((a / "_work" / "rollouts.job.json").read_text()).get("engine_options", {})
    ok &= check("score_engine_hf_bf16", opts.get("dtype") == "bfloat16" and opts.get("device", device) == device,
                f"engine options {opts}")
    ex = pq.read_table(a / "excluded.parquet").to_pylist() if (a / "excluded.parquet").exists() else []
    n_problems = pq.read_table(a / "scores.parquet").num_rows
    ok &= check("score_images_reach_the_vlm", n_problems >= 40 and not any(e.get("reason") == "needs_vision" for e in ex),
                f"{n_problems} scored problems, {len(ex)} excluded")
    ok &= check("score_rerun_identical_rollouts", len(sa) == len(sb) > 0 and sa == sb,
                f"{len(sa)} rollouts; {sum(x != y for x, y in zip(sa, sb))} differ")
    return ok


def _safetensors(path: Path) -> dict:
    from safetensors.torch import load_file

    out = {}
    for f in sorted(path.glob("*.safetensors")):
        out.update(load_file(str(f)))
    return out


def check_staged(staged: Path, log: Path, device: str, zero3: bool) -> bool:
    tag = "zero3_" if zero3 else "staged_"
    text = log.read_text(errors="replace") if log.exists() else ""
    ok = True
    summary_file = staged / "summary.json"
    if not check(f"{tag}finished", summary_file.exists(), str(summary_file)):
        print(text[-3000:])
        return False
    summary = json.loads(summary_file.read_text())
    statuses = [s["status"] for s in summary["stages"]]
    ok &= check(f"{tag}three_stages_trained", statuses == ["trained"] * 3, str(statuses))
    started = " ".join(text.split()).count("- in its own process")  # rich may wrap the line
    ok &= check(f"{tag}each_stage_own_process", started == 3, f"{started} stage processes started")
    res = {s["name"]: json.loads((Path(s["checkpoint"]) / "result.json").read_text()) for s in summary["stages"]}
    runs = {k: v["extra"].get("run", {}) for k, v in res.items()}
    ok &= check(f"{tag}on_{device}", all(r.get("device", "").startswith(device) for r in runs.values()),
                str({k: r.get("device") for k, r in runs.items()}))
    ok &= check(f"{tag}bf16_mixed_precision_fp32_master",
                all(r.get("mixed_precision") == "bf16" and r.get("master_dtype") == "torch.float32"
                    for r in runs.values()),
                str({k: (r.get("mixed_precision"), r.get("param_dtype"), r.get("master_dtype")) for k, r in runs.items()}))
    ok &= check(f"{tag}gradient_checkpointing", all(r.get("gradient_checkpointing") for r in runs.values()))
    if zero3:
        ok &= check(f"{tag}deepspeed", all(r.get("distributed_type") == "DEEPSPEED" for r in runs.values()),
                    str({k: r.get("distributed_type") for k, r in runs.items()}))
        parts = [p for n in res for p in (staged / n).rglob("*optim_states.pt")]
        ok &= check(f"{tag}zero_checkpoints", any("zero_pp_rank_0" in p.name for p in parts), f"{len(parts)} files")
    import importlib.util

    want = "flash_attention_2" if (device == "cuda" and importlib.util.find_spec("flash_attn")) else "sdpa"
    attn = {k: r.get("attn_implementation") for k, r in runs.items()}
    ok &= check(f"{tag}attn_implementation_{want}", all(a == want for a in attn.values()), str(attn))
    mm, txt = res["mm_rl"]["extra"], res["text_rl"]["extra"]
    ok &= check(f"{tag}reference_model_kl_logged", all("kl" in r["extra"].get("logged_metrics", [])
                                                       for r in (res["mm_rl"], res["text_rl"])))
    ok &= check(f"{tag}pad", bool(mm.get("pad")) and mm.get("pad_total", 0) > 0,
                f"kept {mm.get('pad_kept')}/{mm.get('pad_total')}")
    ok &= check(f"{tag}vas_rescore", mm.get("rescores", 0) >= 1 and bool(mm.get("vas")), f"{mm.get('rescores')} re-scores")
    before = _safetensors(Path(res["mm_rl"]["final_dir"]))
    after = _safetensors(Path(res["text_rl"]["final_dir"]))
    vis = [k for k in before if "visual" in k]
    same = bool(vis) and all((before[k] == after[k]).all() for k in vis)
    moved = any(not (before[k] == after[k]).all() for k in before if "visual" not in k)
    ok &= check(f"{tag}frozen_vision_bit_identical", same and moved and txt.get("frozen_vision_params", 0) > 0,
                f"{len(vis)} vision tensors, {txt.get('frozen_vision_params')} frozen parameters, language model moved: {moved}")
    return ok


def main(argv: list[str]) -> int:
    cmd = argv[0]
    if cmd == "prepare":
        prepare(Path(argv[1]))
        return 0
    if cmd == "check-score":
        return 0 if check_score(Path(argv[1]), Path(argv[2]), argv[3]) else 1
    if cmd == "check-staged":
        return 0 if check_staged(Path(argv[1]), Path(argv[2]), argv[3], "--zero3" in argv) else 1
    raise SystemExit(f"unknown command {cmd!r}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
