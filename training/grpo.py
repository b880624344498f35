"""``train grpo``: TRL ``GRPOTrainer`` + MMR1 Variance-Aware Sampling + (optional) ReVisual-R1 PAD.

:class:`VASGRPOTrainer` overrides three TRL 1.16 hooks and nothing else:

``_get_train_sampler``
    returns a :class:`training.sampler.VASSampler` (TRL's ``RepeatSampler`` contract: ``mini_repeat_count =
    num_generations``, ``batch_size = generation_batch_size // num_generations``, ``repeat_count =
    num_iterations * steps_per_generation``; a fraction ``lambda`` of each generation batch drawn by VPS, the
    rest uniformly).  Seeded from the config, identical on every rank.  Weights are re-read from the shared
    :class:`training.vps.VPSTable` before every generation batch (``refresh_every=1``) when the table can
    change (online refresh or periodic re-scoring).

``_calculate_rewards``
    TRL computes every reward function and *gathers* the rewards across processes here; after the parent
    returns, we ``gather_object`` the batch's dataset indices (column ``vas_index``) and completion texts and
    fold the groups into the VPS table (EMA on pass rate and trace diversity, no extra generation:
    ``VPSTable.update_from_flat``).  It also logs the zero-variance fraction of the groups (all
    ``num_generations`` rewards equal, so every advantage is 0), the sampler mix of this batch (VAS vs
    uniform prompts) and VPS statistics.

``_generate_and_score_completions``
    before: every ``vas.rescore_every`` optimizer steps, a full re-score of the training set with the current
    policy through the trainer's own generation engine (HF ``generate`` here, vLLM where TRL uses it) and
    reward functions, replacing each prompt's pass rate / TDS (momentum 0).  After: PAD
    (:func:`training.pad.pad_plan`) on the local batch - keep ``t_low < |A| <= t_high``, draw
    ``k' = ceil(rho N)`` by ``softmax(|A| / tau)``, ``tau`` annealed over ``max_steps``.  TRL splits the
    generation batch into ``steps_per_generation`` equal slices, so the kept rows are topped up to a
    multiple of ``steps_per_generation`` with *loss-masked* filler rows (``completion_mask = 0``, so they add
    no gradient and no tokens to ``num_items_in_batch``); an empty selection keeps ``steps_per_generation``
    fully masked rows (a no-op update that keeps every rank's collectives in step).  With several processes
    every rank tops up to the largest row count of all ranks (TRL gathers per-row tensors, which needs equal
    shapes) and every rank joins the ``num_items_in_batch`` gather.

Saving: the processor is saved part by part (no torchvision needed), the VPS table goes into every
checkpoint (``vps_table.parquet``) and is restored on resume, and ``<output_dir>/vps_final.parquet`` holds the
final table.  After a resume the sampler draws from the restored table, so the prompt stream is not
bit-identical to an uninterrupted run (the table it draws from is the one saved with the checkpoint).
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections import deque
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from trl import GRPOTrainer

from .config import GRPORecipe
from .sampler import VASSampler
from .utils import (
    FINAL_DIR,
    ProcessorSaveMixin,
    TrainResult,
    finish_run,
    freeze_vision_tower,
    last_checkpoint,
    last_logged,
    load_parquet_dataset,
    progress_callback,
)

__all__ = ["VASGRPOTrainer", "build_vps_table", "train_grpo", "completion_texts"]

log = logging.getLogger(__name__)

VPS_CKPT_FILE = "vps_table.parquet"
VPS_FINAL_FILE = "vps_final.parquet"
# Multi-process debugging/tests: when set, every rank appends JSON lines to <dir>/rank<R>.jsonl - the chunks
# its VAS sampler draws, the dataset indices of its local batch slice, the gathered (keys, accuracy rewards,
# texts) fed to the online VPS update (main process), its final VPS values and the files it saves.
DEBUG_ENV = "RLCURATE_TRAIN_DEBUG_DIR"


def debug_event(rank: int, event: str, **data: Any) -> None:
    """Append ``{"event": event, **data}`` to ``$RLCURATE_TRAIN_DEBUG_DIR/rank<rank>.jsonl`` (no-op when unset)."""
    d = os.environ.get(DEBUG_ENV)
    if not d:
        return
    Path(d).mkdir(parents=True, exist_ok=True)
    with open(Path(d) / f"rank{rank}.jsonl", "a") as f:
        f.write(json.dumps({"event": event, **data}, default=float) + "\n")


def completion_texts(completions: list) -> list[str]:
    """Plain text of TRL completions (conversational ``[{"role": "assistant", "content": ...}]`` or strings)."""
    out = []
    for c in completions:
        if isinstance(c, str):
            out.append(c)
        elif isinstance(c, list):
            parts = []
            for m in c:
                content = m.get("content") if isinstance(m, dict) else m
                if isinstance(content, list):
                    content = "".join(p.get("text") or "" for p in content if isinstance(p, dict))
                parts.append(content or "")
            out.append("".join(parts))
        else:
            out.append(str(c))
    return out


class TrackingVASSampler(VASSampler):
    """Remembers the last chunks it drew (indices + VAS/uniform flags) so the trainer can log the mix of
    the batch it is scoring (the dataloader runs ahead, so a short queue, matched by index set)."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.drawn: deque = deque(maxlen=256)
        self.on_chunk: Callable[[int, list, list], None] | None = None  # debug hook (epoch, indices, is_vas)

    def _chunks(self, epoch):
        for idx, is_vas in super()._chunks(epoch):
            self.drawn.append((list(idx), list(is_vas)))
            if self.on_chunk is not None:
                self.on_chunk(epoch, idx, is_vas)
            yield idx, is_vas

    def pop_matching(self, keys: set) -> tuple[int, int] | None:
        """(n_vas, n_uniform) of the drawn chunk whose index set equals ``keys``; older chunks are dropped."""
        while self.drawn:
            idx, flags = self.drawn.popleft()
            if set(idx) == keys:
                return sum(flags), len(flags) - sum(flags)
        return None


