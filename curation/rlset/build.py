"""``curate rl-set``: RL question-answer pairs in TRL's GRPO format, split for ReVisual-R1's stages.

Outputs in ``DIR``:

- ``rl_multimodal.parquet`` (schema ``rl_mm``): problems with images, for stage 2 (multimodal GRPO).
- ``rl_text.parquet`` (schema ``rl_text``): text-only problems, for stage 3 (text GRPO).
- ``rl.parquet``: all kept problems, in input order; schema ``rl_text`` when none has images, otherwise
  ``rl_mm`` (text rows then carry typed parts and an empty ``images`` list).  The two split files are
  always written (possibly empty) so recipes can name them unconditionally.
- ``excluded.parquet`` (schema ``excluded``, ``step = "rl-set"``): every dropped problem with its reason.
- ``stats.json``: settings, counts, per-reason counts, groups before/after balancing, answer kinds.

Each kept row has a conversational ``prompt`` (the template's system prompt - by default ``r1``: reason
inside ``<think></think>``, answer in ``\\boxed{}`` - and the user message, with ``{"type": "image"}``
parts for multimodal rows), ``images`` (original bytes, in the order of the image parts), the gold
``answer`` and ``options`` for the reward functions, ``problem_id``, ``source``, and the VPS components
``pass_rate``, ``ovs``, ``tds``, ``vps`` and the pass-rate posterior ``post_a``, ``post_b``, ``post_mean``,
``post_lo``, ``post_hi``, ``post_ovs`` from ``--scores`` (null without scores) so the trainer can sample by
VPS (or by the posterior's expected outcome variance).  ``datasets.load_dataset("parquet", ...)`` gives exactly what ``trl.GRPOTrainer`` expects.

Filters, in order (the first failing one is the row's exclusion reason):

=========================  ========================================================================
``malformed_row``          an input line that is not a JSON object
``missing_id``             no ``id``; ``duplicate_id``: an id seen before (the first row is kept)
``missing_problem``        empty problem text; ``missing_answer``: empty gold answer
``modality``               a text-only row with ``--modality multimodal`` or an image row with ``text``
``unverifiable``           the gold answer cannot be checked automatically
                           (:func:`curation.verify.classify_gold`: proof, open-ended prose, malformed,
                           choice label not among the options); ``detail`` names the sub-reason
``answer_too_long``        normalised gold answer longer than ``max_answer_chars`` (not a short answer)
``no_score``               a pass-rate band is set but the problem has no score row (with
                           ``unscored="keep"`` such rows are kept instead, with null VPS columns - e.g. image
                           problems a text-only model could not score, excluded there as ``needs_vision``)
``pass_rate_out_of_band``  pass rate outside the band (``detail`` gives p and the band)
``bad_image``              an image that cannot be decoded (from :func:`curation.core.prompts.build_prompt`)
``balance``                over its group's cap when balancing
=========================  ========================================================================

Pass-rate band.  It reads ``pass_rate`` (``c / N``), or with ``pass_column="post_mean"`` (``--pass-column
post_mean``) the posterior mean ``E[p]``; the difficulty bins read the same column.  ``min_pass`` /
``max_pass`` take an explicit comparison: ``">0"`` (exclusive),
``">=0.125"`` (inclusive), ``"<1"``, ``"<=0.875"``; a bare number is **inclusive** (``0.1`` = ``>=0.1`` as
a minimum, ``<=0.9`` as a maximum).  ``min_pass=">0", max_pass="<1"`` drops the prompts every rollout got
wrong (p = 0) or right (p = 1): their GRPO groups have zero reward variance, hence zero advantages and no
gradient (MMR1's OVS = p(1-p) = 0).

Balancing.  ``balance="source"`` groups rows by ``source``; ``balance="difficulty"`` groups them by
difficulty bin: with scores, ``bin = min(floor(p * B), B - 1)`` for ``B = difficulty_bins`` equal-width
pass-rate bins over [0, 1] (bin 0 = hardest); without scores, the ``level`` field of ``meta`` (rows
without one form the group ``level=unknown``).  Every group keeps at most ``cap`` rows, ``cap =
per_group`` when given, else the size of the smallest group (equal counts per group).  A group over the
cap keeps a uniform random subset, drawn with ``random.Random(f"{seed}:{group}")`` from its rows in input
order (reproducible, independent of other groups); smaller groups are kept whole (never up-sampled).
"""

from __future__ import annotations

import json
import math
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pyarrow as pa
import pyarrow.parquet as pq

