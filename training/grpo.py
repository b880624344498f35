"""``train grpo``: TRL ``GRPOTrainer`` + MMR1 Variance-Aware Sampling + (optional) ReVisual-R1 PAD.

:class:`VASGRPOTrainer` overrides these TRL 1.16 / transformers 5 hooks:

``_get_train_sampler``
    returns a :class:`training.sampler.VASSampler` (TRL's ``RepeatSampler`` contract: ``mini_repeat_count =
    num_generations``, ``batch_size = generation_batch_size // num_generations``, ``repeat_count =
    num_iterations * steps_per_generation``; a fraction ``lambda`` of each generation batch drawn by VPS, the
    rest uniformly; ``shuffle_dataset=False`` keeps the uniform part in dataset order).  Seeded from the config,
    identical on every rank.  Weights are re-read from the shared :class:`training.vps.VPSTable` before every
    generation batch (``refresh_every=1``) when the table can change (online refresh or periodic re-scoring).
    ``_run_epoch`` (:class:`training.utils.SamplerEpochMixin`) tells the sampler the epoch, also when a
    multi-process run resumes mid-epoch (accelerate's ``set_epoch`` does not reach it there).  With
    ``dynamic.skip`` the sampler skips prompts whose posterior predicts a zero-variance group with probability
    ``>= q`` (kept anyway with probability ``floor``) and puts another prompt in their place
    (:mod:`training.dynamic`, :class:`training.sampler.SkipRule`).

``_calculate_rewards``
    TRL computes every reward function and *gathers* the rewards across processes here; after the parent
    returns, we ``gather_object`` the batch's dataset indices (column ``vas_index``) and completion texts and
    fold the groups into the VPS table (EMA on pass rate and trace diversity, no extra generation:
    ``VPSTable.update_from_flat``).  It also logs the zero-variance fraction of the groups (all
    ``num_generations`` rewards equal, so every advantage is 0), the sampler mix of this batch (VAS vs
    uniform prompts) and VPS statistics.  Each update also scores the posterior's zero-variance prediction
    against what the groups did (``dynamic/pred_zero_var`` vs ``dynamic/obs_zero_var``), and the round's
    informative groups are kept for the refill.

``_generate_and_score_completions``
    with ``dynamic.refill``: TRL's generation and scoring, then refill rounds for further prompts until every
    rank's batch is full of informative rows, ``max_rounds`` or the rollout budget is reached; zero-variance
    rows are dropped, a short rank is topped up with loss-masked fillers (scaled like PAD's, below), old /
    reference log-probs are recomputed when merging changed a row's padding (:mod:`training.dynamic` has the
    rules; every decision is taken from gathered numbers, so all ranks run the same rounds).  Every generation
    batch logs ``dynamic/*`` (rollouts, groups generated / skipped / dropped / refilled, effective groups,
    fillers, calibration) and, with ``vas.posterior_decay < 1``, pulls the posterior toward the prior once.
    Before: every ``vas.rescore_every`` optimizer steps, a full re-score of the training set with the current
    policy through the trainer's own generation engine (HF ``generate`` here, vLLM where TRL uses it) and
    reward functions, replacing each prompt's pass rate / TDS (momentum 0); what it logs is put back, so the
    next step's metrics and completions table are the step's own (:meth:`VASGRPOTrainer.rescore_all`).
    Online refresh, re-scoring and ``score_at_start`` read the accuracy reward: without one the trainer
    refuses to start.  After: PAD (:func:`training.pad.pad_plan`) on the local batch - keep
    ``t_low < |A| <= t_high``, draw ``k' = ceil(rho N)`` by ``softmax(|A| / tau)``, ``tau`` annealed over
    ``max_steps``.  TRL splits the generation batch into ``steps_per_generation`` equal slices, so the kept rows
    are topped up to a multiple of ``steps_per_generation`` with *loss-masked* filler rows (``completion_mask
    = 0``, so they add no gradient and no tokens to ``num_items_in_batch``); an empty selection keeps
    ``steps_per_generation`` fully masked rows (a no-op update that keeps every rank's collectives in step).
    With several processes every rank tops up to the largest row count of all ranks (TRL gathers per-row
    tensors, which needs equal shapes) and every rank joins the ``num_items_in_batch`` gather.

``_prepare_inputs`` / ``_compute_loss``
    the filler rows count in TRL's row means (loss types grpo, sapo, luspo, dr_grpo) and a slice of fillers
    keeps its micro-batch weight (bnpo), which would scale each update by kept / (kept + fillers).  When a
    generation batch is buffered we count PAD's rows per slice over all ranks; each micro-batch's advantages
    and ``beta`` are then multiplied by :meth:`VASGRPOTrainer.pad_loss_scale` (formulas there), so every
    optimizer step's update equals TRL's loss on the kept rows alone.  dapo / cispo / vespo normalise by
    ``num_items_in_batch``, which already counts kept tokens only.

``_save_checkpoint`` / ``train``
    every checkpoint gets the VPS table (``vps_table.parquet``) and ``vas_state.json`` (the re-score schedule,
    the run statistics, the number of generation batches (it seeds the refill draws), the table's counters and
    each rank's PAD generator), and
    ``train(resume_from_checkpoint=...)`` restores them before TRL resumes - whoever calls it, warning when the
    checkpoint lacks them.  ``<output_dir>/vps_final.parquet`` holds the final table.  With a static table
    (``refresh: none``, no re-score) a resumed run draws exactly the prompts of the uninterrupted run; with
    online refresh the resumed sampler reads the table saved with the checkpoint, which the uninterrupted
    run's look-ahead draw (the dataloader runs one batch ahead) may not have seen yet.

The processor is saved part by part (no torchvision needed).
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
from .pad import MICROBATCH_TOKEN_MEAN_LOSSES, ROW_MEAN_LOSSES
from .sampler import VASSampler
from .utils import (
    DEBUG_ENV,
    FINAL_DIR,
    ProcessorSaveMixin,
    SamplerEpochMixin,
    TrainResult,
    debug_event,
    finish_run,
    freeze_vision_tower,
    last_checkpoint,
    last_logged,
    load_parquet_dataset,
    progress_callback,
)

__all__ = ["VASGRPOTrainer", "build_grpo_trainer", "build_vps_table", "train_grpo", "completion_texts"]

log = logging.getLogger(__name__)

VPS_CKPT_FILE = "vps_table.parquet"
VPS_FINAL_FILE = "vps_final.parquet"
RUN_STATE_FILE = "vas_state.json"  # per checkpoint: re-score schedule, run statistics, PAD generators, VPS counters

# ROW_MEAN_LOSSES / MICROBATCH_TOKEN_MEAN_LOSSES (TRL 1.16 loss types by how they normalise) live in
# training/pad.py, which `train plan` imports without loading TRL's trainer
PAD_KEPT_KEY = "pad_kept"  # per-row flag PAD adds to the generation batch (False = loss-masked filler)


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
            info = self.last_chunk if self.skip is not None else {}
            self.drawn.append((list(idx), list(is_vas), len(info.get("skipped", ())), len(info.get("explored", ()))))
            if self.on_chunk is not None:
                self.on_chunk(epoch, idx, is_vas)
            yield idx, is_vas

    def pop_matching(self, keys: set) -> dict | None:
        """``{n_vas, n_uniform, n_skipped, n_explored}`` of the drawn chunk whose index set equals ``keys``; older
        chunks are dropped."""
        while self.drawn:
            idx, flags, skipped, explored = self.drawn.popleft()
            if set(idx) == keys:
                return {"n_vas": sum(flags), "n_uniform": len(flags) - sum(flags), "n_skipped": skipped,
                        "n_explored": explored}
        return None


class VASGRPOTrainer(SamplerEpochMixin, ProcessorSaveMixin, GRPOTrainer):
    """GRPOTrainer with Variance-Aware Sampling, online VPS refresh and optional PAD (module docstring).

    ``train(resume_from_checkpoint=...)`` restores what the checkpoint holds besides TRL's own state: the VPS
    table (``vps_table.parquet``) and ``vas_state.json`` (re-score schedule, run statistics, each rank's PAD
    generator); a checkpoint without them resumes with a warning."""

    def __init__(self, *args, vps_table=None, vas=None, pad=None, dynamic=None, accuracy_reward: str | None = None,
                 **kwargs):
        self.vps_table = vps_table
        self.vas_spec = vas
        self.pad_spec = pad
        self.dynamic_spec = dynamic
        self._refilling = False  # inside a refill round's generation
        self._gen_batches = 0  # training generation batches so far (seeds the refill draws; in vas_state.json)
        self._last_round: dict | None = None  # what _calculate_rewards saw of the latest round (gathered)
        self._batch_acc: dict = {}  # this generation batch's sampler and calibration numbers
        self.pad_config = pad.to_pad_config() if (pad is not None and pad.enabled) else None
        self._accuracy_name = accuracy_reward
        self._rescoring = False
        self._last_rescore_block = 0
        self._pad_norm: list[tuple[int, int]] | None = None  # per slice of the buffered batch: global (kept, nonempty)
        self.vas_sampler = None
        self.run_stats = {"groups": 0, "zero_var_groups": 0, "acc_groups": 0, "acc_zero_var_groups": 0,
                          "n_vas": 0, "n_uniform": 0, "pad_kept": 0, "pad_total": 0, "pad_empty": 0,
                          "rescores": 0,
                          # dynamic sampling (logged for every run; skip/refill counts stay 0 when they are off)
                          "rollouts": 0, "groups_generated": 0, "effective_groups": 0.0, "groups_skipped": 0,
                          "groups_explored": 0, "groups_dropped": 0, "groups_refilled": 0, "refill_rounds": 0,
                          "filler_rows": 0, "unused_rows": 0, "budget_exhausted": 0, "calib_groups": 0, "calib_pred_zero_var": 0.0,
                          "calib_obs_zero_var": 0}
        super().__init__(*args, **kwargs)
        self._pad_gen = torch.Generator().manual_seed(int(self.args.seed) + 1)
        self._check_setup()
        self._debug("start", world_size=self.accelerator.num_processes, pid=os.getpid())

    def _check_setup(self) -> None:
        """Refuse configurations that would train on wrong numbers instead of failing T steps in."""
        spec = self.vas_spec
        if spec is not None and self.vps_table is not None and self._accuracy_column() is None:
            uses = spec.accuracy_uses()
            if uses:
                raise ValueError(
                    f"vas.{' and vas.'.join(uses)} {'needs' if len(uses) == 1 else 'need'} an accuracy reward "
                    f"(rewards: {{accuracy: 1.0, ...}}); the reward functions are {list(self.reward_func_names)}"
                )
        dyn = self.dynamic_spec
        fillers = [name for name, on in (("PAD", self.pad_config is not None),
                                         ("dynamic.refill", dyn is not None and dyn.refill.enabled)) if on]
        if fillers and self.loss_type in ROW_MEAN_LOSSES | MICROBATCH_TOKEN_MEAN_LOSSES:
            ga, spg = self.args.gradient_accumulation_steps, self.args.steps_per_generation
            if spg % ga:
                raise ValueError(
                    f"{' and '.join(fillers)} with loss_type={self.loss_type!r} needs steps_per_generation ({spg}) "
                    f"to be a multiple of gradient_accumulation_steps ({ga}): the loss is normalised over each "
                    "optimizer step's kept rollouts, so a step must not straddle two generation batches"
                )
        if dyn is not None and dyn.skip.enabled and not self._vas_enabled():
            raise ValueError("dynamic.skip needs VAS on with a VPS table (vas.enabled: true; lambda may be 0): the "
                             "posterior it reads lives in the table and the VAS sampler does the skipping")
        if dyn is not None and dyn.refill.enabled:
            from datasets import IterableDataset

            if isinstance(self.train_dataset, IterableDataset):
                raise ValueError("dynamic.refill draws further prompts by index: it needs a map-style (sized) dataset")
            if self.refill_budget() < self.args.generation_batch_size:
                raise ValueError(f"dynamic.refill.budget_rollouts ({self.refill_budget()}) is less than one generation "
                                 f"batch ({self.args.generation_batch_size} rollouts); the budget counts the first "
                                 "round too")

    def refill_budget(self) -> int:
        """Rollouts one generation batch may spend, first round included (``dynamic.refill.budget_rollouts``,
        default ``2 * generation_batch_size``)."""
        b = self.dynamic_spec.refill.budget_rollouts if self.dynamic_spec is not None else None
        return int(b) if b is not None else 2 * int(self.args.generation_batch_size)

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
            skip=self._skip_rule(),
        )
        if os.environ.get(DEBUG_ENV):
            self.vas_sampler.on_chunk = lambda e, idx, v: self._debug(
                "sampler_chunk", epoch=int(e), indices=[int(i) for i in idx], is_vas=[bool(x) for x in v])
        return self.vas_sampler

    def _skip_rule(self):
        d = self.dynamic_spec
        if d is None or not d.skip.enabled:
            return None
        from .sampler import SkipRule

        return SkipRule(q=d.skip.q, floor=d.skip.floor)

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
        # dynamic sampling: which groups of this round carry signal (weighted total reward not all equal; rows
        # no reward function scored are NaN and left out), over the gathered batch
        from .dynamic import group_informative

        scored_total = total.masked_fill(torch.isnan(rewards_per_func).all(dim=1).view(-1, G), float("nan"))
        self._last_round = {"informative": group_informative(scored_total, G).cpu(), "keys": keys}
        if keys is not None:
            self._debug("batch", step=int(self.state.global_step), local_keys=[int(x[INDEX_COLUMN]) for x in inputs],
                        refill=bool(self._refilling))
        if keys is not None and self.vas_sampler is not None and not self._refilling:
            mix = self.vas_sampler.pop_matching(set(keys))
            if mix is not None:
                self.run_stats["n_vas"] += mix["n_vas"]
                self.run_stats["n_uniform"] += mix["n_uniform"]
                self._metrics[mode]["vas/batch_n_vas"].append(float(mix["n_vas"]))
                self._metrics[mode]["vas/batch_n_uniform"].append(float(mix["n_uniform"]))
                self._batch_acc["skipped"] = mix["n_skipped"]
                self._batch_acc["explored"] = mix["n_explored"]
        if self.vps_table is not None and keys is not None and acc_col is not None:
            if self.vas_spec is None or self.vas_spec.refresh == "online":
                texts = gather_object(completion_texts(completions))
                if self.accelerator.is_main_process:
                    self._debug("update", keys=keys, rewards=rewards_per_func[:, acc_col].tolist(), texts=texts,
                                group_size=G, refill=bool(self._refilling))
                up = self.vps_table.update_from_flat(keys, rewards_per_func[:, acc_col], texts, group_size=G)
                if up["groups"]:  # calibration of the posterior's zero-variance prediction on these groups
                    acc = self._batch_acc
                    acc["calib_groups"] = acc.get("calib_groups", 0) + int(up["groups"])
                    acc["calib_pred"] = acc.get("calib_pred", 0.0) + up["pred_zero_variance_frac"] * up["groups"]
                    acc["calib_obs"] = acc.get("calib_obs", 0) + round(up["obs_zero_variance_frac"] * up["groups"])
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
        if not self.model.training:
            return super()._generate_and_score_completions(inputs)
        self._maybe_rescore()
        self._batch_acc = {}
        if self.dynamic_spec is not None and self.dynamic_spec.refill.enabled:
            out = self._generate_with_refill(inputs)
        else:
            out = super()._generate_and_score_completions(inputs)
            inf = self._last_round["informative"] if self._last_round is not None else None
            n_groups = len(inputs) * self.accelerator.num_processes // self.num_generations
            self._log_dynamic(rollouts=len(inputs) * self.accelerator.num_processes, groups=n_groups,
                              effective=float(inf.sum()) if inf is not None else float("nan"), dropped=0,
                              refilled=0, rounds=0, fillers=0, exhausted=False)
        self._gen_batches += 1
        if self.vps_table is not None and self.vps_table.config.posterior_decay < 1.0:
            # forgetting toward the prior, once per generation batch (training.vps.VPSTable.decay)
            self.vps_table.decay()
        if self.pad_config is not None:
            out = self._apply_pad(out)
        return out

    # -- dynamic sampling: refill under a budget (training/dynamic.py has the rules) -----------------------

    def _generate_with_refill(self, inputs: list) -> dict:
        """TRL's generation + scoring of ``inputs``, then refill rounds until every rank holds ``len(inputs)``
        informative rows, the round limit or the rollout budget is reached (:mod:`training.dynamic`); returns
        one generation batch of ``len(inputs)`` rows per rank, filler rows loss-masked and flagged."""
        from trl.trainer.utils import split_pixel_values_by_grid, unsplit_pixel_values_by_grid

        from .dynamic import merge_rounds, refill_prompts

        spec = self.dynamic_spec.refill
        G, world, rank = self.num_generations, self.accelerator.num_processes, self.accelerator.process_index
        n = len(inputs)
        device = self.accelerator.device
        budget = self.refill_budget()
        rounds: list[tuple[dict, list[bool]]] = []  # (split output, local informative flags)
        zero_groups: list[int] = []  # per round, its zero-variance groups (global)
        in_batch: set[int] = set()

        def run_round(rows: list) -> None:
            out = super(VASGRPOTrainer, self)._generate_and_score_completions(rows)
            info = self._last_round
            per = len(rows)
            groups = info["informative"]
            local = [bool(groups[(rank * per + i) // G]) for i in range(per)]
            rounds.append((split_pixel_values_by_grid(out), local))
            zero_groups.append(int((~groups).sum()))
            if info["keys"] is not None:
                in_batch.update(info["keys"])

        run_round(inputs)
        spent, refill_rounds, refilled = n * world, 0, 0
        exhausted = False
        while True:
            have = sum(sum(flags) for _, flags in rounds)
            rows_so_far = sum(len(flags) for _, flags in rounds)
            stats = torch.tensor([[max(0, n - have), have, rows_so_far]], device=device, dtype=torch.long)
            g = self.accelerator.gather(stats).view(-1, 3)  # every rank decides from the same numbers
            need = int(g[:, 0].max())
            if need == 0:
                break
            if refill_rounds >= spec.max_rounds:
                exhausted = True
                break
            rate = float(g[:, 1].sum()) / max(1, int(g[:, 2].sum()))
            r = refill_prompts(need, world=world, group_size=G, rate=rate,
                               max_prompts=self.args.generation_batch_size // G, budget_left=budget - spent)
            idx = self._refill_draw(r, in_batch, refill_rounds) if r else []
            unit = world // math.gcd(G, world)
            idx = idx[: len(idx) - len(idx) % unit]
            if not idx:
                exhausted = True  # the budget cannot pay for another round, or no prompt is left to draw
                break
            rows_global = [i for i in idx for _ in range(G)]
            per = len(rows_global) // world
            mine = rows_global[rank * per:(rank + 1) * per]
            self._refilling = True
            try:
                run_round([self.train_dataset[i] for i in mine])
            finally:
                self._refilling = False
            spent += len(rows_global)
            refill_rounds += 1
            refilled += len(idx)

        # every rank: its informative rows in generation order, then fillers (its other rows) up to n
        picks: list[list[int]] = [[] for _ in rounds]
        taken = 0
        for r_i, (_, flags) in enumerate(rounds):
            for i, ok in enumerate(flags):
                if ok and taken < n:
                    picks[r_i].append(i)
                    taken += 1
        fillers: list[list[int]] = [[] for _ in rounds]
        short = n - taken
        for r_i, (_, flags) in enumerate(rounds):
            chosen = set(picks[r_i])
            for i in range(len(flags)):
                if short and i not in chosen:
                    fillers[r_i].append(i)
                    short -= 1
        parts = [(b, picks[r_i]) for r_i, (b, _) in enumerate(rounds)] + \
                [(b, fillers[r_i]) for r_i, (b, _) in enumerate(rounds)]
        merged, shifted = merge_rounds(parts, self._tokenizer.pad_token_id)
        n_fill = n - taken
        kept = torch.arange(n, device=device) < taken
        if n_fill:
            cm = merged["completion_mask"].clone()
            cm[~kept.to(cm.device)] = 0
            merged["completion_mask"] = cm
            merged["advantages"] = merged["advantages"].masked_fill(~kept.to(merged["advantages"].device), 0.0)
        if world > 1:
            shifted = bool(self.accelerator.gather(torch.tensor([int(shifted)], device=device)).max())
        if shifted and (merged.get("old_per_token_logps") is not None or merged.get("ref_per_token_logps") is not None):
            self._recompute_logps(merged)
        loss_mask = merged["completion_mask"] if merged.get("tool_mask") is None else \
            merged["completion_mask"] * merged["tool_mask"]
        merged["num_items_in_batch"] = self.accelerator.gather(loss_mask.sum()).sum()
        merged[PAD_KEPT_KEY] = kept
        unused = sum(sum(flags) for _, flags in rounds) - taken  # informative rows that did not fit (overflow)
        tot = self.accelerator.gather(torch.tensor([[taken, n_fill, unused]], device=device)).view(-1, 3).sum(dim=0)
        self._batch_acc["unused"] = int(tot[2])
        self._log_dynamic(rollouts=spent, groups=spent // G, effective=float(tot[0]) / G, dropped=sum(zero_groups),
                          refilled=refilled, rounds=refill_rounds, fillers=int(tot[1]), exhausted=exhausted)
        self._debug("dynamic", step=int(self.state.global_step), rounds=1 + refill_rounds, rollouts=spent,
                    local_rows=int(merged["prompt_ids"].shape[0]), informative=taken, fillers=n_fill,
                    exhausted=exhausted, shifted=shifted,
                    shapes={k: list(v.shape) for k, v in merged.items() if isinstance(v, torch.Tensor)})
        return unsplit_pixel_values_by_grid(merged)

    def _refill_draw(self, k: int, in_batch: set, round_index: int) -> list[int]:
        """``k`` prompts for refill round ``round_index`` of this generation batch (:func:`training.dynamic.
        refill_draw`): without replacement, none already in the batch, by the sampler's per-slot mix (uniform
        without VAS), skip-eligible prompts let in with probability ``floor`` only; seeded by ``(seed,
        REFILL_STREAM, generation batch, round)``, identical on every rank."""
        from .dynamic import REFILL_STREAM, refill_draw

        n_rows = len(self.train_dataset)
        seed = self.vas_sampler.seed if self.vas_sampler is not None else int(self.args.seed)
        rng = np.random.default_rng([seed, REFILL_STREAM, self._gen_batches, round_index])
        weights = self.vas_sampler.slot_mix() if self.vas_sampler is not None else None
        blocked = None
        rule = self._skip_rule()
        if rule is not None and self.vas_sampler is not None:
            p0 = self.vas_sampler.zero_variance_probabilities()
            blocked = rule.eligible(p0) & (rng.random(n_rows) >= rule.floor)
        return [int(i) for i in refill_draw(rng, n_rows, k, weights=weights, exclude=sorted(in_batch),
                                            blocked=blocked)]

    def _recompute_logps(self, batch: dict) -> None:
        """``old_per_token_logps`` / ``ref_per_token_logps`` of a merged batch whose prompt padding changed, with
        the model as it generated them (nothing has been trained since): what TRL computes for that batch."""
        from trl.models.utils import disable_gradient_checkpointing
        from trl.trainer.utils import unsplit_pixel_values_by_grid, use_adapter

        b = unsplit_pixel_values_by_grid(dict(batch))
        input_ids = torch.cat([b["prompt_ids"], b["completion_ids"]], dim=1)
        attention_mask = torch.cat([b["prompt_mask"], b["completion_mask"]], dim=1)  # as _compute_loss builds it
        keep = b["completion_ids"].size(1)
        kw = {k: b.get(k) for k in ("pixel_values", "image_grid_thw", "num_images", "pixel_attention_mask",
                                    "spatial_shapes", "num_tiles", "image_sizes", "token_type_ids",
                                    "mm_token_type_ids", "image_position_ids")}
        bs = self.args.per_device_train_batch_size
        with torch.no_grad(), disable_gradient_checkpointing(self.model, self.args.gradient_checkpointing_kwargs):
            if batch.get("old_per_token_logps") is not None:
                batch["old_per_token_logps"], _, _ = self._get_per_token_logps_and_entropies(
                    self.model, input_ids, attention_mask, keep, batch_size=bs, **kw)
            if batch.get("ref_per_token_logps") is not None:
                if self.ref_model is not None:
                    batch["ref_per_token_logps"], _, _ = self._get_per_token_logps_and_entropies(
                        self.ref_model, input_ids, attention_mask, keep, batch_size=bs, **kw)
                else:
                    model = self.accelerator.unwrap_model(self.model)
                    with use_adapter(model, adapter_name="ref" if "ref" in model.peft_config else None):
                        batch["ref_per_token_logps"], _, _ = self._get_per_token_logps_and_entropies(
                            self.model, input_ids, attention_mask, keep, batch_size=bs, **kw)

    def _log_dynamic(self, *, rollouts: int, groups: int, effective: float, dropped: int, refilled: int,
                     rounds: int, fillers: int, exhausted: bool) -> None:
        """Per generation batch (global counts): ``dynamic/rollouts`` generated, ``groups_generated``,
        ``groups_skipped`` / ``groups_explored`` by the sampler's skip rule, ``groups_dropped`` (zero-variance
        groups generated and not trained on - refill only), ``groups_refilled``, ``refill_rounds``,
        ``effective_groups`` (informative groups trained on), ``filler_rows``, ``unused_rows`` (informative rows
        of the last refill round that did not fit: generated, not trained on), ``budget_exhausted``, and the
        posterior's calibration ``pred_zero_var`` / ``obs_zero_var`` (mean predicted vs observed fraction of
        all-correct-or-all-wrong groups, over the groups the online update saw)."""
        acc, rs, m = self._batch_acc, self.run_stats, self._metrics["train"]
        refill = self.dynamic_spec is not None and self.dynamic_spec.refill.enabled
        skipped, explored = int(acc.get("skipped", 0)), int(acc.get("explored", 0))
        rs["rollouts"] += int(rollouts)
        rs["groups_generated"] += int(groups)
        if effective == effective:  # not NaN
            rs["effective_groups"] += float(effective)
        rs["groups_skipped"] += skipped
        rs["groups_explored"] += explored
        rs["groups_dropped"] += int(dropped) if refill else 0
        rs["groups_refilled"] += int(refilled)
        rs["refill_rounds"] += int(rounds)
        rs["filler_rows"] += int(fillers)
        rs["unused_rows"] += int(acc.get("unused", 0))
        rs["budget_exhausted"] += int(bool(exhausted and fillers))
        for k, v in (("rollouts", rollouts), ("groups_generated", groups), ("effective_groups", effective),
                     ("groups_skipped", skipped), ("groups_explored", explored),
                     ("groups_dropped", dropped if refill else 0), ("groups_refilled", refilled),
                     ("refill_rounds", rounds), ("filler_rows", fillers), ("unused_rows", acc.get("unused", 0)),
                     ("budget_exhausted", float(bool(exhausted and fillers)))):
            m[f"dynamic/{k}"].append(float(v))
        cg = int(acc.get("calib_groups", 0))
        if cg:
            rs["calib_groups"] += cg
            rs["calib_pred_zero_var"] += float(acc["calib_pred"])
            rs["calib_obs_zero_var"] += int(acc["calib_obs"])
            m["dynamic/pred_zero_var"].append(float(acc["calib_pred"]) / cg)
            m["dynamic/obs_zero_var"].append(int(acc["calib_obs"]) / cg)
        if exhausted and fillers:
            log.info("dynamic refill: step %d trains on %d informative rollouts + %d fillers after %d refill "
                     "round(s) and %d rollouts (budget %d)", int(self.state.global_step),
                     int(effective * self.num_generations), fillers, rounds, rollouts, self.refill_budget())

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
        its pass rate / TDS to the observed values (momentum 0).  Everything the generation and the reward
        functions log - the step's metrics, TRL's pending ``log_metric`` / ``log_extra`` buffers (flushed into
        the next step's metrics and completions table) and the token counter - is put back as it was, so the
        training logs only gain the re-score's own ``vas/rescore_seconds``."""
        from accelerate.utils import gather_object
        from trl.data_utils import prepare_multimodal_messages

        from .vps import INDEX_COLUMN

        t0 = time.perf_counter()
        self._debug("rescore", step=int(self.state.global_step))
        ds = self.train_dataset
        n = len(ds)
        world, rank = self.accelerator.num_processes, self.accelerator.process_index
        G = self.num_generations
        per_call = max(1, self.args.generation_batch_size // G // world)
        mine = list(range(rank, n, world))
        share = -(-n // world)
        mine += [mine[-1]] * (share - len(mine)) if mine else [0] * share
        acc_col = self._accuracy_column()
        if acc_col is None:
            raise ValueError(f"re-scoring needs an accuracy reward; the reward functions are {list(self.reward_func_names)}")
        # Everything TRL's generation and reward code logs into: the step's metrics (some keys are *replaced*,
        # e.g. num_tokens), and the pending log_metric / log_extra buffers that the next training batch flushes.
        metrics, pending_m, pending_x = self._metrics["train"], self._pending_metrics, self._pending_extra_logs
        saved = [(d, {k: list(v) for k, v in d.items()}) for d in (metrics, pending_m, pending_x)]
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
            for d, snapshot in saved:
                d.clear()
                d.update(snapshot)
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
        # which rows are PAD's (the fillers only make the slices equal): TRL shuffles the rows and splits them
        # into steps_per_generation slices after this hook; _prepare_inputs counts the kept rows per slice
        new[PAD_KEPT_KEY] = torch.arange(len(order), device=adv.device) < len(kept)
        return unsplit_pixel_values_by_grid(new)

    # -- PAD: loss scale of the filler-padded slices ------------------------------------------------------

    def _prepare_inputs(self, generation_batch):
        buffered = self._buffered_inputs
        out = super()._prepare_inputs(generation_batch)
        if self.model.training and self._buffered_inputs is not buffered:  # a new generation batch
            slices = self._buffered_inputs
            if slices and all(PAD_KEPT_KEY in b for b in slices):
                local = torch.tensor([[int(b[PAD_KEPT_KEY].sum()), int(b[PAD_KEPT_KEY].any())] for b in slices],
                                     device=self.accelerator.device)
                glob = self.accelerator.reduce(local, reduction="sum") if self.accelerator.num_processes > 1 else local
                self._pad_norm = [(int(k), int(e)) for k, e in glob.tolist()]
            else:
                self._pad_norm = None
        return out

    def pad_loss_scale(self, inputs: dict) -> float:
        """Factor that gives a micro-batch of PAD-selected rows plus masked fillers the update scale of the kept
        rows alone.  Fillers add zero to TRL's loss sums but count in its row means, so without this the update
        of a step is scaled by kept / (kept + fillers).

        For an optimizer step made of the slices ``S`` (``current_gradient_accumulation_steps = GA`` of them,
        ``W`` processes, ``m`` rows per slice, ``K`` rows PAD kept in ``S`` over all processes):

        - row means (grpo, sapo, luspo, dr_grpo): TRL divides each slice by ``m`` (dr_grpo: ``m *
          max_completion_length``) and by ``GA``, DDP averages over ``W``; the factor ``m GA W / K`` makes the
          step's gradient the mean over its ``K`` kept rows - what TRL computes for a batch of only kept rows,
          and exactly 1 when nothing is filler (``K = m GA W``).
        - micro-batch token mean (bnpo): a slice holding only fillers contributes 0 where TRL would give it
          weight ``1 / (GA W)``; the factor ``GA W / E`` (``E`` = slices in ``S`` with a kept row, over all
          processes) restores the step's total weight to 1.
        - global token count (dapo, cispo, vespo): ``num_items_in_batch`` already counts only kept tokens: 1.

        The factor multiplies the advantages and ``beta`` (both enter TRL's per-token loss linearly, with a
        positive factor the clipping and sign tests are unchanged), so the KL term is scaled with the policy term
        while TRL's entropy bonus and auxiliary losses keep their own normalisation."""
        if not self.model.training or self._pad_norm is None or PAD_KEPT_KEY not in inputs:
            return 1.0
        ga = int(self.current_gradient_accumulation_steps)
        spg = self.args.steps_per_generation
        s = self._step % spg  # the slice TRL's _prepare_inputs handed out for this micro-step
        first = s - s % ga  # spg is a multiple of GA (checked at start), so a step's slices are consecutive
        step = self._pad_norm[first: first + ga]
        world = self.accelerator.num_processes
        if self.loss_type in ROW_MEAN_LOSSES:
            kept = sum(k for k, _ in step)
            return inputs["advantages"].shape[0] * ga * world / kept if kept else 1.0
        if self.loss_type in MICROBATCH_TOKEN_MEAN_LOSSES:
            nonempty = sum(e for _, e in step)
            return ga * world / nonempty if nonempty else 1.0
        return 1.0

    def _compute_loss(self, model, inputs):
        c = self.pad_loss_scale(inputs)
        if c == 1.0:
            return super()._compute_loss(model, inputs)
        inputs = {**inputs, "advantages": inputs["advantages"] * c}
        beta = self.beta
        self.beta = beta * c
        try:
            return super()._compute_loss(model, inputs)
        finally:
            self.beta = beta

    # -- checkpoints ----------------------------------------------------------------------------------

    def run_state(self) -> dict:
        """What a checkpoint needs besides TRL's state and the VPS table to resume this trainer exactly: the
        re-score schedule, the run statistics, the VPS table's counters and this rank's PAD generator."""
        import base64

        t = self.vps_table
        return {
            "format": 1,
            "global_step": int(self.state.global_step),
            "last_rescore_block": int(self._last_rescore_block),
            "run_stats": dict(self.run_stats),
            "generation_batches": int(self._gen_batches),
            "vps": None if t is None else {k: v for k, v in t.state_dict().items() if k != "table"},
            "pad_generator": base64.b64encode(bytes(self._pad_gen.get_state().numpy())).decode(),
        }

    def _save_checkpoint(self, model, trial):
        super()._save_checkpoint(model, trial)
        from accelerate.utils import gather_object
        from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

        from curation.core.io import write_json_atomic

        state = self.run_state()
        # every rank joins (collective); PAD draws from each rank's own generator, so all are kept
        gens = gather_object([state.pop("pad_generator")])
        if not self.args.should_save:
            return
        ckpt = Path(self._get_output_dir(trial=trial)) / f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        if not ckpt.is_dir():
            return
        if self.vps_table is not None:
            self.vps_table.save(ckpt / VPS_CKPT_FILE)
            self._debug("save", path=str(ckpt / VPS_CKPT_FILE))
        write_json_atomic({**state, "pad_generators": gens}, ckpt / RUN_STATE_FILE)
        self._debug("save", path=str(ckpt / RUN_STATE_FILE))

    def train(self, resume_from_checkpoint: str | bool | None = None, *args, **kwargs):
        """TRL's ``train``; when resuming, first restores the VPS table and :meth:`run_state` saved with the
        checkpoint (:meth:`restore_run_state`)."""
        ckpt = resume_from_checkpoint
        if ckpt is True:
            from transformers.trainer_utils import get_last_checkpoint

            ckpt = get_last_checkpoint(self.args.output_dir)  # None: transformers raises its own error
        if ckpt:
            self.restore_run_state(ckpt)
        return super().train(resume_from_checkpoint, *args, **kwargs)

    def restore_run_state(self, checkpoint: str | Path) -> list[str]:
        """Load ``vps_table.parquet`` into the shared table and apply ``vas_state.json``; warns about what the
        checkpoint lacks.  Returns notes on what was restored."""
        import base64
        import warnings

        ckpt = Path(checkpoint)
        notes: list[str] = []
        state_path = ckpt / RUN_STATE_FILE
        state = json.loads(state_path.read_text()) if state_path.exists() else None
        if self.vps_table is not None:
            from .vps import VPSTable

            if (ckpt / VPS_CKPT_FILE).exists():
                saved = VPSTable.load(ckpt / VPS_CKPT_FILE, config=self.vps_table.config)
                counters = (state or {}).get("vps") or {}
                self.vps_table.load_state_dict({
                    "version": 0, "total_groups": 0, "total_zero_var": 0, **counters, "table": saved.to_table()})
                notes.append(f"VPS table restored from {ckpt / VPS_CKPT_FILE}")
            else:
                warnings.warn(f"{ckpt} has no {VPS_CKPT_FILE}: VAS resumes from the VPS table it was given (the "
                              "initial scores), not from the one the run had reached", stacklevel=3)
        if state is None:
            warnings.warn(f"{ckpt} has no {RUN_STATE_FILE}: the re-score schedule, the run statistics and PAD's "
                          "random stream restart from scratch", stacklevel=3)
            return notes
        self._last_rescore_block = int(state["last_rescore_block"])
        self.run_stats.update(state["run_stats"])
        self._gen_batches = int(state.get("generation_batches", 0))
        gens = state.get("pad_generators") or []
        rank = self.accelerator.process_index
        if len(gens) == self.accelerator.num_processes:
            buf = base64.b64decode(gens[rank])
            self._pad_gen.set_state(torch.frombuffer(bytearray(buf), dtype=torch.uint8).clone())
        else:
            warnings.warn(f"{ckpt / RUN_STATE_FILE} holds PAD generators for {len(gens)} processes, this run has "
                          f"{self.accelerator.num_processes}: PAD's random stream restarts from the seed", stacklevel=3)
        notes.append(f"run state restored from {state_path} (step {state['global_step']})")
        self._debug("restore", checkpoint=str(ckpt), last_rescore_block=self._last_rescore_block)
        for n in notes:
            log.info(n)
        return notes


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
    cfg = VPSConfig(alpha=v.alpha, beta=v.beta, momentum=v.momentum, tds_metric=v.tds_metric, vps_from=v.vps_from,
                    normalize_ovs=v.normalize_ovs, posterior_decay=v.posterior_decay,
                    posterior_prior=v.posterior_prior)
    return VPSTable.from_dataset(dataset, config=cfg, scores=str(v.scores) if v.scores else None)


def _load_rl_dataset(recipe: GRPORecipe):
    from .vps import INDEX_COLUMN

    ds = load_parquet_dataset(recipe.data.train, limit=recipe.data.limit, required=("prompt",))
    if INDEX_COLUMN in ds.column_names:
        ds = ds.remove_columns(INDEX_COLUMN)
    return ds.add_column(INDEX_COLUMN, list(range(len(ds))))


def build_grpo_trainer(
    recipe: GRPORecipe,
    *,
    callbacks: list | None = None,
    report: Callable[[str], None] | None = None,
) -> VASGRPOTrainer:
    """The :class:`VASGRPOTrainer` a recipe describes - dataset (with its ``vas_index`` column), reward
    functions and weights, the VPS table (when VAS is on) - without training it.  :func:`train_grpo` is this
    plus resume, start-of-run scoring and the final checkpoint; use it directly to drive the trainer yourself
    (``trainer.train(resume_from_checkpoint=...)`` restores the VPS table and run state)."""
    from .rewards import build_reward_funcs
    from .utils import check_single_process_gpus, model_and_processor, resolve_attn_implementation

    say = report or (lambda s: log.info(s))
    args = recipe.args
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
        uses = vas.accuracy_uses()
        if acc_name is None and uses:  # before the model loads (the trainer checks again, for direct use)
            raise ValueError(f"vas.{' and vas.'.join(uses)} {'needs' if len(uses) == 1 else 'need'} an accuracy "
                             f"reward (rewards: {{accuracy: 1.0, ...}}); the recipe's rewards are {names}")
        table = build_vps_table(dataset, recipe)
        st = table.stats()
        say(f"VAS: lambda={vas.lambda_}, refresh={vas.refresh}, rescore_every={vas.rescore_every}; initial VPS "
            f"mean {st['vps_mean']:.3f} (min {st['vps_min']:.3f}, max {st['vps_max']:.3f})")
        pi = table.prior_info
        if vas.posterior_prior == "eb":
            say(f"VAS posterior base prior: Beta({pi['a0']:.3g}, {pi['b0']:.3g}) "
                + (f"fitted to {pi['groups']} scored prompts ({pi['eb_status']})" if pi["kind"] == "eb" else
                   f"- the eb fit fell back to the fixed prior ({pi['eb_status']}; it needs vas.scores with "
                   "n / n_correct)"))
        if not args.shuffle_dataset and vas.lambda_ > 0:
            say(f"VAS with shuffle_dataset=false: the uniform part of each epoch walks the first "
                f"{1 - vas.lambda_:.0%} of the rows in dataset order; the rest are reached by VAS draws only")
    else:
        say("sampler: uniform (TRL RepeatSampler)")
    if recipe.pad.enabled:
        p = recipe.pad
        say(f"PAD: rho={p.rho}, |A| in ({p.t_low}, {p.t_high}], tau {p.tau_start} -> {p.tau_end} ({p.schedule})")
    d = recipe.dynamic
    if d.skip.enabled:
        say(f"dynamic: skip prompts with P(zero variance) >= {d.skip.q} (kept anyway with probability "
            f"{d.skip.floor}); posterior decay {vas.posterior_decay} per generation batch")
    if d.refill.enabled:
        budget = d.refill.budget_rollouts or 2 * args.generation_batch_size
        say(f"dynamic: drop zero-variance groups and refill, at most {d.refill.max_rounds} rounds and {budget} "
            "rollouts per generation batch")
    check_single_process_gpus(args, "grpo")
    resolve_attn_implementation(args)
    return VASGRPOTrainer(
        model=model_dir,
        reward_funcs=funcs,
        args=args,
        train_dataset=dataset,
        processing_class=processing_class,
        callbacks=list(callbacks or []),
        vps_table=table,
        vas=vas,
        pad=recipe.pad,
        dynamic=recipe.dynamic,
        accuracy_reward=acc_name,
    )


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
    say = report or (lambda s: log.info(s))
    t0 = time.perf_counter()
    args = recipe.args
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    cbs = list(callbacks or [])
    if progress:
        cbs.append(progress_callback(progress, "grpo"))
    trainer = build_grpo_trainer(recipe, callbacks=cbs, report=say)
    dataset, table, vas = trainer.train_dataset, trainer.vps_table, recipe.vas
    names, weights = list(trainer.reward_func_names), list(args.reward_weights)
    ckpt = last_checkpoint(out) if resume else None
    frozen = freeze_vision_tower(trainer.model) if freeze_vision else 0
    if frozen:
        say(f"vision tower frozen ({frozen:,} parameters)")
    if ckpt:
        say(f"resuming from {ckpt} (the trainer restores its VPS table and run state from it)")
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
            "dynamic": {"skip": bool(recipe.dynamic.skip.enabled), "refill": bool(recipe.dynamic.refill.enabled)},
            "frozen_vision_params": frozen,
            "vps": table.stats() if table is not None else None,
            "rewards": dict(zip(names, weights)),
            "logged_metrics": sorted({k for rec in hist for k in rec}),
        },
    )
    return finish_run(trainer, result)
