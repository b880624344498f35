"""MMR1 Variance-Aware Sampling (VAS) as drop-in samplers for TRL.

**Weights.** ``P = curation.score.vas.vas_probabilities(VPS, epsilon, power)`` (formula there: a floor
``epsilon * mean VPS``, no min-max normalisation, all-equal scores give exactly uniform ``P``).

**Batch mix** (:class:`VASSampler`, GRPO).  An epoch covers ``n_chunks = len(dataset) // batch_size``
generation batches ("chunks") of ``batch_size`` unique prompts, as TRL's ``RepeatSampler``.  Of the epoch's
``n = n_chunks * batch_size`` prompt slots, ``n_vas = floor(lambda * n + 1/2)`` are VAS slots drawn by ``P``
(with replacement *across* chunks) and ``n - n_vas`` are uniform slots filled from a uniform random
permutation of the dataset (without replacement over the epoch).  VAS slots are spread evenly over the chunks:
chunk ``j`` gets ``c_j = floor((j+1) n_vas / n_chunks) - floor(j n_vas / n_chunks)`` of them (``floor`` or
``ceil`` of ``lambda * batch_size``), so every generation batch carries the lambda mix and the epoch total is
exact.

**Uniqueness inside a chunk.** TRL computes advantages per prompt group, so a chunk must not hold a prompt
twice.  The ``c_j`` VAS prompts of a chunk are drawn by *successive sampling without replacement* from ``P``
restricted to the prompts not already in the chunk (the chunk's uniform picks are excluded).  This is exactly
"draw with replacement, re-draw any index already in the chunk": the first VAS draw of a chunk is
``P``-proportional; later ones are ``P`` renormalised over what is left.  Effect: a prompt appears at most once
per chunk, so a prompt whose probability exceeds ``1 / c_j`` is capped; with thousands of prompts and
moderately spread scores the deviation from ``P`` is negligible.  If fewer than ``c_j`` prompts with
``P > 0`` are left (``epsilon = 0`` with mostly-zero scores), the remaining VAS slots are filled uniformly
from the other prompts and counted as ``n_vas_fallback`` in :meth:`VASSampler.last_epoch_stats`.

**Determinism / ranks.** Nothing depends on the rank or on global RNG state.  The uniform permutation of epoch
``e`` is the ``(e+1)``-th ``torch.randperm`` of a generator seeded with ``seed`` - the very stream TRL's
``RepeatSampler`` uses - so with ``lambda = 0`` the output equals ``RepeatSampler``'s, epoch by epoch (in a run
that is not resumed: see **Epochs**).  The VAS draw of chunk ``j`` uses ``numpy.random.default_rng([seed,
epoch, j])`` and the weight snapshot ``P``.  Every rank holds an identical :class:`~training.vps.VPSTable`
(updates take gathered data) and consumes the dataloader in lockstep, so streams are identical on every rank.

**Shuffle off** (``shuffle=False``; TRL's ``shuffle_dataset=False``, read by :meth:`VASSampler.for_grpo`).  The
epoch's uniform order is the dataset order ``0..N-1`` instead of a permutation, restarting at row 0 every epoch
as ``RepeatSampler(shuffle=False)`` does: with ``lambda = 0`` the stream is exactly RepeatSampler's.  With
``lambda > 0`` the uniform slots still take the *first* ``n - n_vas`` entries of that order, so an epoch's
uniform part walks rows ``0 .. n - n_vas - 1`` in order and the rows after them are reached by VAS draws only;
each chunk lists its uniform picks first (in dataset order), then its VAS picks (no position shuffle).

**Epochs.** :meth:`VASSampler.set_epoch` picks the epoch of the next ``__iter__``; the trainers call it at every
epoch start (:class:`training.utils.SamplerEpochMixin`), which also covers a multi-process resume, where
accelerate's own ``set_epoch`` does not reach the sampler.  TRL's ``RepeatSampler`` has no ``set_epoch``: on a
resume it restarts its permutation stream, so a resumed run of stock TRL orders the resumed epoch as epoch 0.

**Skip before generation** (``skip=SkipRule(q, floor)``, recipe ``dynamic.skip``; formulas in
:mod:`training.dynamic`).  After a chunk is drawn, each prompt whose posterior zero-variance probability
``P0 >= q`` is kept with probability ``floor`` and otherwise replaced, in the same position, by a prompt that is
neither skip-eligible nor already in the chunk (VAS slots by ``P``, uniform slots uniformly; the original stays
if none is left).  The uniforms and replacement draws come from ``numpy.random.default_rng([seed, epoch, j,
SKIP_STREAM])`` and ``P0`` from the shared table, so every rank makes the same replacements; the chunk keeps its
size, uniqueness and repeat structure.  A replaced uniform slot does not give the permutation's later prompts an
extra turn: the epoch still walks its permutation once.  With ``skip=None`` (the default) nothing of this runs
and the stream is the one described above.

**Refresh.** ``refresh_every=None``: ``P`` is snapshotted from the table when an epoch starts.
``refresh_every=T``: re-snapshotted every ``T`` chunks (generation rounds) too - needed when training is
shorter than an epoch.  Chunks are drawn lazily when their first index is requested, so an online update
reaches the draw within about ``T + 1`` generation rounds (the dataloader looks one batch ahead).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Iterator, Sequence, Sized

import numpy as np
import torch
from torch.utils.data import Sampler

from curation.score.vas import probability_stats, vas_probabilities

from .vps import VPSTable

__all__ = ["vas_probabilities", "probability_stats", "VASSampler", "VASEpochSampler", "SkipRule", "draw_weighted"]

SKIP_STREAM = 0x5C1B  # tag of the skip rule's random stream: numpy.random.default_rng([seed, epoch, chunk, SKIP_STREAM])


def draw_weighted(rng: np.random.Generator, p: np.ndarray, exclude: np.ndarray, c: int) -> tuple[np.ndarray, int]:
    """``c`` indices by successive sampling without replacement from ``p`` over indices not in ``exclude``
    (exponential race: ``argmin_k E_k / p_k`` with ``E ~ Exp(1)`` i.i.d. is ``p``-proportional, and the ``c``
    smallest keys are successive draws without replacement).  Returns (indices, how many were filled
    uniformly for lack of positive-probability candidates)."""
    n = p.size
    keys = rng.exponential(size=n)
    with np.errstate(divide="ignore"):
        keys = keys / p  # p = 0 -> inf
    keys[exclude] = np.inf
    n_pos = n - int(np.count_nonzero(p == 0)) - int(np.count_nonzero(p[exclude] > 0))
    take = min(c, n_pos)
    if take > 0:
        sel = np.argpartition(keys, take - 1)[:take] if take < n else np.arange(n)
        sel = sel[np.argsort(keys[sel], kind="stable")]
    else:
        sel = np.empty(0, dtype=np.int64)
    short = c - take
    if short > 0:
        mask = np.ones(n, dtype=bool)
        mask[exclude] = False
        mask[sel] = False
        rest = np.flatnonzero(mask)
        sel = np.concatenate([sel, rng.choice(rest, size=short, replace=False)])
    return sel.astype(np.int64), short


class SkipRule:
    """Skip before generation (:mod:`training.dynamic`): a drawn prompt with predicted zero-variance probability
    ``P0 >= q`` is skip-eligible; it is kept anyway when its uniform draw ``u < floor`` (the exploration floor:
    every drawn prompt is generated with probability at least ``floor``), else skipped and replaced."""

    def __init__(self, q: float = 0.8, floor: float = 0.1):
        if not (0.0 < q <= 1.0):
            raise ValueError(f"skip q must be in (0, 1], got {q}")
        if not (0.0 < floor <= 1.0):
            raise ValueError(f"skip floor must be in (0, 1] (0 could starve a prompt forever), got {floor}")
        self.q, self.floor = float(q), float(floor)

    def eligible(self, p0: np.ndarray) -> np.ndarray:
        return np.asarray(p0) >= self.q

    def decide(self, p0: np.ndarray, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(skip, explored)`` per drawn prompt: ``explored`` = eligible but kept by the floor."""
        eligible = self.eligible(p0)
        explored = eligible & (np.asarray(u) < self.floor)
        return eligible & ~explored, explored

    def __repr__(self) -> str:
        return f"SkipRule(q={self.q}, floor={self.floor})"


