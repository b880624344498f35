"""PAD's filler rows must not change the scale of the update, for every loss type of TRL 1.16.

PAD keeps ``k' = ceil(rho N)`` rollouts of a generation batch; TRL splits the batch into
``steps_per_generation`` equal slices, so the kept rows are topped up with loss-masked filler rows.  The filler
rows add nothing to TRL's loss sums but count in its row means (grpo, sapo, luspo, dr_grpo), and a slice of
fillers only gets a micro-batch weight (bnpo).  Checked on a real tiny Qwen2 trained by the real trainer for one
optimizer step: the gradient accumulated over the step (fillers and TRL's own shuffle included) must equal the
gradient of TRL's loss on the kept rows alone (one micro-batch, no accumulation), for every loss type."""

from __future__ import annotations

import os

import pytest
import torch
from test_train_sft import gsm8k_rows
from transformers import TrainerCallback

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def position_reward(completions, **kwargs):
    """0, 1, 2, 3 for the 4 rollouts of each prompt: every group has reward variance, every advantage != 0."""
    return [float(i % 4) for i in range(len(completions))]


def _concat(slices: list[dict]) -> dict:
    out = {}
    for k, v in slices[0].items():
        if isinstance(v, torch.Tensor) and v.ndim >= 1:
            out[k] = torch.cat([s[k] for s in slices])
        elif isinstance(v, list):
            out[k] = [x for s in slices for x in s[k]]
        else:
            out[k] = v
    return out


class GradProbe(TrainerCallback):
    """At the first optimizer step: the accumulated gradient, then the gradient of TRL's own loss on the kept
    rows of the same buffered generation batch alone (``GRPOTrainer._compute_loss``, not our override)."""

    def __init__(self):
        self.trainer = None
        self.result = None

    def on_pre_optimizer_step(self, args, state, control, model=None, **kw):
        from trl.trainer.grpo_trainer import GRPOTrainer

        if self.result is not None:
            return
        tr = self.trainer
        grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
        batch = _concat(tr._buffered_inputs)
        kept = batch["completion_mask"].sum(-1) > 0  # fillers are fully masked; a kept rollout has >= 1 token
        n = kept.numel()
        ref = {k: (v[kept] if isinstance(v, torch.Tensor) and v.ndim >= 1 and v.shape[0] == n else
                   [x for x, keep in zip(v, kept.tolist()) if keep] if isinstance(v, list) and len(v) == n else v)
               for k, v in batch.items() if k != "pad_kept"}
        ref["num_items_in_batch"] = ref["completion_mask"].sum()
        model.zero_grad()
        cga, spg = tr.current_gradient_accumulation_steps, tr.args.steps_per_generation
        tr.current_gradient_accumulation_steps, tr.args.steps_per_generation = 1, 1  # one micro-batch, one step
        try:
            GRPOTrainer._compute_loss(tr, model, ref).backward()
        finally:
            tr.current_gradient_accumulation_steps, tr.args.steps_per_generation = cga, spg
        ref_grads = {n_: p.grad.detach().clone() for n_, p in model.named_parameters() if p.grad is not None}
        self.result = {"grads": grads, "ref": ref_grads, "rows": n, "kept": int(kept.sum()),
                       "slice_kept": [int((s["completion_mask"].sum(-1) > 0).sum()) for s in tr._buffered_inputs]}


