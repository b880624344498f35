"""`train sft`: recipe parsing, max_length drop/reject, assistant-only loss mask, VAS epoch sampler, real runs.

Data: GSM8K (text) and MATH-Vision testmini (images) from ../shared/data, written with the project's schemas.
Models: tiny random Qwen2 / Qwen2-VL built by curation.core.models (seconds)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow.parquet as pq
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
REPO = Path(__file__).resolve().parents[1]


# --- data builders (shared with test_train_grpo / test_staged) ------------------------------------------------


def gsm8k_rows(n: int, start: int = 0) -> list[dict]:
    rows = []
    with open(DATA / "gsm8k" / "train.jsonl") as f:
        for i, line in enumerate(f):
            if i < start:
                continue
            if len(rows) == n:
                break
            d = json.loads(line)
            rows.append({"question": d["question"], "solution": d["answer"],
                         "answer": d["answer"].split("####")[-1].strip().replace(",", ""), "i": i})
    return rows


def write_sft_text(path: Path, n: int = 8, start: int = 0, vps: list[float] | None = None,
                   long_rows: dict[int, int] | None = None) -> Path:
    """SFT_TEXT rows from GSM8K: user question -> assistant worked solution.  ``long_rows`` {row: repeats}
    makes chosen rows long by repeating the solution (real text, just longer)."""
    from curation.core.io import write_parquet_atomic
    from curation.core.schema import to_table

    rows = []
    for k, r in enumerate(gsm8k_rows(n, start)):
        sol = r["solution"].replace("####", "The answer is")
        if long_rows and k in long_rows:
            sol = " ".join([sol] * long_rows[k])
        rows.append({
            "id": f"gsm8k-sft-{r['i']}", "problem_id": f"gsm8k-{r['i']}", "source": "gsm8k",
            "messages": [{"role": "user", "content": r["question"]}, {"role": "assistant", "content": sol}],
            "vps": None if vps is None else vps[k],
        })
    write_parquet_atomic(to_table(rows, "sft_text"), path)
    return path


def mathvision_rows(n: int, start: int = 0) -> list[dict]:
    rows = []
    with open(DATA / "math_vision" / "testmini.jsonl") as f:
        for i, line in enumerate(f):
            if i < start:
                continue
            if len(rows) == n:
                break
            d = json.loads(line)
            img = DATA / "math_vision" / d["image"]
            rows.append({**d, "image_bytes": img.read_bytes(), "image_name": img.name})
    return rows


def write_sft_mm(path: Path, n: int = 4) -> Path:
    from curation.core.io import write_parquet_atomic
    from curation.core.schema import to_table

    rows = []
    for r in mathvision_rows(n):
        q = r["question"].replace("<image1>", "").strip()
        rows.append({
            "id": f"mv-sft-{r['id']}", "problem_id": f"mathvision-{r['id']}", "source": "math_vision",
            "messages": [
                {"role": "user", "content": [{"type": "image", "text": None}, {"type": "text", "text": q}]},
                {"role": "assistant", "content": [{"type": "text", "text": f"The answer is \\boxed{{{r['answer']}}}."}]},
            ],
            "images": [{"bytes": r["image_bytes"], "path": r["image_name"]}],
            "vps": None,
        })
    write_parquet_atomic(to_table(rows, "sft_mm"), path)
    return path


def cpu_sft_section(out: Path, data: Path, **over) -> dict:
    sec = {
        "output_dir": str(out), "max_length": 512, "learning_rate": 1.0e-3, "max_steps": 2,
        "per_device_train_batch_size": 2, "gradient_accumulation_steps": 1, "logging_steps": 1,
        "save_strategy": "no", "gradient_checkpointing": False, "bf16": False, "use_cpu": True,
        "dataset_num_proc": None, "seed": 0, "report_to": "none", "disable_tqdm": True,
        "data": {"train": str(data)},
    }
    sec.update(over)
    return sec


# --- recipe parsing ---------------------------------------------------------------------------------------------


def test_recipe_unknown_key_is_named_with_suggestion(tmp_path):
    from training.config import RecipeError, build_grpo_recipe, build_sft_recipe

    data = write_sft_text(tmp_path / "sft.parquet", n=2)
    sec = cpu_sft_section(tmp_path / "o", data)
    sec["learnig_rate"] = 1e-5
    with pytest.raises(RecipeError, match=r"sft: unknown key 'learnig_rate' \(did you mean 'learning_rate'\?\)"):
        build_sft_recipe(sec, "m")
    g = {"output_dir": str(tmp_path / "g"), "bf16": False, "data": {"train": "x.parquet"},
         "vas": {"enabled": True, "lamda": 0.3}}
    with pytest.raises(RecipeError, match=r"grpo.vas: unknown key 'lamda' \(did you mean 'lambda'\?\)"):
        build_grpo_recipe(g, "m")
    g["vas"] = {"enabled": True, "lambda": 0.3}
    g["pad"] = {"enabled": True, "rho": 0.5, "tau_strat": 1.0}
    with pytest.raises(RecipeError, match="grpo.pad: unknown key 'tau_strat'"):
        build_grpo_recipe(g, "m")


def test_recipe_requires_max_length_and_coerces_types(tmp_path):
    from training.config import RecipeError, build_sft_recipe

    data = write_sft_text(tmp_path / "sft.parquet", n=2)
    sec = cpu_sft_section(tmp_path / "o", data)
    sec.pop("max_length")
    with pytest.raises(RecipeError, match="max_length: required"):
        build_sft_recipe(sec, "m")
    sec["max_length"] = 64
    sec["learning_rate"] = "1e-6"  # PyYAML reads 1e-6 as a string
    r = build_sft_recipe(sec, "m")
    assert r.args.learning_rate == pytest.approx(1e-6) and isinstance(r.args.learning_rate, float)
    assert r.data.train == data and r.data.on_too_long == "drop"


def test_overrides_yaml_typed_and_dotted(tmp_path):
    from training.config import RecipeError, load_grpo_recipe, load_raw

    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "model: m\n"
        "grpo:\n  output_dir: out\n  bf16: false\n  num_generations: 4\n  per_device_train_batch_size: 4\n"
        "  data: {train: rl.parquet}\n  vas: {enabled: true, lambda: 0.5}\n"
        "staged:\n  stages:\n    - {name: a, kind: grpo}\n"
    )
    r = load_grpo_recipe(recipe, ["grpo.learning_rate=1e-6", "--grpo.vas.lambda=0.25", "grpo.pad.enabled=true",
                                  "grpo.max_steps=3"])
    assert r.args.learning_rate == pytest.approx(1e-6)
    assert r.vas.lambda_ == 0.25 and r.pad.enabled is True and r.args.max_steps == 3
    raw = load_raw(recipe, ["staged.stages.0.max_steps=2"])
    assert raw["staged"]["stages"][0]["max_steps"] == 2
    with pytest.raises(RecipeError, match="expected KEY=VALUE"):
        load_raw(recipe, ["grpo.learning_rate"])
    with pytest.raises(RecipeError, match="recipe: unknown key 'gpro'"):
        load_raw(recipe, ["gpro.max_steps=1"])


@pytest.mark.parametrize("name", ["sft_7b.yaml", "mmr1_7b_grpo.yaml", "revisual_r1_7b_staged.yaml"])
def test_gpu_recipes_parse(name):
    """The published-settings recipes are valid TRL configs (bf16 needs a GPU: turned off to parse here)."""
    from training.config import build_grpo_recipe, build_sft_recipe, build_staged_recipe, load_raw

    raw = load_raw(REPO / "pipelines" / name)
    for sec in ("sft", "grpo"):
        if isinstance(raw.get(sec), dict):
            raw[sec]["bf16"] = False
    if "staged" in raw:
        st = build_staged_recipe(raw)
        assert [s.kind for s in st.stages] == ["sft", "grpo", "grpo"] and st.stages[2].freeze_vision
        assert st.stages[1].section["pad"]["enabled"] and st.stages[1].section["learning_rate"] == 1e-6
        return
    if "sft" in raw:
        r = build_sft_recipe(raw["sft"], raw["model"])
        assert r.args.max_length and "Qwen2.5-VL-7B" in r.model
    if "grpo" in raw and "staged" not in raw:
        r = build_grpo_recipe(raw["grpo"], raw["model"])
        assert r.vas.enabled and r.args.num_generations >= 4


# --- lengths / max_length ------------------------------------------------------------------------------------------


def test_max_length_drop_counts_and_excluded_table(tmp_path, tiny_qwen2_dir):
    from curation.core.models import load_processor
    from training.sft import sequence_lengths, split_too_long
    from training.utils import load_parquet_dataset

    data = write_sft_text(tmp_path / "sft.parquet", n=6, long_rows={1: 6, 4: 8})
    tok = load_processor(tiny_qwen2_dir)
    ds = load_parquet_dataset(data)
    lengths = sequence_lengths(ds, tok)
    # the lengths are the chat-templated token counts (what TRL trains on)
    ids0 = tok.apply_chat_template(ds[0]["messages"], tokenize=True, return_dict=True)["input_ids"]
    assert lengths[0] == len(ids0)
    limit = max(lengths[i] for i in (0, 2, 3, 5))
    assert lengths[1] > limit and lengths[4] > limit
    kept, n = split_too_long(ds, lengths, limit, on_too_long="drop", source=str(data),
                             excluded_path=tmp_path / "excluded.parquet")
    assert n == 2 and len(kept) == 4
    assert kept["id"] == [ds["id"][i] for i in (0, 2, 3, 5)]
    ex = pq.read_table(tmp_path / "excluded.parquet").to_pylist()
    assert [e["id"] for e in ex] == [ds["id"][1], ds["id"][4]]
    assert all(e["reason"] == "too_long" and e["step"] == "sft.max_length" for e in ex)
    assert ex[0]["detail"] == f"{lengths[1]} tokens > max_length {limit}"
    assert ex[0]["locator"] == f"{data}:1"


def test_max_length_reject_names_rows(tmp_path, tiny_qwen2_dir):
    from curation.core.models import load_processor
    from training.sft import TooLongError, sequence_lengths, split_too_long
    from training.utils import load_parquet_dataset

    data = write_sft_text(tmp_path / "sft.parquet", n=4, long_rows={2: 8})
    tok = load_processor(tiny_qwen2_dir)
    ds = load_parquet_dataset(data)
    lengths = sequence_lengths(ds, tok)
    limit = lengths[2] - 1
    with pytest.raises(TooLongError) as e:
        split_too_long(ds, lengths, limit, on_too_long="error", source=str(data), excluded_path=None)
    msg = str(e.value)
    assert f"row 2 (id={ds['id'][2]}): {lengths[2]} tokens" in msg
    assert "row 0" not in msg and f"max_length={limit}" in msg
    assert e.value.rows == [(2, ds["id"][2], lengths[2])]


def test_image_rows_count_image_tokens(tmp_path, tiny_qwen2_vl_dir):
    """Multimodal lengths include each image's expanded <|image_pad|> tokens."""
    from curation.core.models import load_processor
    from training.sft import sequence_lengths
    from training.utils import load_parquet_dataset

    data = write_sft_mm(tmp_path / "mm.parquet", n=2)
    proc = load_processor(tiny_qwen2_vl_dir)
    ds = load_parquet_dataset(data)
    with_img = sequence_lengths(ds, proc)
    text_only = ds.remove_columns("images").map(
        lambda r: {"messages": [{"role": m["role"], "content": "".join(p["text"] or "" for p in m["content"])}
                                for m in r["messages"]]})
    without = sequence_lengths(text_only, proc)
    pad_id = proc.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    out = proc.apply_chat_template(
        [{"role": "user", "content": [{"type": "image", "image": ds[0]["images"][0]}, {"type": "text", "text": "x"}]}],
        tokenize=True, return_dict=True)
    n_pad = sum(1 for t in out["input_ids"][0] if t == pad_id)
    assert n_pad >= 4
    assert with_img[0] > without[0] + n_pad - 8  # image tokens dominate the difference