from curation.core import images as I
from curation.core import schema as S
from curation.core.bands import Bound, band_text, parse_bound
from curation.core.io import (
    ExclusionWriter,
    read_records,
    repair_summary,
    write_json_atomic,
    write_parquet_atomic,
)
from curation.core.prompts import PromptError, build_prompt, image_order, load_template, to_mm_messages
from curation.verify import normalize_answer

__all__ = ["Bound", "RlSetResult", "parse_bound", "build_rl_set"]

STEP = "rl-set"
MODALITIES = ("text", "multimodal", "all")
BALANCE = ("source", "difficulty")
ProgressFactory = Callable[[str, "int | None"], Callable[[int], None]]


@dataclass
class RlSetResult:
    out_dir: Path
    rl: pa.Table
    rl_text: pa.Table
    rl_multimodal: pa.Table
    excluded: pa.Table
    stats: dict = field(default_factory=dict)


# --------------------------------------------------------------------------------------------- helpers


def _meta(row: dict) -> dict:
    m = row.get("meta")
    if isinstance(m, dict):
        return m
    if isinstance(m, str) and m.strip():
        try:
            got = json.loads(m)
            return got if isinstance(got, dict) else {}
        except json.JSONDecodeError:
            return {}
    return {}


SCORE_FIELDS = ("pass_rate", "ovs", "tds", "vps")
POSTERIOR_FIELDS = tuple(f.name for f in S.POSTERIOR_FIELDS)
PASS_COLUMNS = ("pass_rate", "post_mean")


def load_scores(path: str | Path, model: str | None) -> tuple[dict[str, dict], str | None]:
    """``problem_id -> {pass_rate, ovs, tds, vps, post_a, post_b, post_mean, post_lo, post_hi, post_ovs}`` for
    one model of a ``curate score`` scores table (the posterior columns are null for tables written before
    them).  Several models need ``model``; a problem scored twice for the model is an error."""
    t = pq.read_table(path)
    for need in ("problem_id", *SCORE_FIELDS):
        if need not in t.column_names:
            raise ValueError(f"{path}: not a scores table (no column {need!r}; has {t.column_names})")
    for col in POSTERIOR_FIELDS:
        if col not in t.column_names:
            t = t.append_column(col, pa.nulls(t.num_rows, pa.float64()))
    t, model = S.select_model(t, model, where=f"{path}: ")
    out: dict[str, dict] = {}
    for r in t.select(["problem_id", *SCORE_FIELDS, *POSTERIOR_FIELDS]).to_pylist():
        pid = r.pop("problem_id")
        if pid in out:
            raise ValueError(f"{path}: problem {pid!r} has more than one score row for model {model}")
        out[pid] = r
    return out, model


def difficulty_bin(p: float, bins: int) -> int:
    """``min(floor(p * B), B - 1)``: equal-width pass-rate bins, 0 = hardest."""
    return min(int(math.floor(p * bins)), bins - 1)


def _bin_label(b: int, bins: int) -> str:
    lo, hi = b / bins, (b + 1) / bins
    return f"p[{lo:.2f},{hi:.2f}{']' if b == bins - 1 else ')'}"


def balance_groups(keys: list[str], cap: int | None, seed: int) -> tuple[list[bool], dict, int]:
    """Which rows survive balancing: ``(keep flags, {group: (before, after)}, cap)``.  See the module
    docstring for the rule."""
    groups: dict[str, list[int]] = {}
    for i, k in enumerate(keys):
        groups.setdefault(k, []).append(i)
    if not groups:
        return [], {}, 0
    cap = cap if cap is not None else min(len(v) for v in groups.values())
    keep = [False] * len(keys)
    sizes = {}
    for g, idx in sorted(groups.items()):
        chosen = idx if len(idx) <= cap else sorted(random.Random(f"{seed}:{g}").sample(idx, cap))
        for i in chosen:
            keep[i] = True
        sizes[g] = (len(idx), len(chosen))
    return keep, sizes, cap


# --------------------------------------------------------------------------------------------- main


