"""Training recipes: YAML -> TRL config dataclasses + our extra sections (data, rewards, VAS, PAD, stages).

A recipe's trainer sections use TRL's *own* field names, so a TRL YAML works unchanged::

    model: path/or/hub-id           # the policy to start from
    sft:                            # any trl.SFTConfig field, plus `data` (and `vas` for the SFT sampler)
      output_dir: runs/sft
      max_length: 2048              # required: over-long rows are dropped or rejected, never truncated
      learning_rate: 1.0e-5
      data: {train: path/to/sft.parquet, on_too_long: drop}     # drop | error
    grpo:                           # any trl.GRPOConfig field, plus `data`, `rewards`, `vas`, `pad`, `dynamic`
      num_generations: 8
      data: {train: path/to/rl.parquet}
      rewards: {accuracy: 1.0, format: 0.5}                     # training.rewards.build_reward_funcs spec
      vas: {enabled: true, lambda: 0.5, alpha: 0.8, beta: 0.2, epsilon: 1.0e-3, momentum: 0.5,
            refresh: online, rescore_every: 0, scores: path/to/scores.parquet, posterior_decay: 1.0,
            posterior_prior: fixed}
      pad: {enabled: false, rho: 0.5, t_low: 0.0, t_high: .inf, tau_start: 1.0, tau_end: 0.3}
      dynamic:                      # training.dynamic: every step full of learning signal
        skip: {enabled: false, q: 0.8, floor: 0.1}                   # skip predicted zero-variance prompts
        refill: {enabled: false, budget_rollouts: null, max_rounds: 4}  # drop zero-variance groups, refill
    staged:                         # ReVisual-R1's three stages; each stage = its kind's section + overrides
      output_dir: runs/staged
      stages:
        - {name: cold_start, kind: sft, data: {train: sft.parquet}}
        - {name: mm_rl, kind: grpo, data: {train: rl_mm.parquet}}
        - {name: text_rl, kind: grpo, freeze_vision: true, data: {train: rl_text.parquet}}
      # a stage may say `on_empty: skip` (default error): no training rows -> the stage is skipped, noted
      # in summary.json, and the next stage starts from the previous model

Unknown keys anywhere raise :class:`RecipeError` naming the key and the closest valid name, so a typo is never
silently ignored.  Values are coerced to the field's type (PyYAML reads ``1e-6`` as a string: it is turned
into a float for float fields).  Overrides ``grpo.learning_rate=1e-6`` / ``staged.stages.1.max_steps=2`` are
parsed with YAML typing and applied to the raw mapping before any section is built.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import difflib
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import yaml

__all__ = [
    "RecipeError",
    "DataSpec",
    "VASSpec",
    "PADSpec",
    "SkipSpec",
    "RefillSpec",
    "DynamicSpec",
    "SFTRecipe",
    "GRPORecipe",
    "StageSpec",
    "StagedRecipe",
    "load_raw",
    "parse_override",
    "apply_overrides",
    "build_sft_recipe",
    "build_grpo_recipe",
    "build_staged_recipe",
    "load_sft_recipe",
    "load_grpo_recipe",
    "load_staged_recipe",
]

# Keys a trainer section may carry besides the TRL config fields.
_SFT_EXTRA = {"data", "vas"}
_GRPO_EXTRA = {"data", "rewards", "vas", "pad", "dynamic"}
_STAGE_KEYS = {"name", "kind", "model", "freeze_vision", "on_empty"}
_TOP_KEYS = {"model", "sft", "grpo", "staged", "description"}


class RecipeError(ValueError):
    """A recipe that cannot be used: unknown key, wrong type, missing required value."""


def _suggest(key: str, valid: Iterable[str]) -> str:
    close = difflib.get_close_matches(key, list(valid), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _check_keys(where: str, given: dict, valid: set[str]) -> None:
    unknown = [k for k in given if k not in valid]
    if unknown:
        k = unknown[0]
        raise RecipeError(f"{where}: unknown key '{k}'{_suggest(k, valid)}")


# --- typed extra sections -----------------------------------------------------------------------------


@dataclass
class DataSpec:
    """``data:`` of a trainer section. ``on_too_long`` (SFT): ``drop`` (reported + excluded table) or ``error``."""

    train: Path
    on_too_long: str = "drop"
    limit: int | None = None  # use only the first N rows (smoke runs)


@dataclass
class VASSpec:
    """``vas:``: MMR1 Variance-Aware Sampling.

    A fraction ``lambda`` of each generation batch's prompts is drawn with replacement with probability
    proportional to ``max(VPS, epsilon)``; the rest uniformly without replacement.  ``VPS = alpha * OVS +
    beta * TDS`` where ``OVS = p (1 - p)`` for pass rate ``p``.  Initial scores: ``scores`` (a ``curate score``
    table joined on ``problem_id``) or the dataset's ``pass_rate`` / ``tds`` columns; ``score_at_start`` scores
    every prompt with the starting policy instead.  ``refresh: online`` updates each seen prompt's ``p`` and
    TDS from the trainer's own rollouts by an EMA with ``momentum`` (``new = m * old + (1 - m) * observed``);
    ``rescore_every: T > 0`` re-scores the whole set every T steps with the current policy.
    """

    enabled: bool | None = None  # None: SFT -> on when the rows carry `vps`; GRPO -> off
    lambda_: float = 0.5
    alpha: float = 0.8
    beta: float = 0.2
    epsilon: float = 1e-3
    momentum: float = 0.5
    refresh: str = "online"  # online | none
    rescore_every: int = 0  # re-score every prompt every T optimizer steps (0 = never)
    score_at_start: bool = False  # score every prompt with the starting policy before step 1 (no offline scores)
    scores: Path | None = None
    tds_metric: str = "edit"  # curation.score.scores.trace_diversity metric (the one `curate score` used)
    seed: int | None = None  # default: the trainer's seed
    vps_from: str = "pass_rate"  # pass_rate (MMR1) | posterior: E[p(1-p)] of the scores' Beta posterior (training.vps)
    # 4 p (1 - p) in [0, 1] instead of the paper's p (1 - p) in [0, 0.25] (as `curate score --normalize-ovs`):
    # with the default alpha/beta the outcome term then outweighs trace diversity (a deviation from MMR1)
    normalize_ovs: bool = False
    posterior_decay: float = 1.0  # per generation batch, each prompt's Beta evidence beyond the prior x this
    posterior_prior: str = "fixed"  # the Beta base prior: fixed (uniform) | eb (fitted to the scores' counts)

    def accuracy_uses(self) -> list[str]:
        """The settings that read each prompt's accuracy reward (GRPO: they need an accuracy reward function;
        the online refresh and every re-score set pass rates from it)."""
        uses = []
        if self.refresh == "online":
            uses.append("refresh=online")
        if self.rescore_every > 0:
            uses.append(f"rescore_every={self.rescore_every}")
        if self.score_at_start:
            uses.append("score_at_start=true")
        return uses


@dataclass
class PADSpec:
    """``pad:``: ReVisual-R1 Prioritized Advantage Distillation on each generation batch.

    Keep only samples with ``t_low <= |A| <= t_high``, then draw ``k' = ceil(rho * N)`` of them without
    replacement with probability ``softmax(|A| / tau)``; ``tau`` is annealed linearly from ``tau_start`` to
    ``tau_end`` over training.
    """

    enabled: bool = False
    rho: float = 0.5
    t_low: float = 0.0
    t_high: float = math.inf
    tau_start: float = 1.0
    tau_end: float = 0.3
    schedule: str = "linear"  # linear | cosine | constant

    def to_pad_config(self):
        from .pad import PADConfig

        return PADConfig(rho=self.rho, t_low=self.t_low, t_high=self.t_high, tau_start=self.tau_start,
                         tau_end=self.tau_end, schedule=self.schedule)


@dataclass
class SkipSpec:
    """``dynamic.skip:``: before generation, skip a drawn prompt whose posterior predicts a zero-variance group
    with probability ``>= q`` - unless a draw with probability ``floor`` keeps it anyway (exploration, so no
    prompt is starved and a skipped prompt's estimate can recover).  The sampler puts another prompt in its
    place inside the same generation batch (:mod:`training.dynamic`)."""

    enabled: bool = False
    q: float = 0.8
    floor: float = 0.1


@dataclass
class RefillSpec:
    """``dynamic.refill:``: after scoring a generation batch, drop its zero-variance groups and generate for
    further prompts until every rank's batch is full of informative rollouts, ``max_rounds`` refill rounds were
    made or ``budget_rollouts`` rollouts (the first round included; default 2 x generation_batch_size) were
    spent; then train on what there is, the rest loss-masked filler rows."""

    enabled: bool = False
    budget_rollouts: int | None = None
    max_rounds: int = 4


@dataclass
class DynamicSpec:
    """``dynamic:``: ``skip`` (:class:`SkipSpec`) and ``refill`` (:class:`RefillSpec`)."""

    skip: SkipSpec = field(default_factory=SkipSpec)
    refill: RefillSpec = field(default_factory=RefillSpec)

    @property
    def enabled(self) -> bool:
        return bool(self.skip.enabled or self.refill.enabled)


_RENAMES = {"lambda": "lambda_"}  # YAML key -> dataclass field (``lambda`` is a Python keyword)


def _enum_has_no(typ: Any) -> bool:
    """True for an Enum type with a ``"no"`` member (transformers' SaveStrategy, IntervalStrategy)."""
    import enum

    return isinstance(typ, type) and issubclass(typ, enum.Enum) and any(m.value == "no" for m in typ)


def _coerce(value: Any, typ: Any, where: str) -> Any:
    """Coerce a YAML value to a dataclass field type where it is unambiguous (``'1e-6'`` -> float, ints ->
    floats, strings -> Path).  Anything else is passed through and left to the dataclass' own checks."""
    if value is None:
        return None
    if isinstance(typ, str):  # postponed annotation: resolve the few we use
        typ = {"float": float, "int": int, "bool": bool, "str": str}.get(typ, typ)
    origin = typing.get_origin(typ)
    args = typing.get_args(typ)
    if origin in (typing.Union, types.UnionType):
        simple = [a for a in args if a is not type(None)]
        if value is False and any(_enum_has_no(a) for a in simple):
            # YAML 1.1 reads an unquoted `no` (`save_strategy: no`, `save_strategy=no` on the command line)
            # as False; for the strategy fields (SaveStrategy / IntervalStrategy) it means "no".
            return "no"
        if isinstance(value, str) and float in simple and str not in simple:
            return _coerce(value, float, where)
        if isinstance(value, str) and int in simple and str not in simple and float not in simple:
            return _coerce(value, int, where)
        if Path in simple and isinstance(value, str):
            return Path(value)
        return value
    if typ is float:
        if isinstance(value, bool):
            raise RecipeError(f"{where}: expected a number, got {value!r}")
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                raise RecipeError(f"{where}: expected a number, got {value!r}") from None
    if typ is int and isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            raise RecipeError(f"{where}: expected an integer, got {value!r}") from None
    if typ is int and isinstance(value, float) and value.is_integer():
        return int(value)
    if typ is bool and not isinstance(value, bool):
        raise RecipeError(f"{where}: expected true/false, got {value!r}")
    if typ is Path and isinstance(value, str):
        return Path(value)
    return value


def _build_dataclass(cls: type, raw: Any, where: str, renames: dict[str, str] | None = None):
    if raw is None:
        raw = {}
    if isinstance(raw, bool) and "enabled" in {f.name for f in dataclasses.fields(cls)}:
        raw = {"enabled": raw}
    if not isinstance(raw, dict):
        raise RecipeError(f"{where}: expected a mapping, got {type(raw).__name__} {raw!r}")
    renames = renames or {}
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    yaml_names = {n for n in fields if n not in renames.values()} | set(renames)
    _check_keys(where, raw, yaml_names)
    kwargs = {}
    for k, v in raw.items():
        name = renames.get(k, k)
        kwargs[name] = _coerce(v, hints.get(name, fields[name].type), f"{where}.{k}")
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise RecipeError(f"{where}: {e}") from None


def _data_spec(raw: Any, where: str) -> DataSpec:
    if isinstance(raw, (str, Path)):
        raw = {"train": str(raw)}
    if not isinstance(raw, dict) or "train" not in raw:
        raise RecipeError(f"{where}: needs at least `train: path/to/file.parquet`")
    spec = _build_dataclass(DataSpec, raw, where)
    if spec.on_too_long not in {"drop", "error"}:
        raise RecipeError(f"{where}.on_too_long: must be 'drop' or 'error', got {spec.on_too_long!r}")
    return spec


def _vas_spec(raw: Any, where: str) -> VASSpec:
    spec = _build_dataclass(VASSpec, raw, where, _RENAMES)
    if not 0.0 <= spec.lambda_ <= 1.0:
        raise RecipeError(f"{where}.lambda: must lie in [0, 1], got {spec.lambda_}")
    if not 0.0 <= spec.momentum < 1.0:
        raise RecipeError(f"{where}.momentum: must lie in [0, 1), got {spec.momentum}")
    if spec.epsilon <= 0:
        raise RecipeError(f"{where}.epsilon: must be > 0 (floor of the sampling weight), got {spec.epsilon}")
    if spec.refresh not in {"online", "none"}:
        raise RecipeError(f"{where}.refresh: must be 'online' or 'none', got {spec.refresh!r}")
    if spec.rescore_every < 0:
        raise RecipeError(f"{where}.rescore_every: must be >= 0, got {spec.rescore_every}")
    if spec.vps_from not in {"pass_rate", "posterior"}:
        raise RecipeError(f"{where}.vps_from: must be 'pass_rate' or 'posterior', got {spec.vps_from!r}")
    if not 0.0 < spec.posterior_decay <= 1.0:
        raise RecipeError(f"{where}.posterior_decay: must lie in (0, 1] (1 = no forgetting), got {spec.posterior_decay}")
    if spec.posterior_prior not in {"fixed", "eb"}:
        raise RecipeError(f"{where}.posterior_prior: must be 'fixed' or 'eb', got {spec.posterior_prior!r}")
    return spec


def _dynamic_spec(raw: Any, where: str) -> DynamicSpec:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise RecipeError(f"{where}: expected a mapping like {{skip: {{enabled: true}}, refill: {{enabled: true}}}}")
    _check_keys(where, raw, {"skip", "refill"})
    skip = _build_dataclass(SkipSpec, raw.get("skip"), f"{where}.skip")
    refill = _build_dataclass(RefillSpec, raw.get("refill"), f"{where}.refill")
    if not 0.0 < skip.q <= 1.0:
        raise RecipeError(f"{where}.skip.q: must lie in (0, 1] (skip when P(zero variance) >= q), got {skip.q}")
    if not 0.0 < skip.floor <= 1.0:
        raise RecipeError(f"{where}.skip.floor: must lie in (0, 1] (the probability a skip-eligible prompt is kept "
                          f"anyway; 0 could starve a prompt forever), got {skip.floor}")
    if refill.budget_rollouts is not None and refill.budget_rollouts < 1:
        raise RecipeError(f"{where}.refill.budget_rollouts: must be >= 1 (or null), got {refill.budget_rollouts}")
    if refill.max_rounds < 0:
        raise RecipeError(f"{where}.refill.max_rounds: must be >= 0, got {refill.max_rounds}")
    return DynamicSpec(skip=skip, refill=refill)


def _pad_spec(raw: Any, where: str) -> PADSpec:
    spec = _build_dataclass(PADSpec, raw, where)
    try:
        spec.to_pad_config()  # PADConfig validates rho, the |A| band and the temperatures
    except ValueError as e:
        raise RecipeError(f"{where}: {e}") from None
    return spec


# --- recipes -------------------------------------------------------------------------------------------


@dataclass
class SFTRecipe:
    model: str
    args: Any  # trl.SFTConfig
    data: DataSpec
    vas: VASSpec = field(default_factory=VASSpec)


@dataclass
class GRPORecipe:
    model: str
    args: Any  # trl.GRPOConfig
    data: DataSpec
    rewards: dict = field(default_factory=lambda: {"accuracy": 1.0})
    vas: VASSpec = field(default_factory=VASSpec)
    pad: PADSpec = field(default_factory=PADSpec)
    dynamic: DynamicSpec = field(default_factory=DynamicSpec)


@dataclass
class StageSpec:
    name: str
    kind: str  # sft | grpo
    section: dict  # the merged raw trainer section (TRL fields + extras)
    model: str | None = None
    freeze_vision: bool = False
    on_empty: str = "error"  # error | skip: what `train staged` does when the stage's data.train has no rows


@dataclass
class StagedRecipe:
    model: str
    output_dir: Path
    stages: list[StageSpec]
    raw: dict | None = None  # the recipe mapping it was built from (overrides applied): what stage processes get


# What a launcher (accelerate launch / torchrun) puts in the environment.  TrainingArguments reads it when
# it is built: it creates accelerate's PartialState, which joins the run's process group and picks a GPU.
_LAUNCH_ENV_PREFIXES = ("ACCELERATE_", "FSDP_", "TORCHELASTIC_")
_LAUNCH_ENV_KEYS = {"RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "GROUP_RANK", "GROUP_WORLD_SIZE",
                    "ROLE_RANK", "ROLE_NAME", "ROLE_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"}


@contextlib.contextmanager
def detached_from_launch():
    """Hide the launcher's environment while a config is built only to be validated (``validate_only``):
    the driver of ``train staged`` checks every stage up front and must not join the run's process group,
    create a CUDA context or change the accelerate state a real config has set up (it is restored)."""
    import os

    from accelerate.state import AcceleratorState, GradientState, PartialState

    saved = {k: v for k, v in os.environ.items() if k in _LAUNCH_ENV_KEYS or k.startswith(_LAUNCH_ENV_PREFIXES)}
    # TrainingArguments resets accelerate's process-wide (Borg) state and builds its own: put back what was
    # there, so a check made after a real config was built does not leave a CPU-only state behind for it
    states = [(cls, dict(cls._shared_state)) for cls in (PartialState, AcceleratorState, GradientState)]
    for k in saved:
        del os.environ[k]
    try:
        yield
    finally:
        os.environ.update(saved)
        for cls, state in states:
            cls._shared_state.clear()
            cls._shared_state.update(state)


def _trl_config(cls: type, raw: dict, where: str, *, cpu_defaults: bool = True, validate_only: bool = False):
    """Build ``cls`` (SFTConfig / GRPOConfig) from TRL field names, coercing types; unknown keys raise.

    ``validate_only``: the config is only checked (field names, types, TRL's own rules) - built on the CPU,
    detached from any launcher (:func:`detached_from_launch`): the world-size dependent batch geometry
    (``generation_batch_size`` / ``steps_per_generation``) is replaced by one valid at one process, and
    :mod:`training.plan` checks the recipe's own geometry for the launch's world size."""
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    _check_keys(where, raw, set(fields))
    kwargs = {k: _coerce(v, fields[k].type, f"{where}.{k}") for k, v in raw.items()}
    if validate_only:
        kwargs["use_cpu"] = True
        if "num_generations" in fields and "generation_batch_size" in fields:
            # TRL checks generation_batch_size against per_device x world and num_generations; at the one
            # process of a validation build a batch that is right for the launch (2 ranks x 3 x 2 = 12 for
            # 4 generations) reads 6 and is refused.  Check TRL's other rules on a geometry that is valid at
            # one process; training.plan.grpo_geometry checks the real one at the launch's world size.
            n_gen = kwargs.get("num_generations", fields["num_generations"].default)
            if isinstance(n_gen, int) and n_gen >= 2 and not ("generation_batch_size" in kwargs
                                                               and "steps_per_generation" in kwargs):
                kwargs.pop("generation_batch_size", None)
                kwargs["steps_per_generation"] = n_gen
        with detached_from_launch():
            return _make_config(cls, kwargs, where, cpu_defaults)
    return _make_config(cls, kwargs, where, cpu_defaults)


def _make_config(cls: type, kwargs: dict, where: str, cpu_defaults: bool):
    if cpu_defaults:
        import torch

        # TRL turns bf16 on by default; on a machine without an accelerator that is an error, so default it
        # off there (an explicit recipe value always wins).
        if "bf16" not in kwargs and not torch.cuda.is_available():
            kwargs["bf16"] = False
    kwargs.setdefault("report_to", "none")
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise RecipeError(f"{where}: {e}") from None


def build_sft_recipe(section: dict, model: str, where: str = "sft", *, validate_only: bool = False) -> SFTRecipe:
    from trl import SFTConfig

    section = copy.deepcopy(section or {})
    if "data" not in section:
        raise RecipeError(f"{where}: missing `data: {{train: path/to/sft.parquet}}`")
    data = _data_spec(section.pop("data"), f"{where}.data")
    vas = _vas_spec(section.pop("vas", None), f"{where}.vas")
    if section.get("max_length") is None:
        raise RecipeError(
            f"{where}.max_length: required (examples longer than it are dropped or rejected, never truncated)"
        )
    if not model:
        raise RecipeError("model: required (a local path or hub id)")
    section.setdefault("output_dir", "runs/sft")
    args = _trl_config(SFTConfig, section, where, validate_only=validate_only)
    return SFTRecipe(model=str(model), args=args, data=data, vas=vas)


def build_grpo_recipe(section: dict, model: str, where: str = "grpo", *, validate_only: bool = False) -> GRPORecipe:
    from trl import GRPOConfig

    section = copy.deepcopy(section or {})
    if "data" not in section:
        raise RecipeError(f"{where}: missing `data: {{train: path/to/rl.parquet}}`")
    data = _data_spec(section.pop("data"), f"{where}.data")
    rewards = section.pop("rewards", None) or {"accuracy": 1.0}
    if not isinstance(rewards, dict):
        raise RecipeError(f"{where}.rewards: expected a mapping like {{accuracy: 1.0, format: 0.5}}")
    vas = _vas_spec(section.pop("vas", None), f"{where}.vas")
    pad = _pad_spec(section.pop("pad", None), f"{where}.pad")
    dynamic = _dynamic_spec(section.pop("dynamic", None), f"{where}.dynamic")
    if dynamic.skip.enabled and not vas.enabled:
        raise RecipeError(f"{where}.dynamic.skip: needs {where}.vas.enabled: true (the posterior it reads lives in "
                          "the VPS table and the VAS sampler does the skipping; lambda may be 0)")
    if "reward_weights" in section:
        raise RecipeError(f"{where}.reward_weights: give the weights in `rewards:` instead (one place only)")
    if not model:
        raise RecipeError("model: required (a local path or hub id)")
    section.setdefault("output_dir", "runs/grpo")
    args = _trl_config(GRPOConfig, section, where, validate_only=validate_only)
    bs = getattr(args, "generation_batch_size", None)
    if dynamic.refill.enabled and dynamic.refill.budget_rollouts is not None and bs and \
            dynamic.refill.budget_rollouts < bs and not validate_only:
        raise RecipeError(f"{where}.dynamic.refill.budget_rollouts: {dynamic.refill.budget_rollouts} is less than one "
                          f"generation batch ({bs} rollouts); the budget counts the first round too")
    return GRPORecipe(model=str(model), args=args, data=data, rewards=rewards, vas=vas, pad=pad, dynamic=dynamic)


def _deep_merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def build_staged_recipe(raw: dict) -> StagedRecipe:
    """Each stage = the top-level section of its ``kind`` deep-merged with the stage's own keys."""
    staged = raw.get("staged")
    if not isinstance(staged, dict) or not isinstance(staged.get("stages"), list) or not staged["stages"]:
        raise RecipeError("staged: needs `stages: [{name: ..., kind: sft|grpo, ...}, ...]`")
    _check_keys("staged", staged, {"output_dir", "stages"})
    out_dir = Path(staged.get("output_dir") or "runs/staged")
    stages: list[StageSpec] = []
    seen = set()
    for i, st in enumerate(staged["stages"]):
        where = f"staged.stages.{i}"
        if not isinstance(st, dict):
            raise RecipeError(f"{where}: expected a mapping")
        name, kind = st.get("name"), st.get("kind")
        if not name or not isinstance(name, str):
            raise RecipeError(f"{where}: needs a `name`")
        if name in seen:
            raise RecipeError(f"{where}: duplicate stage name {name!r}")
        seen.add(name)
        if kind not in {"sft", "grpo"}:
            raise RecipeError(f"{where}.kind: must be 'sft' or 'grpo', got {kind!r}")
        own = {k: v for k, v in st.items() if k not in _STAGE_KEYS}
        section = _deep_merge(raw.get(kind) or {}, own)
        section["output_dir"] = str(out_dir / name)
        freeze = _coerce(st.get("freeze_vision", False), bool, f"{where}.freeze_vision")
        on_empty = st.get("on_empty", "error")
        if on_empty not in {"error", "skip"}:
            raise RecipeError(f"{where}.on_empty: must be 'error' or 'skip', got {on_empty!r}")
        stages.append(StageSpec(name=name, kind=kind, section=section, model=st.get("model"), freeze_vision=freeze,
                                on_empty=on_empty))
        # Validate now (unknown keys, types) so a typo in stage 3 fails before stage 1 trains for hours.
        builder = build_sft_recipe if kind == "sft" else build_grpo_recipe
        builder(section, st.get("model") or raw.get("model") or "<previous stage>", where=where, validate_only=True)
    if not raw.get("model") and not stages[0].model:
        raise RecipeError("model: required (the checkpoint stage 1 starts from)")
    return StagedRecipe(model=str(stages[0].model or raw.get("model")), output_dir=out_dir, stages=stages,
                        raw=copy.deepcopy(raw))


# --- loading + overrides -------------------------------------------------------------------------------


_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


def _yaml_value(text: str) -> Any:
    """Parse one override value with YAML typing; ``1e-6`` (a string to YAML 1.1) becomes a float."""
    value = yaml.safe_load(text) if text.strip() else ""
    if isinstance(value, str) and _NUMBER.match(value.strip()):
        return float(value)
    return value


def parse_override(item: str) -> tuple[list[str], Any]:
    """``grpo.learning_rate=1e-6`` -> (['grpo', 'learning_rate'], 1e-06)."""
    if "=" not in item:
        raise RecipeError(f"override {item!r}: expected KEY=VALUE (e.g. grpo.learning_rate=1e-6)")
    key, value = item.split("=", 1)
    key = key.strip()
    if key.startswith("--"):
        key = key[2:]
    if not key:
        raise RecipeError(f"override {item!r}: empty key")
    return key.split("."), _yaml_value(value)


def apply_overrides(raw: dict, overrides: Iterable[str]) -> dict:
    """Set each dotted key (list items by index: ``staged.stages.0.max_steps=2``) in a copy of ``raw``."""
    out = copy.deepcopy(raw)
    for item in overrides:
        path, value = parse_override(item)
        node: Any = out
        for j, part in enumerate(path[:-1]):
            if isinstance(node, list):
                try:
                    node = node[int(part)]
                except (ValueError, IndexError):
                    raise RecipeError(f"override {item!r}: {'.'.join(path[: j + 1])} is not a valid list index") from None
            else:
                if not isinstance(node.get(part, {}), (dict, list)):
                    raise RecipeError(f"override {item!r}: {'.'.join(path[: j + 1])} is not a mapping")
                node = node.setdefault(part, {})
        last = path[-1]
        if isinstance(node, list):
            try:
                node[int(last)] = value
            except (ValueError, IndexError):
                raise RecipeError(f"override {item!r}: {last} is not a valid list index") from None
        else:
            node[last] = value
    return out


def load_raw(path: str | Path | None, overrides: Iterable[str] = ()) -> dict:
    """Read a recipe YAML (or start empty) and apply overrides; checks the top-level keys."""
    raw: dict = {}
    if path is not None:
        path = Path(path)
        if not path.exists():
            raise RecipeError(f"{path}: no such recipe file")
        raw = yaml.safe_load(path.read_text()) or {}
        if not isinstance(raw, dict):
            raise RecipeError(f"{path}: a recipe must be a YAML mapping")
    raw = apply_overrides(raw, overrides)
    _check_keys("recipe", raw, _TOP_KEYS)
    return raw


def load_sft_recipe(path: str | Path | None, overrides: Iterable[str] = ()) -> SFTRecipe:
    raw = load_raw(path, overrides)
    if not isinstance(raw.get("sft"), dict):
        raise RecipeError("recipe has no `sft:` section")
    return build_sft_recipe(raw["sft"], raw.get("model"))


def load_grpo_recipe(path: str | Path | None, overrides: Iterable[str] = ()) -> GRPORecipe:
    raw = load_raw(path, overrides)
    if not isinstance(raw.get("grpo"), dict):
        raise RecipeError("recipe has no `grpo:` section")
    return build_grpo_recipe(raw["grpo"], raw.get("model"))


def load_staged_recipe(path: str | Path | None, overrides: Iterable[str] = ()) -> StagedRecipe:
    return build_staged_recipe(load_raw(path, overrides))