# --- assistant-only loss ---------------------------------------------------------------------------------------------


def test_assistant_mask_support_detection(tiny_qwen2_dir):
    from trl.chat_template_utils import qwen2_5_chat_template

    from curation.core.models import load_processor
    from training.sft import assistant_mask_support

    tok = load_processor(tiny_qwen2_dir)
    ok, why = assistant_mask_support(tok)  # the tiny ChatML template: no markers, unknown to TRL
    assert not ok and "no {% generation %} markers" in why
    tok.chat_template = qwen2_5_chat_template  # the real Qwen2.5 template: TRL ships a training variant
    ok, why = assistant_mask_support(tok)
    assert ok and "training variant" in why


@pytest.mark.slow
def test_sft_assistant_only_labels_and_fallback(tmp_path, tiny_qwen2_dir):
    """With Qwen2.5's template, labels are -100 on system/user tokens and real ids on the assistant reply;
    with a template TRL cannot mask, a warning and completion-only loss on the assistant turn (no crash)."""
    import shutil

    from trl.chat_template_utils import qwen2_5_chat_template

    from training.config import build_sft_recipe
    from training.sft import train_sft

    model = tmp_path / "qwen25tmpl"
    shutil.copytree(tiny_qwen2_dir, model)
    cfg = json.loads((model / "tokenizer_config.json").read_text())
    cfg["chat_template"] = qwen2_5_chat_template
    (model / "tokenizer_config.json").write_text(json.dumps(cfg))
    (model / "chat_template.jinja").unlink(missing_ok=True)
    data = write_sft_text(tmp_path / "sft.parquet", n=4)

    captured = {}
    from trl import SFTTrainer

    orig = SFTTrainer._prepare_dataset

    def spy(self, *a, **k):
        ds = orig(self, *a, **k)
        captured["ds"] = ds
        captured["tok"] = a[1]
        return ds

    SFTTrainer._prepare_dataset = spy
    try:
        r = build_sft_recipe(cpu_sft_section(tmp_path / "o", data, assistant_only_loss=True, max_steps=1), str(model))
        res = train_sft(r)
        assert res.extra["assistant_only_loss"] is True
        ex = captured["ds"][0]
        tok = captured["tok"]
        labelled = [t for t, lab in zip(ex["input_ids"], ex["labels"]) if lab != -100]
        text = tok.decode(labelled)
        question = gsm8k_rows(1)[0]["question"]
        assert question[:30] not in text  # the user turn is not trained on
        assert "The answer is" in text and text.rstrip().endswith("<|im_end|>")
        assert ex["labels"][0] == -100

        # the tiny template has no markers and is unknown to TRL: warning + completion-only loss on the
        # assistant turn (rows split into prompt/completion) - the same tokens are trained, no crash
        r2 = build_sft_recipe(cpu_sft_section(tmp_path / "o2", data, assistant_only_loss=True, max_steps=1),
                              str(tiny_qwen2_dir))
        with pytest.warns(UserWarning, match="assistant_only_loss requested but unsupported"):
            res2 = train_sft(r2)
        assert res2.extra["loss_mode"] == "completion"
        ex2 = captured["ds"][0]
        tok2 = captured["tok"]
        text2 = tok2.decode([t for t, lab in zip(ex2["input_ids"], ex2["labels"]) if lab != -100])
        assert question[:30] not in text2 and "The answer is" in text2
        assert ex2["labels"][0] == -100 and ex2["labels"][-1] != -100
    finally:
        SFTTrainer._prepare_dataset = orig