def build_rl_set(
    problems: str | Path,
    out: str | Path,
    *,
    scores: str | Path | None = None,
    model: str | None = None,
    min_pass: str | float | None = None,
    max_pass: str | float | None = None,
    balance: str | None = None,
    per_group: int | None = None,
    difficulty_bins: int = 3,
    modality: str = "all",
    max_answer_chars: int = 64,
    seed: int = 0,
    template: str = "r1",
    unscored: str = "exclude",
    pass_column: str = "pass_rate",
    progress: ProgressFactory | None = None,
) -> RlSetResult:
    """Build ``DIR/rl*.parquet`` from a problems table (see the module docstring).  ``pass_column``: which
    score the band and the difficulty bins read, ``pass_rate`` (``c / N``) or ``post_mean`` (the posterior
    mean, which does not put 0 of 4 and 0 of 32 in the same place)."""
    from curation.verify import classify_gold

    if pass_column not in PASS_COLUMNS:
        raise ValueError(f"--pass-column must be one of {', '.join(PASS_COLUMNS)}, got {pass_column!r}")

    if unscored not in ("exclude", "keep"):
        raise ValueError(f"--unscored must be 'exclude' or 'keep', got {unscored!r}")
    if modality not in MODALITIES:
        raise ValueError(f"--modality must be one of {', '.join(MODALITIES)}, got {modality!r}")
    if balance is not None and balance not in BALANCE:
        raise ValueError(f"--balance must be one of {', '.join(BALANCE)}, got {balance!r}")
    if per_group is not None and per_group < 1:
        raise ValueError(f"--per-group must be >= 1, got {per_group}")
    if per_group is not None and balance is None:
        raise ValueError("--per-group needs --balance source|difficulty")
    if difficulty_bins < 1:
        raise ValueError(f"--difficulty-bins must be >= 1, got {difficulty_bins}")
    if max_answer_chars < 1:
        raise ValueError(f"--max-answer-chars must be >= 1, got {max_answer_chars}")
    lo, hi = parse_bound(min_pass, "min"), parse_bound(max_pass, "max")
    if lo and hi and (lo.value > hi.value or (lo.value == hi.value and not (lo.inclusive and hi.inclusive))):
        raise ValueError(f"empty pass-rate band {band_text(lo, hi)}")
    band = lo is not None or hi is not None
    if band and scores is None:
        raise ValueError("--min-pass/--max-pass need --scores (pass rates come from `curate score`)")
    score_map, score_model = load_scores(scores, model) if scores is not None else ({}, None)
    tpl = load_template(template)
    out = Path(out)

    excl = ExclusionWriter()
    cand: list[dict] = []  # rows that passed every filter but balancing
    seen: dict[str, str] = {}
    n_read = 0
    advance = progress("rl-set", None) if progress else None
    for rec in read_records(problems):
        n_read += 1
        if advance:
            advance(1)
        if rec.error:
            excl.add(None, step=STEP, reason="malformed_row", detail=f"{rec.locator}: {rec.error}",
                     locator=rec.locator, raw=rec.raw)
            continue
        excl.note_repair(rec)
        row = dict(rec.data)
        loc = rec.locator
        pid = row.get("id")
        if not isinstance(pid, str) or not pid.strip():
            excl.add(row, step=STEP, reason="missing_id", detail=f"{loc}: field 'id' is missing or empty", locator=loc)
            continue
        who = f"{loc} (id={pid})"
        if pid in seen:
            excl.add(row, step=STEP, reason="duplicate_id", duplicate_of=pid,
                     detail=f"{who}: id already used at {seen[pid]}", locator=loc)
            continue
        seen[pid] = loc
        if not isinstance(row.get("problem"), str) or not row["problem"].strip():
            excl.add(row, step=STEP, reason="missing_problem", detail=f"{who}: field 'problem' is missing or empty",
                     locator=loc)
            continue
        answer = row.get("answer")
        if answer is None or not str(answer).strip():
            excl.add(row, step=STEP, reason="missing_answer", detail=f"{who}: field 'answer' is missing or empty",
                     locator=loc)
            continue
        answer = str(answer)
        images = row.get("images") or []
        has_images = bool(images)
        if (modality == "text" and has_images) or (modality == "multimodal" and not has_images):
            excl.add(row, step=STEP, reason="modality",
                     detail=f"{who}: {len(images)} image(s), --modality {modality}", locator=loc)
            continue
        options = row.get("options") or None
        parsed, why = classify_gold(answer, options)
        if parsed is None:
            excl.add(row, step=STEP, reason="unverifiable",
                     detail=f"{who}: gold answer {answer[:80]!r} is not automatically checkable ({why})", locator=loc)
            continue
        norm = normalize_answer(answer)
        if len(norm) > max_answer_chars:
            excl.add(row, step=STEP, reason="answer_too_long",
                     detail=f"{who}: gold answer has {len(norm)} characters (max {max_answer_chars})", locator=loc)
            continue
        sc = score_map.get(pid)
        if band:
            if sc is None and unscored == "exclude":
                excl.add(row, step=STEP, reason="no_score", detail=f"{who}: not in {scores}", locator=loc)
                continue
            if sc is not None and sc[pass_column] is None:
                raise ValueError(f"{scores}: no {pass_column} for problem {pid!r} (a scores table from before the "
                                 "posterior columns? re-score it, or use --pass-column pass_rate)")
            p = float(sc[pass_column]) if sc is not None else None
            if p is not None and ((lo and not lo.admits(p, "min")) or (hi and not hi.admits(p, "max"))):
                excl.add(row, step=STEP, reason="pass_rate_out_of_band",
                         detail=f"{who}: {pass_column} {p:g} outside {band_text(lo, hi)}", locator=loc)
                continue
        try:
            bp = build_prompt(row, tpl)
        except PromptError as e:
            excl.add(row, step=STEP, reason=e.reason, detail=f"{loc}: {e}", locator=loc)
            continue
        except (I.ImageError, KeyError, TypeError) as e:
            excl.add(row, step=STEP, reason="bad_image", detail=f"{who}: {e}", locator=loc)
            continue
        out_images = image_order(images, bp.images, tpl.image_placement) if bp.images else []
        cand.append({
            "_row": row,
            "_loc": loc,
            "_messages": bp.messages,
            "_kind": parsed.kind,
            "problem_id": pid,
            "source": row.get("source"),
            "answer": answer,
            "options": [str(o) for o in options] if options else None,
            "images": out_images,
            **{k: (sc[k] if sc else None) for k in (*SCORE_FIELDS, *POSTERIOR_FIELDS)},
        })

    groups_info: dict[str, tuple[int, int]] = {}
    cap = None
    if balance is not None:
        if balance == "source":
            keys = [f"source={c['source']}" for c in cand]
        elif score_map:
            keys = []
            for c in cand:
                p = c[pass_column]
                keys.append("unscored" if p is None else _bin_label(difficulty_bin(float(p), difficulty_bins),
                                                                     difficulty_bins))
        else:
            keys = [f"level={_meta(c['_row']).get('level', 'unknown')}" for c in cand]
        flags, groups_info, cap = balance_groups(keys, per_group, seed)
        kept = []
        for c, k, f in zip(cand, keys, flags):
            if f:
                kept.append(c)
            else:
                before, after = groups_info[k]
                excl.add(c["_row"], step=STEP, reason="balance",
                         detail=f"{c['_loc']} (id={c['problem_id']}): group {k} has {before} rows, cap {cap}",
                         locator=c["_loc"])
        cand = kept

    kinds = Counter(c["_kind"] for c in cand)
    text_rows, mm_rows, all_rows = [], [], []
    any_mm = any(c["images"] for c in cand)
    for c in cand:
        base = {k: v for k, v in c.items() if not k.startswith("_")}
        if c["images"]:
            r = {**base, "prompt": to_mm_messages(c["_messages"])}
            mm_rows.append(r)
            all_rows.append(r)
        else:
            base.pop("images")
            r = {**base, "prompt": c["_messages"]}
            text_rows.append(r)
            all_rows.append({**r, "prompt": to_mm_messages(c["_messages"]), "images": []} if any_mm else r)

    rl_text = S.to_table(text_rows, "rl_text")
    rl_mm = S.to_table(mm_rows, "rl_mm")
    rl_all = S.to_table(all_rows, "rl_mm" if any_mm else "rl_text")
    excluded = excl.table()
    out.mkdir(parents=True, exist_ok=True)
    write_parquet_atomic(rl_text, out / "rl_text.parquet")
    write_parquet_atomic(rl_mm, out / "rl_multimodal.parquet")
    write_parquet_atomic(rl_all, out / "rl.parquet")
    write_parquet_atomic(excluded, out / "excluded.parquet")

    reasons = dict(sorted(Counter(excluded.column("reason").to_pylist()).items()))
    stats = {
        "settings": {
            "problems": str(problems),
            "scores": str(scores) if scores else None,
            "model": score_model,
            "pass_band": band_text(lo, hi) if band else None,
            "pass_column": pass_column,
            "balance": balance,
            "per_group": per_group,
            "cap": cap,
            "difficulty_bins": difficulty_bins if balance == "difficulty" else None,
            "modality": modality,
            "max_answer_chars": max_answer_chars,
            "seed": seed,
            "template": tpl.name,
        },
        "counts": {
            "rows_read": n_read,
            "kept": rl_all.num_rows,
            "text": rl_text.num_rows,
            "multimodal": rl_mm.num_rows,
            "excluded": excluded.num_rows,
            "with_scores": sum(1 for r in all_rows if r["vps"] is not None),
        },
        "excluded_reasons": reasons,
        "groups": {g: {"before": b, "after": a} for g, (b, a) in groups_info.items()},
        "answer_kinds": dict(sorted(kinds.items())),
        "repaired": repair_summary(excl),
    }
    write_json_atomic(stats, out / "stats.json")
    return RlSetResult(out, rl_all, rl_text, rl_mm, excluded, stats)