class VASGRPOTrainer(ProcessorSaveMixin, GRPOTrainer):
    """GRPOTrainer with Variance-Aware Sampling, online VPS refresh and optional PAD (module docstring)."""

    def __init__(self, *args, vps_table=None, vas=None, pad=None, accuracy_reward: str | None = None, **kwargs):
        self.vps_table = vps_table
        self.vas_spec = vas
        self.pad_spec = pad
        self.pad_config = pad.to_pad_config() if (pad is not None and pad.enabled) else None
        self._accuracy_name = accuracy_reward
        self._rescoring = False
        self._last_rescore_block = 0
        self.vas_sampler = None
        self.run_stats = {"groups": 0, "zero_var_groups": 0, "acc_groups": 0, "acc_zero_var_groups": 0,
                          "n_vas": 0, "n_uniform": 0, "pad_kept": 0, "pad_total": 0, "pad_empty": 0,
                          "rescores": 0}
        super().__init__(*args, **kwargs)
        self._pad_gen = torch.Generator().manual_seed(int(self.args.seed) + 1)
        self._debug("start", world_size=self.accelerator.num_processes, pid=os.getpid())

    def _debug(self, event: str, **data: Any) -> None:
        debug_event(self.accelerator.process_index, event, **data)

    # -- sampler ------------------------------------------------------------------------------------

    def _vas_enabled(self) -> bool:
        return self.vas_spec is not None and bool(self.vas_spec.enabled) and self.vps_table is not None

    def _get_train_sampler(self, dataset=None):
        if not self._vas_enabled():
            return super()._get_train_sampler(dataset)
        spec = self.vas_spec
        dynamic = spec.refresh == "online" or spec.rescore_every > 0
        self.vas_sampler = TrackingVASSampler.for_grpo(
            self, self.vps_table, dataset,
            vas_fraction=spec.lambda_,
            seed=spec.seed if spec.seed is not None else self.args.seed,
            epsilon=spec.epsilon,
            refresh_every=1 if dynamic else None,
        )
        if os.environ.get(DEBUG_ENV):
            self.vas_sampler.on_chunk = lambda e, idx, v: self._debug(
                "sampler_chunk", epoch=int(e), indices=[int(i) for i in idx], is_vas=[bool(x) for x in v])
        return self.vas_sampler

    # -- rewards: online VPS refresh + logging ---------------------------------------------------------

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        if not self.model.training or self._rescoring:
            return rewards_per_func
        from accelerate.utils import gather_object

        from .vps import INDEX_COLUMN

        G = self.num_generations
        mode = "train"
        # zero-variance groups over the weighted total reward (TRL's frac_reward_zero_std) and over accuracy
        w = self.reward_weights.to(rewards_per_func.device)
        total = (rewards_per_func * w.unsqueeze(0)).nansum(dim=1).view(-1, G)
        zero = (total.max(dim=1).values - total.min(dim=1).values).abs() < 1e-9
        self.run_stats["groups"] += int(zero.numel())
        self.run_stats["zero_var_groups"] += int(zero.sum())
        acc_col = self._accuracy_column()
        if acc_col is not None:
            acc = rewards_per_func[:, acc_col].view(-1, G)
            az = torch_nan_ptp(acc) < 1e-9
            self.run_stats["acc_groups"] += int(az.numel())
            self.run_stats["acc_zero_var_groups"] += int(az.sum())
            self._metrics[mode]["vas/zero_variance_frac_accuracy"].append(float(az.float().mean()))
        self._metrics[mode]["vas/zero_variance_frac"].append(float(zero.float().mean()))

        keys = gather_object([int(x[INDEX_COLUMN]) for x in inputs]) if INDEX_COLUMN in inputs[0] else None
        if keys is not None:
            self._debug("batch", local_keys=[int(x[INDEX_COLUMN]) for x in inputs])
        if keys is not None and self.vas_sampler is not None:
            mix = self.vas_sampler.pop_matching(set(keys))
            if mix is not None:
                self.run_stats["n_vas"] += mix[0]
                self.run_stats["n_uniform"] += mix[1]
                self._metrics[mode]["vas/batch_n_vas"].append(float(mix[0]))
                self._metrics[mode]["vas/batch_n_uniform"].append(float(mix[1]))
        if self.vps_table is not None and keys is not None and acc_col is not None:
            if self.vas_spec is None or self.vas_spec.refresh == "online":
                texts = gather_object(completion_texts(completions))
                if self.accelerator.is_main_process:
                    self._debug("update", keys=keys, rewards=rewards_per_func[:, acc_col].tolist(), texts=texts,
                                group_size=G)
                self.vps_table.update_from_flat(keys, rewards_per_func[:, acc_col], texts, group_size=G)
            st = self.vps_table.stats()
            for k in ("vps_mean", "vps_min", "vps_max", "pass_rate_mean", "observed_frac"):
                self._metrics[mode][f"vps/{k.replace('vps_', '')}"].append(st[k])
        return rewards_per_func

    def _accuracy_column(self) -> int | None:
        names = list(self.reward_func_names)
        if self._accuracy_name in names:
            return names.index(self._accuracy_name)
        for i, n in enumerate(names):
            if "accuracy" in n:
                return i
        return None

    # -- generation batch: re-score before, PAD after ---------------------------------------------------

    def _generate_and_score_completions(self, inputs):
        if self.model.training:
            self._maybe_rescore()
        out = super()._generate_and_score_completions(inputs)
        if self.pad_config is not None and self.model.training:
            out = self._apply_pad(out)
        return out

    def _maybe_rescore(self) -> None:
        spec = self.vas_spec
        if spec is None or spec.rescore_every <= 0 or self.vps_table is None:
            return
        block = self.state.global_step // spec.rescore_every
        if self.state.global_step == 0 or block <= self._last_rescore_block:
            return
        self._last_rescore_block = block
        self.rescore_all()

    def rescore_all(self) -> dict:
        """Re-score every training prompt with ``num_generations`` rollouts of the current policy and reset
        its pass rate / TDS to the observed values (momentum 0).  Metrics and token counters touched by the
        generation are restored, so the training logs only show the re-score's own metrics."""
        from accelerate.utils import gather_object
        from trl.data_utils import prepare_multimodal_messages

        from .vps import INDEX_COLUMN

        t0 = time.perf_counter()
        ds = self.train_dataset
        n = len(ds)
        world, rank = self.accelerator.num_processes, self.accelerator.process_index
        G = self.num_generations
        per_call = max(1, self.args.generation_batch_size // G // world)
        mine = list(range(rank, n, world))
        share = -(-n // world)
        mine += [mine[-1]] * (share - len(mine)) if mine else [0] * share
        acc_col = self._accuracy_column()
        saved_metrics = {k: len(v) for k, v in self._metrics["train"].items()}
        saved_tokens = self.state.num_input_tokens_seen
        keys_all, rewards_all, texts_all = [], [], []
        self._rescoring = True
        try:
            for start in range(0, len(mine), per_call):
                rows = [ds[i] for i in mine[start : start + per_call]]
                inputs = [r for r in rows for _ in range(G)]
                prompts = []
                for r in inputs:
                    imgs = r.get("images") if "images" in r else None
                    prompts.append(prepare_multimodal_messages(r["prompt"], images=imgs) if imgs else r["prompt"])
                _, completion_ids, _, completions, *_ = self._generate(prompts)
                rewards = self._calculate_rewards(inputs, prompts, completions, completion_ids)
                keys_all += gather_object([int(r[INDEX_COLUMN]) for r in inputs])
                texts_all += gather_object(completion_texts(completions))
                rewards_all.append(rewards[:, acc_col].detach().cpu().numpy())
        finally:
            self._rescoring = False
            for k, v in self._metrics["train"].items():
                del v[saved_metrics.get(k, 0):]
            self.state.num_input_tokens_seen = saved_tokens
        m = self.vps_table.config.momentum
        self.vps_table.config.momentum = 0.0
        try:
            stats = self.vps_table.update_from_flat(keys_all, np.concatenate(rewards_all), texts_all, group_size=G)
        finally:
            self.vps_table.config.momentum = m
        self.run_stats["rescores"] += 1
        self._metrics["train"]["vas/rescore_seconds"].append(time.perf_counter() - t0)
        return stats

    def _apply_pad(self, out: dict) -> dict:
        import torch
        from trl.trainer.utils import split_pixel_values_by_grid, unsplit_pixel_values_by_grid

        from .pad import pad_plan

        adv = out["advantages"]
        n = adv.shape[0]
        spg = self.args.steps_per_generation
        total = self.state.max_steps if self.state.max_steps and self.state.max_steps > 0 else 1
        sel = pad_plan(adv, self.pad_config, step=self.state.global_step, total_steps=total,
                       generator=self._pad_gen)
        kept = sel.indices.tolist()
        mode = "train"
        self._metrics[mode]["pad/kept_frac"].append(len(kept) / n if n else 0.0)
        self._metrics[mode]["pad/eligible_frac"].append(sel.n_eligible / n if n else 0.0)
        self._metrics[mode]["pad/tau"].append(sel.tau)
        self._metrics[mode]["pad/empty"].append(float(sel.empty))
        # top up to a multiple of steps_per_generation (TRL splits the batch into that many equal slices)
        target = max(spg, -(-len(kept) // spg) * spg)
        counts = [len(kept), n, int(sel.empty)]
        if self.accelerator.num_processes > 1:
            # every rank must keep the same number of rows: TRL gathers per-row tensors in compute_loss
            # (all_gather needs equal shapes), so each rank tops up to the largest target of all ranks
            # (<= n: n is per_device_train_batch_size * steps_per_generation on every rank); the run's PAD
            # counts are summed over ranks
            g = self.accelerator.gather(torch.tensor([[target, *counts]], device=adv.device)).view(-1, 4)
            target = int(g[:, 0].max())
            counts = [int(x) for x in g[:, 1:].sum(dim=0)]
        self.run_stats["pad_kept"] += counts[0]
        self.run_stats["pad_total"] += counts[1]
        self.run_stats["pad_empty"] += counts[2]
        rest = [i for i in range(n) if i not in set(kept)]
        fillers = rest[: target - len(kept)]
        order = kept + fillers
        # No early return when this rank keeps everything: num_items_in_batch is a sum over *all* ranks, so
        # every rank must join the gather below (a rank skipping it would deadlock the others, or leave a
        # stale global token count).
        batch = split_pixel_values_by_grid(out)
        index = torch.tensor(order, dtype=torch.long, device=adv.device)
        new: dict[str, Any] = {}
        for k, v in batch.items():
            if isinstance(v, torch.Tensor) and v.ndim >= 1 and v.shape[0] == n:
                new[k] = v.index_select(0, index.to(v.device))
            elif isinstance(v, list) and len(v) == n:
                new[k] = [v[i] for i in order]
            else:
                new[k] = v
        if fillers:
            filler_mask = torch.zeros(len(order), dtype=torch.bool, device=adv.device)
            filler_mask[len(kept):] = True
            cm = new["completion_mask"].clone()
            cm[filler_mask.to(cm.device)] = 0
            new["completion_mask"] = cm
            new["advantages"] = new["advantages"].masked_fill(filler_mask.to(new["advantages"].device), 0.0)
        loss_mask = new["completion_mask"] if "tool_mask" not in new else new["completion_mask"] * new["tool_mask"]
        new["num_items_in_batch"] = self.accelerator.gather(loss_mask.sum()).sum()
        return unsplit_pixel_values_by_grid(new)

    # -- checkpoints ----------------------------------------------------------------------------------

    def _save_checkpoint(self, model, trial):
        super()._save_checkpoint(model, trial)
        if self.vps_table is not None and self.args.should_save:
            from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

            ckpt = Path(self._get_output_dir(trial=trial)) / f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
            if ckpt.is_dir():
                self.vps_table.save(ckpt / VPS_CKPT_FILE)
                self._debug("save", path=str(ckpt / VPS_CKPT_FILE))


def torch_nan_ptp(x):
    """Per-row max - min ignoring NaN (rows all NaN -> 0)."""
    import torch

    hi = torch.where(torch.isnan(x), torch.full_like(x, -math.inf), x).max(dim=1).values
    lo = torch.where(torch.isnan(x), torch.full_like(x, math.inf), x).min(dim=1).values
    d = hi - lo
    return torch.where(torch.isfinite(d), d, torch.zeros_like(d))


def build_vps_table(dataset: Any, recipe: GRPORecipe):
    """The shared :class:`training.vps.VPSTable`: initial pass rate / TDS from ``vas.scores`` (joined on
    ``problem_id``) or the dataset's own ``pass_rate`` / ``tds`` columns; unscored prompts start on the prior."""
    from .vps import VPSConfig, VPSTable

    v = recipe.vas
    cfg = VPSConfig(alpha=v.alpha, beta=v.beta, momentum=v.momentum, tds_metric=v.tds_metric)
    return VPSTable.from_dataset(dataset, config=cfg, scores=str(v.scores) if v.scores else None)


def _load_rl_dataset(recipe: GRPORecipe):
    from .vps import INDEX_COLUMN

    ds = load_parquet_dataset(recipe.data.train, limit=recipe.data.limit, required=("prompt",))
    if INDEX_COLUMN in ds.column_names:
        ds = ds.remove_columns(INDEX_COLUMN)
    return ds.add_column(INDEX_COLUMN, list(range(len(ds))))


def train_grpo(
    recipe: GRPORecipe,
    *,
    resume: bool = True,
    progress: Callable[[str, int | None], Callable[[int], None]] | None = None,
    report: Callable[[str], None] | None = None,
    freeze_vision: bool = False,
    callbacks: list | None = None,
) -> TrainResult:
    """Run GRPO (+VAS, +PAD) from a recipe; returns a :class:`~training.utils.TrainResult`.

    ``freeze_vision``: ``requires_grad_(False)`` on the vision tower before training (ReVisual-R1 stage 3)."""
    from .rewards import build_reward_funcs
    from .utils import check_single_process_gpus, model_and_processor, resolve_attn_implementation

    say = report or (lambda s: log.info(s))
    t0 = time.perf_counter()
    args = recipe.args
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    model_dir = recipe.model
    processing_class, vl_model = model_and_processor(model_dir, "left")

    dataset = _load_rl_dataset(recipe)
    has_images = "images" in dataset.column_names and any(dataset["images"][: min(len(dataset), 64)])
    if has_images and not vl_model:
        raise ValueError(f"{recipe.data.train} has images but {model_dir} is not a vision-language model")
    if len(dataset) * args.num_generations < args.generation_batch_size:
        raise ValueError(
            f"{recipe.data.train}: {len(dataset)} prompts cannot fill one generation batch of "
            f"{args.generation_batch_size // args.num_generations} prompts"
        )

    funcs, weights = build_reward_funcs(recipe.rewards)
    args.reward_weights = list(weights)
    names = [getattr(f, "__name__", type(f).__name__) for f in funcs]
    acc_name = next((n for n in names if "accuracy" in n), None)
    say("rewards: " + ", ".join(f"{n} x{w:g}" for n, w in zip(names, weights)))

    table = None
    vas = recipe.vas
    if vas.enabled:
        if acc_name is None and vas.refresh == "online":
            raise ValueError("vas.refresh=online needs an accuracy reward (rewards: {accuracy: 1.0, ...})")
        table = build_vps_table(dataset, recipe)
        st = table.stats()
        say(f"VAS: lambda={vas.lambda_}, refresh={vas.refresh}, rescore_every={vas.rescore_every}; initial VPS "
            f"mean {st['vps_mean']:.3f} (min {st['vps_min']:.3f}, max {st['vps_max']:.3f})")
    else:
        say("sampler: uniform (TRL RepeatSampler)")
    if recipe.pad.enabled:
        p = recipe.pad
        say(f"PAD: rho={p.rho}, |A| in ({p.t_low}, {p.t_high}], tau {p.tau_start} -> {p.tau_end} ({p.schedule})")

    ckpt = last_checkpoint(out) if resume else None
    if ckpt and table is not None and (Path(ckpt) / VPS_CKPT_FILE).exists():
        from .vps import VPSTable

        saved = VPSTable.load(Path(ckpt) / VPS_CKPT_FILE, config=table.config)
        table.load_state_dict({"table": saved.to_table(), "version": 0, "total_groups": 0, "total_zero_var": 0})
        say(f"restored the VPS table from {ckpt}")

    check_single_process_gpus(args, "grpo")
    resolve_attn_implementation(args)
    cbs = list(callbacks or [])
    if progress:
        cbs.append(progress_callback(progress, "grpo"))
    trainer = VASGRPOTrainer(
        model=model_dir,
        reward_funcs=funcs,
        args=args,
        train_dataset=dataset,
        processing_class=processing_class,
        callbacks=cbs,
        vps_table=table,
        vas=vas,
        pad=recipe.pad,
        accuracy_reward=acc_name,
    )
    frozen = freeze_vision_tower(trainer.model) if freeze_vision else 0
    if frozen:
        say(f"vision tower frozen ({frozen:,} parameters)")
    if ckpt:
        say(f"resuming from {ckpt}")
    elif table is not None and vas.score_at_start:
        trainer.model.train()
        t1 = time.perf_counter()
        trainer.rescore_all()
        trainer.run_stats["rescores"] -= 1
        st = table.stats()
        say(f"scored {len(dataset)} prompts x {args.num_generations} with the starting policy in "
            f"{time.perf_counter() - t1:.1f}s: pass rate mean {st['pass_rate_mean']:.3f}, VPS mean "
            f"{st['vps_mean']:.3f} (min {st['vps_min']:.3f}, max {st['vps_max']:.3f})")
    train_out = trainer.train(resume_from_checkpoint=ckpt)
    if table is not None and trainer.args.should_save:
        table.save(out / VPS_FINAL_FILE)
        trainer._debug("save", path=str(out / VPS_FINAL_FILE))
    if table is not None:
        trainer._debug("final_vps", vps=table.vps_by_index().tolist())
    hist = trainer.state.log_history
    rs = trainer.run_stats
    zv = rs["zero_var_groups"] / rs["groups"] if rs["groups"] else None
    result = TrainResult(
        kind="grpo",
        output_dir=str(out),
        final_dir=str(out / FINAL_DIR),
        steps=int(trainer.state.global_step),
        train_rows=len(dataset),
        final_loss=last_logged(hist, "loss") if last_logged(hist, "loss") is not None else train_out.training_loss,
        final_reward=last_logged(hist, "reward"),
        zero_variance_frac=zv,
        seconds=round(time.perf_counter() - t0, 2),
        resumed_from=ckpt,
        extra={
            **rs,
            "zero_variance_frac_accuracy": (rs["acc_zero_var_groups"] / rs["acc_groups"]) if rs["acc_groups"] else None,
            "vas": bool(vas.enabled),
            "pad": bool(recipe.pad.enabled),
            "frozen_vision_params": frozen,
            "vps": table.stats() if table is not None else None,
            "rewards": dict(zip(names, weights)),
            "logged_metrics": sorted({k for rec in hist for k in rec}),
        },
    )
    return finish_run(trainer, result)