# --- real runs ---------------------------------------------------------------------------------------------------------


def test_train_sft_text_drops_and_saves(tmp_path, tiny_qwen2_dir):
    from curation.core.models import load_processor
    from training.config import build_sft_recipe
    from training.sft import sequence_lengths, train_sft
    from training.utils import load_parquet_dataset

    data = write_sft_text(tmp_path / "sft.parquet", n=6, long_rows={3: 10})
    lengths = sequence_lengths(load_parquet_dataset(data), load_processor(tiny_qwen2_dir))
    limit = sorted(lengths)[-2]
    notes = []
    r = build_sft_recipe(cpu_sft_section(tmp_path / "o", data, max_length=limit), str(tiny_qwen2_dir))
    res = train_sft(r, report=notes.append)
    assert res.steps == 2 and res.dropped == 1 and res.train_rows == 5
    assert any("dropped 1 of 6 rows" in n for n in notes)
    assert res.final_loss is not None and res.final_loss > 0
    final = Path(res.final_dir)
    assert (final / "model.safetensors").exists() and (final / "result.json").exists()
    assert json.loads((final / "result.json").read_text())["steps"] == 2
    ex = pq.read_table(res.excluded_path).to_pylist()
    assert len(ex) == 1 and ex[0]["locator"].endswith(":3")