def _score_array(scores: VPSTable | Any) -> tuple[np.ndarray, int]:
    """(scores per index, version) of a VPSTable or a static array (version 0)."""
    if isinstance(scores, VPSTable):
        return scores.vps_by_index(), scores.version
    return np.asarray(scores, dtype=np.float64).reshape(-1), 0


def _check_seed(seed: int) -> int:
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative int (identical on every rank), got {seed!r}")
    return int(seed)


class VASSampler(Sampler[int]):
    """TRL ``RepeatSampler``-compatible sampler drawing prompts by VAS (see the module docstring).

    Yields, per chunk of ``batch_size`` unique prompt indices, each index ``mini_repeat_count`` times in a row,
    the whole chunk ``repeat_count`` times; ``len`` = ``(N // batch_size) * batch_size * mini_repeat_count *
    repeat_count`` exactly as ``RepeatSampler``.  For GRPO: ``mini_repeat_count = num_generations``,
    ``batch_size = generation_batch_size // num_generations``, ``repeat_count = num_iterations *
    steps_per_generation`` (:meth:`for_grpo` reads them from a trainer).

    ``scores``: a :class:`~training.vps.VPSTable` (shared with the trainer, updated online) or a static
    array of VPS values, one per dataset row.  ``vas_fraction``: MMR1's lambda in [0, 1].  ``shuffle``:
    ``False`` keeps the uniform part in dataset order (module docstring).
    """

    def __init__(
        self,
        data_source: Sized | int,
        scores: VPSTable | Any,
        *,
        mini_repeat_count: int,
        batch_size: int = 1,
        repeat_count: int = 1,
        vas_fraction: float = 0.5,
        seed: int = 0,
        epsilon: float = 1e-3,
        power: float = 1.0,
        refresh_every: int | None = None,
        shuffle: bool = True,
        skip: SkipRule | None = None,
    ):
        self.num_samples = data_source if isinstance(data_source, int) else len(data_source)
        self.scores = scores
        arr, _ = _score_array(scores)
        if arr.size != self.num_samples:
            raise ValueError(f"{arr.size} scores for a dataset of {self.num_samples} rows")
        for name, v in (("mini_repeat_count", mini_repeat_count), ("batch_size", batch_size),
                        ("repeat_count", repeat_count)):
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be an int >= 1, got {v!r}")
        if not (0.0 <= vas_fraction <= 1.0):
            raise ValueError(f"vas_fraction (lambda) must be in [0, 1], got {vas_fraction}")
        if refresh_every is not None and (not isinstance(refresh_every, int) or refresh_every < 1):
            raise ValueError(f"refresh_every must be None or an int >= 1, got {refresh_every!r}")
        self.mini_repeat_count = mini_repeat_count
        self.batch_size = batch_size
        self.repeat_count = repeat_count
        self.vas_fraction = float(vas_fraction)
        self.seed = _check_seed(seed)
        self.epsilon = float(epsilon)
        self.power = float(power)
        vas_probabilities(arr, epsilon=self.epsilon, power=self.power)  # validate scores/epsilon/power now
        self.refresh_every = refresh_every
        self.shuffle = bool(shuffle)
        if skip is not None and not isinstance(scores, VPSTable):
            raise ValueError("the skip rule reads each prompt's posterior: scores must be a VPSTable")
        self.skip = skip
        self.last_chunk: dict[str, Any] = {}  # the latest chunk's skip details (drawn, skipped, explored)
        self.epoch = 0
        self._perm_gen: torch.Generator | None = None
        self._perm_epoch = -1
        self._probs_key: tuple[int, int] | None = None
        self._probs: np.ndarray | None = None
        self._stats: dict[str, Any] = {}

    # --- TRL / accelerate hooks ---------------------------------------------------------------------------

    @classmethod
    def for_grpo(cls, trainer: Any, scores: VPSTable | Any, dataset: Sized | None = None, **kwargs: Any) -> VASSampler:
        """The sampler TRL's ``GRPOTrainer._get_train_sampler`` would build, with VAS.  Use in a subclass::

            def _get_train_sampler(self, dataset=None):
                return VASSampler.for_grpo(self, self.vps_table, dataset, vas_fraction=..., refresh_every=...)
        """
        args = trainer.args
        kwargs.setdefault("seed", args.seed)
        kwargs.setdefault("shuffle", bool(getattr(trainer, "shuffle_dataset", getattr(args, "shuffle_dataset", True))))
        return cls(
            trainer.train_dataset if dataset is None else dataset,
            scores,
            mini_repeat_count=trainer.num_generations,
            batch_size=args.generation_batch_size // trainer.num_generations,
            repeat_count=trainer.num_iterations * args.steps_per_generation,
            **kwargs,
        )

    def set_epoch(self, epoch: int) -> None:
        """Epoch of the next ``__iter__`` (the HF Trainer and accelerate call this).  Without calls, each
        ``__iter__`` advances the epoch by one."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return (self.num_samples // self.batch_size) * self.batch_size * self.mini_repeat_count * self.repeat_count

    # --- drawing -----------------------------------------------------------------------------------------

    @property
    def num_chunks(self) -> int:
        return self.num_samples // self.batch_size

    def epoch_counts(self) -> tuple[int, int]:
        """``(n_vas, n_uniform)`` slots per epoch: ``n_vas = floor(lambda * n + 1/2)``."""
        n = self.num_chunks * self.batch_size
        n_vas = int(math.floor(self.vas_fraction * n + 0.5))
        return n_vas, n - n_vas

    def chunk_vas_count(self, j: int) -> int:
        """``c_j``: VAS slots of chunk ``j`` (even spread; they sum to ``n_vas``)."""
        n_vas, _ = self.epoch_counts()
        k = self.num_chunks
        return ((j + 1) * n_vas) // k - (j * n_vas) // k

    def _epoch_perm(self, epoch: int) -> np.ndarray:
        """The epoch's uniform order: the ``(epoch+1)``-th ``torch.randperm(N)`` of a generator seeded with
        ``seed`` (RepeatSampler's), or ``0..N-1`` with ``shuffle=False``."""
        if not self.shuffle:
            return np.arange(self.num_samples)
        if self._perm_gen is None or self._perm_epoch != epoch - 1:
            self._perm_gen = torch.Generator()
            self._perm_gen.manual_seed(self.seed)
            for _ in range(epoch):
                torch.randperm(self.num_samples, generator=self._perm_gen)
        perm = torch.randperm(self.num_samples, generator=self._perm_gen).numpy()
        self._perm_epoch = epoch
        return perm

    def current_probabilities(self) -> np.ndarray:
        """``P`` from the scores' current state (cached per table version)."""
        arr, version = _score_array(self.scores)
        key = (id(self.scores), version)
        if self._probs is None or self._probs_key != key:
            self._probs = vas_probabilities(arr, epsilon=self.epsilon, power=self.power)
            self._probs_key = key
        return self._probs

    def _snapshot(self, stats: dict[str, Any]) -> np.ndarray:
        p = self.current_probabilities()
        stats.update(probability_stats(p))
        stats["refreshes"] += 1
        stats["scores_version"] = self._probs_key[1]
        return p

    def _draw_vas(self, rng: np.random.Generator, p: np.ndarray, exclude: np.ndarray, c: int) -> tuple[np.ndarray, int]:
        """:func:`draw_weighted` (``c`` VAS picks of a chunk)."""
        return draw_weighted(rng, p, exclude, c)

    def zero_variance_probabilities(self) -> np.ndarray:
        """Per dataset row, the posterior probability that a group of ``mini_repeat_count`` rollouts has zero
        variance (:meth:`training.vps.VPSTable.zero_variance_prob_by_index`)."""
        return self.scores.zero_variance_prob_by_index(self.mini_repeat_count)

    def slot_mix(self) -> np.ndarray:
        """The distribution of one prompt slot: ``(1 - lambda) / N + lambda P`` (what a refill draw uses)."""
        p = self.current_probabilities()
        return (1.0 - self.vas_fraction) / self.num_samples + self.vas_fraction * p

    def _apply_skip(self, epoch: int, j: int, idx: np.ndarray, flags: np.ndarray, p: np.ndarray,
                    stats: dict[str, Any]) -> np.ndarray:
        """The skip rule on one chunk (module docstring of :mod:`training.dynamic`): returns the chunk's
        indices with each skipped prompt replaced by a non-eligible prompt not yet in the chunk (VAS slots by
        ``p``, uniform slots uniformly), deterministically from ``(seed, epoch, j)`` and the table."""
        p0 = self.zero_variance_probabilities()
        rng = np.random.default_rng([self.seed, epoch, j, SKIP_STREAM])
        u = rng.random(idx.size)
        skip, explored = self.skip.decide(p0[idx], u)
        drawn = idx.copy()
        idx = idx.copy()
        unreplaced = 0
        if skip.any():
            in_chunk = np.zeros(self.num_samples, dtype=bool)
            in_chunk[idx] = True
            blocked = self.skip.eligible(p0)
            for pos in np.flatnonzero(skip):
                cand = ~(in_chunk | blocked)
                if not cand.any():
                    unreplaced += 1  # nothing left to put in its place: the prompt stays
                    skip[pos] = False
                    continue
                w = np.where(cand, p if flags[pos] else 1.0, 0.0)
                if not (w > 0).any():
                    w = cand.astype(np.float64)
                new, _ = draw_weighted(rng, w / w.sum(), np.flatnonzero(~cand), 1)
                idx[pos] = int(new[0])
                in_chunk[idx[pos]] = True
        stats["n_skipped"] = stats.get("n_skipped", 0) + int(skip.sum())
        stats["n_explored"] = stats.get("n_explored", 0) + int(explored.sum())
        stats["n_skip_unreplaced"] = stats.get("n_skip_unreplaced", 0) + unreplaced
        self.last_chunk = {"epoch": epoch, "chunk": j, "drawn": drawn.tolist(),
                           "skipped": drawn[skip].tolist(), "explored": drawn[explored].tolist()}
        return idx

    def iter_chunks(self, epoch: int | None = None) -> Iterator[tuple[list[int], list[bool]]]:
        """Chunks of ``epoch`` (default: the next epoch, advancing it) as ``(indices, is_vas)`` lists, drawn
        lazily; :meth:`__iter__` expands them with the repeat structure."""
        if epoch is None:
            epoch = self.epoch
            self.epoch += 1
        return self._chunks(int(epoch))

    def _chunks(self, epoch: int) -> Iterator[tuple[list[int], list[bool]]]:
        n_vas, n_uni = self.epoch_counts()
        stats: dict[str, Any] = {
            "epoch": epoch, "n_chunks": 0, "n_vas": 0, "n_uniform": 0, "n_vas_fallback": 0, "refreshes": 0,
            "n_vas_planned": n_vas, "n_uniform_planned": n_uni,
        }
        self._stats = stats
        seen: set[int] = set()
        perm = self._epoch_perm(epoch)
        p = self._snapshot(stats)
        u_ptr = 0
        B = self.batch_size
        for j in range(self.num_chunks):
            if self.refresh_every is not None and j > 0 and j % self.refresh_every == 0:
                p = self._snapshot(stats)
            c = self.chunk_vas_count(j)
            u = perm[u_ptr : u_ptr + (B - c)]
            u_ptr += B - c
            if c == 0:
                idx, is_vas = u.tolist(), [False] * B
            else:
                rng = np.random.default_rng([self.seed, epoch, j])
                v, short = self._draw_vas(rng, p, u, c)
                stats["n_vas_fallback"] += short
                allidx = np.concatenate([u, v])
                flags = np.concatenate([np.zeros(u.size, dtype=bool), np.ones(v.size, dtype=bool)])
                if self.shuffle:  # mix VAS and uniform picks across positions (and ranks)
                    order = rng.permutation(B)
                    allidx, flags = allidx[order], flags[order]
                idx, is_vas = allidx.tolist(), flags.tolist()
            if self.skip is not None:
                idx = self._apply_skip(epoch, j, np.asarray(idx, dtype=np.int64), np.asarray(is_vas, dtype=bool),
                                       p, stats).tolist()
            stats["n_chunks"] += 1
            stats["n_vas"] += c
            stats["n_uniform"] += B - c
            seen.update(idx)
            stats["n_unique"] = len(seen)
            yield idx, is_vas

    def __iter__(self) -> Iterator[int]:
        chunks = self.iter_chunks()
        mini, rep = self.mini_repeat_count, self.repeat_count

        def gen() -> Iterator[int]:
            for idx, _ in chunks:
                for _ in range(rep):
                    for i in idx:
                        for _ in range(mini):
                            yield i

        return gen()

    def last_epoch_stats(self) -> dict[str, Any]:
        """For logging, about the epoch being (or last) drawn: ``n_vas`` / ``n_uniform`` slots so far (and the
        planned totals), ``n_vas_fallback``, distinct prompts ``n_unique``, ``refreshes``, and from the latest
        weight snapshot ``weight_entropy`` (nats), ``weight_entropy_norm``, ``min_prob``, ``max_prob``,
        ``max_min_ratio``, ``n_zero_prob``, ``scores_version``."""
        return dict(self._stats)


class VASEpochSampler(Sampler[int]):
    """Plain (non-repeating) VAS sampler for SFT: each epoch ``num_samples`` row indices (default: the dataset
    size), ``floor(lambda * n + 1/2)`` drawn with replacement by ``P`` and the rest uniformly without
    replacement (cycling through fresh permutations if more than the dataset is asked for), shuffled together.

    Row weights come from the rows' problems: ``scores`` is a :class:`~training.vps.VPSTable` (looked up by
    ``problem_ids`` when given - problems missing from the table get the table's prior VPS - else by row
    index), a static per-row array, or ``None`` (plain seeded shuffle).  ``per_problem=True`` divides a row's
    weight by its problem's row count, so each *problem's* total probability follows ``P`` however many rows
    (e.g. CoT variants) it has.  Weights are re-read from the table at every epoch.  Deterministic from
    ``seed`` and the epoch (``numpy.random.default_rng([seed, epoch])``), identical on every rank, so
    accelerate can shard its batches.
    """

    def __init__(
        self,
        data_source: Sized | int,
        scores: VPSTable | Any | None = None,
        *,
        problem_ids: Sequence[str | None] | None = None,
        vas_fraction: float = 0.5,
        num_samples: int | None = None,
        seed: int = 0,
        epsilon: float = 1e-3,
        power: float = 1.0,
        per_problem: bool = False,
    ):
        self.n_rows = data_source if isinstance(data_source, int) else len(data_source)
        if self.n_rows < 1:
            raise ValueError("empty dataset")
        if problem_ids is not None and len(problem_ids) != self.n_rows:
            raise ValueError(f"{len(problem_ids)} problem ids for {self.n_rows} rows")
        if per_problem and problem_ids is None:
            raise ValueError("per_problem=True needs problem_ids")
        if not (0.0 <= vas_fraction <= 1.0):
            raise ValueError(f"vas_fraction (lambda) must be in [0, 1], got {vas_fraction}")
        self.scores = scores
        self.problem_ids = None if problem_ids is None else list(problem_ids)
        self.vas_fraction = float(vas_fraction)
        self.num_samples = self.n_rows if num_samples is None else int(num_samples)
        if self.num_samples < 0:
            raise ValueError(f"num_samples must be >= 0, got {num_samples}")
        self.seed = _check_seed(seed)
        self.epsilon = float(epsilon)
        self.power = float(power)
        self.per_problem = per_problem
        self.epoch = 0
        self._stats: dict[str, Any] = {}
        self.on_epoch: Callable[[int, list[int]], None] | None = None  # debug hook (epoch, row order)
        self.row_probabilities()  # validate now

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.num_samples

    def row_scores(self) -> np.ndarray | None:
        """Per-row VPS (``None`` = no scores: uniform)."""
        if self.scores is None:
            return None
        if isinstance(self.scores, VPSTable):
            if self.problem_ids is not None:
                s = self.scores.vps_for_ids(self.problem_ids)
            else:
                s = self.scores.vps_by_index()
        else:
            s = np.asarray(self.scores, dtype=np.float64).reshape(-1)
        if s.size != self.n_rows:
            raise ValueError(f"{s.size} scores for {self.n_rows} rows (pass problem_ids to look rows up by id)")
        return s

    def row_probabilities(self) -> np.ndarray:
        """``P`` over rows: :func:`vas_probabilities` of the row scores, then (``per_problem``) divided by each
        problem's row count and renormalised; uniform without scores."""
        s = self.row_scores()
        if s is None:
            return np.full(self.n_rows, 1.0 / self.n_rows)
        p = vas_probabilities(s, epsilon=self.epsilon, power=self.power)
        if self.per_problem:
            counts: dict[Any, int] = {}
            for pid in self.problem_ids:
                counts[pid] = counts.get(pid, 0) + 1
            # rows without an id are their own problem
            c = np.array([counts[pid] if pid is not None else 1 for pid in self.problem_ids], dtype=np.float64)
            p = p / c
            p = p / p.sum()
        return p

    def __iter__(self) -> Iterator[int]:
        epoch = self.epoch
        self.epoch += 1
        rng = np.random.default_rng([self.seed, epoch])
        n = self.num_samples
        has_scores = self.scores is not None
        n_vas = int(math.floor(self.vas_fraction * n + 0.5)) if has_scores else 0
        n_uni = n - n_vas
        p = self.row_probabilities()
        v = rng.choice(self.n_rows, size=n_vas, replace=True, p=p) if n_vas else np.empty(0, dtype=np.int64)
        reps = -(-n_uni // self.n_rows) if n_uni else 0
        u = np.concatenate([rng.permutation(self.n_rows) for _ in range(reps)])[:n_uni] if reps else \
            np.empty(0, dtype=np.int64)
        out = np.concatenate([v, u]).astype(np.int64)
        out = out[rng.permutation(out.size)]
        self._stats = {"epoch": epoch, "n_vas": int(n_vas), "n_uniform": int(n_uni),
                       "n_unique": int(np.unique(out).size), **probability_stats(p)}
        order = out.tolist()
        if self.on_epoch is not None:
            self.on_epoch(epoch, order)
        return iter(order)

    def last_epoch_stats(self) -> dict[str, Any]:
        """``n_vas``, ``n_uniform``, ``n_unique`` and the weight statistics of the last epoch drawn."""
        return dict(self._stats)