def _run(tmp_path, model_dir, loss_type: str, rho: float, beta: float = 0.0) -> dict:
    from datasets import Dataset
    from trl import GRPOConfig

    from training.config import PADSpec
    from training.grpo import VASGRPOTrainer
    from training.utils import model_and_processor

    ds = Dataset.from_list([{"prompt": [{"role": "user", "content": r["question"]}]} for r in gsm8k_rows(4)])
    args = GRPOConfig(
        output_dir=str(tmp_path / loss_type), num_generations=4, per_device_train_batch_size=4,
        gradient_accumulation_steps=2, max_completion_length=8, max_steps=1, learning_rate=1e-3, beta=beta,
        loss_type=loss_type, max_grad_norm=0.0, temperature=1.0, bf16=False, use_cpu=True, seed=0,
        report_to="none", save_strategy="no", logging_steps=1, disable_tqdm=True, gradient_checkpointing=False,
        importance_sampling_level="sequence" if loss_type == "luspo" else "token",
    )
    probe = GradProbe()
    trainer = VASGRPOTrainer(
        model=str(model_dir), reward_funcs=[position_reward], args=args, train_dataset=ds,
        processing_class=model_and_processor(str(model_dir), "left")[0], callbacks=[probe],
        pad=PADSpec(enabled=True, rho=rho, tau_start=1.0, tau_end=1.0),
    )
    probe.trainer = trainer
    trainer.train()
    assert probe.result is not None
    return probe.result


def _rel_diff(a: dict, b: dict) -> float:
    num = sum(float((a[k] - b[k]).pow(2).sum()) for k in b)
    den = sum(float(b[k].pow(2).sum()) for k in b)
    assert den > 0
    return (num / den) ** 0.5


SLOW = pytest.mark.slow


@pytest.mark.parametrize("loss_type,rho,beta", [
    # 8 rollouts, rho 0.6 -> 5 kept + 1 filler: slices of 3, a row-mean loss would be scaled by 5/6
    ("grpo", 0.6, 0.0), pytest.param("sapo", 0.6, 0.0, marks=SLOW), pytest.param("dr_grpo", 0.6, 0.0, marks=SLOW),
    pytest.param("luspo", 0.6, 0.0, marks=SLOW), pytest.param("grpo", 0.6, 0.04, marks=SLOW),  # + KL term
    ("dapo", 0.6, 0.0), pytest.param("cispo", 0.6, 0.0, marks=SLOW),
    # rho 0.1 -> 1 kept + 1 filler: one slice is all filler (bnpo would weigh the step 1/2)
    pytest.param("grpo", 0.1, 0.0, marks=SLOW), ("bnpo", 0.1, 0.0), pytest.param("dapo", 0.1, 0.0, marks=SLOW),
])
def test_pad_fillers_keep_the_update_scale_of_the_kept_rows(tmp_path, tiny_qwen2_dir, loss_type, rho, beta):
    r = _run(tmp_path, tiny_qwen2_dir, loss_type, rho, beta)
    expect_kept = 5 if rho == 0.6 else 1
    assert r["kept"] == expect_kept and r["rows"] == expect_kept + 1  # fillers were really added
    assert sum(r["slice_kept"]) == expect_kept
    assert r["grads"].keys() == r["ref"].keys()
    assert _rel_diff(r["grads"], r["ref"]) < 1e-5, (loss_type, rho, r["slice_kept"])


def test_pad_with_a_row_mean_loss_needs_whole_steps_per_generation(tmp_path, tiny_qwen2_dir):
    from datasets import Dataset
    from trl import GRPOConfig

    from training.config import PADSpec
    from training.grpo import VASGRPOTrainer
    from training.utils import model_and_processor

    ds = Dataset.from_list([{"prompt": [{"role": "user", "content": r["question"]}]} for r in gsm8k_rows(4)])
    args = GRPOConfig(output_dir=str(tmp_path / "o"), num_generations=2, per_device_train_batch_size=2,
                      gradient_accumulation_steps=2, steps_per_generation=3, max_completion_length=8, max_steps=1,
                      loss_type="grpo", bf16=False, use_cpu=True, report_to="none", save_strategy="no")
    with pytest.raises(ValueError, match="steps_per_generation .3. to be a multiple of gradient_accumulation_steps"):
        VASGRPOTrainer(model=str(tiny_qwen2_dir), reward_funcs=[position_reward], args=args, train_dataset=ds,
                       processing_class=model_and_processor(str(tiny_qwen2_dir), "left")[0],
                       pad=PADSpec(enabled=True, rho=0.5))