def test_train_sft_vas_epoch_sampler_follows_vps(tmp_path, tiny_qwen2_dir):
    """Rows carrying vps -> VASEpochSampler: with lambda=1 the high-VPS rows dominate the epoch."""
    from trl import SFTTrainer

    from training.config import build_sft_recipe
    from training.sft import VASSFTTrainer, train_sft
    from training.utils import load_parquet_dataset

    vps = [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.25, 0.25]
    data = write_sft_text(tmp_path / "sft.parquet", n=8, vps=vps)
    sec = cpu_sft_section(tmp_path / "o", data, max_steps=1, max_length=4096, vas={"lambda": 1.0, "epsilon": 1e-3})
    r = build_sft_recipe(sec, str(tiny_qwen2_dir))
    notes = []
    res = train_sft(r, report=notes.append)
    assert res.extra["vas"] is True and any("VAS epoch sampler" in n for n in notes)
    st = res.extra["sampler_stats"]  # the epoch the trainer drew: all 8 slots by VPS
    assert res.train_rows == 8 and st["n_vas"] == 8 and st["n_uniform"] == 0
    assert st["max_prob"] > 0.49  # each 0.25-VPS row: 0.25 / (0.5 + 6 * floor)
    assert st["min_prob"] < 1e-3
    # without vps: uniform (TRL's own sampler)
    data2 = write_sft_text(tmp_path / "sft2.parquet", n=8)
    r2 = build_sft_recipe(cpu_sft_section(tmp_path / "o2", data2, max_steps=1), str(tiny_qwen2_dir))
    res2 = train_sft(r2)
    assert res2.extra["vas"] is False
    assert issubclass(VASSFTTrainer, SFTTrainer) and len(load_parquet_dataset(data2)) == 8


def test_train_sft_multimodal_on_vl_model(tmp_path, tiny_qwen2_vl_dir):
    from training.config import build_sft_recipe
    from training.sft import train_sft

    data = write_sft_mm(tmp_path / "mm.parquet", n=4)
    r = build_sft_recipe(cpu_sft_section(tmp_path / "o", data, max_length=4096), str(tiny_qwen2_vl_dir))
    res = train_sft(r)
    assert res.steps == 2 and res.dropped == 0 and res.final_loss > 0
    from curation.core.models import load_processor

    proc = load_processor(res.final_dir)  # the saved processor reloads (no torchvision)
    assert proc.image_processor is not None and proc.chat_template
