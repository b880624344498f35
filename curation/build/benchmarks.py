"""Benchmark files for ``decontaminate``: text and multimodal evaluation sets, read as :class:`BenchItem` s.

A benchmark is given as a path, ``PATH:preset``, or (in a recipe) a mapping::

    benchmarks:
      - ../shared/data/benchmarks/amc23.jsonl                 # columns found by the default names
      - {path: eval/mathvista/data, preset: mathvista}         # a published layout, checked on the first row
      - {path: my_eval.jsonl, map: "problem=q,images=img", image_root: my_eval_images, name: my_eval}

Files: JSONL, a ``.json`` list of records or object of records keyed by id, Parquet, a folder of Parquet
files (every split of a 🤗 Hub download), a ``datasets.save_to_disk`` folder (every split) - whatever
:func:`curation.core.io.read_records` reads. Columns are read through the ``--map`` vocabulary of
``curate ingest`` (:mod:`curation.core.columns`: targets ``problem``, ``answer``, ``solution``, ``images``,
``options``, ``id``, plus ``group`` here; ``a|b`` = first present, ``a+b`` = all), and images through the
same loader (:func:`curation.core.images.image_structs`: relative or absolute paths, bytes, 🤗 ``Image``
structs, lists of them). Relative image paths resolve against ``image_root`` when given, else the file's
folder (plus the preset's image folder, e.g. LogicVista's ``images/``). Without a preset or map, the problem
is the first string of ``problem`` / ``question``, images the first of ``images`` / ``image`` /
``image_path`` / ``image_paths``, the id the first of ``id`` / ``unique_id`` / ``idx`` / ``problem_id``.

Presets (:data:`PRESETS`) fix the mapping of the layouts these benchmarks publish - MathVista, MathVerse,
MATH-Vision, WeMath, DynaMath, LogicVista, MATH-500, AIME, AMC, GSM8K, Minerva, OlympiadBench - each with
its source; the table is in the README. A file that does not fit its preset stops the step with the
columns the preset expected and the columns the file has. Nothing is downloaded: the user supplies the
files. A benchmark that cannot be read (missing file, a row without a problem text, a missing image file) is
a configuration error naming the file and row.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from curation.core.columns import MappingError, column_value, find_columns, parse_mapping
from curation.core.images import ImageError, image_structs
from curation.core.io import KEY_FIELD, read_records

BENCH_TARGETS = ("problem", "answer", "solution", "images", "options", "id", "group")
# the defaults of a benchmark without preset or map (problem|question: what the step always accepted)
_DEFAULTS = {"problem": "problem|question", "answer": "answer|final_answer|ground_truth|gt|gold",
             "solution": "solution", "images": "images|image|image_path|image_paths",
             "options": "options|choices", "id": "id|unique_id|idx|problem_id"}
_IMAGE_TOKEN = re.compile(r"<\s*image[ _]?\d*\s*>|<img_\d+>", re.I)


def strip_image_tokens(text: str) -> str:
    """``<image1>``, ``<image_2>``, ``<image>``, ``<img_3362>`` placeholders carry no content: dropped before
    texts are compared (MATH-Vision writes ``<image1>``, OlympiadBench ``<image_1>`` or ``<img_N>``)."""
    return _IMAGE_TOKEN.sub(" ", text)


@dataclass
class BenchItem:
    """One benchmark problem. ``texts`` are the texts compared with a training row (the problem first, then
    variants a preset names, e.g. MathVerse's ``question_for_eval``); ``group`` ties items that are one
    problem (MathVerse's five versions, DynaMath's ten variants, WeMath's sub-problems)."""

    benchmark: str
    file: str
    row: int
    locator: str
    id: str | None
    problem: str
    answer: str | None = None
    options: list[str] = field(default_factory=list)
    images: list[dict] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    group: str | None = None

    def label(self) -> str:
        who = f"{self.file} row {self.row}"
        return who + (f" (id={self.id})" if self.id is not None and self.id != str(self.row) else "")


# --- answer / option transforms of the published layouts ---------------------------------------------------


def _number_text(v: Any) -> Any:
    """AMC's ``27.0`` -> ``"27"``; AIME's integer answers -> text."""
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    return v if v is None or isinstance(v, str) else str(v)


def _first_answer(v: Any) -> Any:
    """OlympiadBench ``final_answer`` is a list: its first element without ``$`` (Qwen2.5-Math's reading)."""
    if isinstance(v, (list, tuple)):
        v = v[0] if v else None
    return v.strip().strip("$").strip() if isinstance(v, str) else v


def _gsm8k_answer(v: Any) -> Any:
    """GSM8K ``answer`` = rationale + ``#### 72``: the text after ``####``, thousands commas removed."""
    return v.rsplit("####", 1)[1].strip().replace(",", "") if isinstance(v, str) and "####" in v else v


def _boxed_answer(v: Any) -> Any:
    """Minerva has no answer column: the last ``\\boxed{}`` of ``solution``."""
    from curation.verify import last_boxed

    return last_boxed(v) if isinstance(v, str) else None


def _semicolon_options(v: Any) -> Any:
    """WeMath ``option`` is one string ``"A. 200.96;B. 3215.36;C. 6280"``: split on ``;``."""
    return [p.strip() for p in v.split(";") if p.strip()] if isinstance(v, str) else v


@dataclass(frozen=True)
class Preset:
    """A published layout: the column spec per target, the targets that must be present (checked on the first
    row), answer/option transforms, further text columns compared as variants, a column prepended to the
    problem when not null, and the folder image paths are relative to (under the file's folder)."""

    name: str
    mapping: dict[str, str]
    required: tuple[str, ...]
    answer: Callable[[Any], Any] | None = None
    options: Callable[[Any], Any] | None = None
    extra_texts: tuple[str, ...] = ()
    context: str | None = None
    image_dir: str | None = None
    source: str = ""


PRESETS: dict[str, Preset] = {p.name: p for p in [
    # Parquet data/testmini-*.parquet (1,000) / data/test-*.parquet (5,141): pid, question, image (relative
    # path images/N.jpg), decoded_image (Image), choices (list or null), unit, precision, answer,
    # question_type, answer_type, metadata, query (= hint + question + choices: prompt boilerplate shared by
    # all items, so not compared). Test answers are not released.
    Preset("mathvista", {"problem": "question", "answer": "answer", "options": "choices",
                         "images": "decoded_image|image", "id": "pid"}, ("problem", "images", "id"),
           source="https://huggingface.co/datasets/AI4Math/MathVista (README dataset_info)"),
    # testmini.parquet: 788 problems x 5 versions (problem_version Text Dominant / Text Lite / Vision
    # Intensive / Vision Dominant / Vision Only) = 3,940 rows; testmini_text_only.parquet: 788 rows, no image.
    # sample_index, problem_index, problem_version, question, image, answer, question_type, metadata,
    # query_wo / query_cot (prompts), question_for_eval (what lmms-eval's judge reads; compared too).
    Preset("mathverse", {"problem": "question", "answer": "answer", "images": "image", "id": "sample_index",
                         "group": "problem_index"}, ("problem", "id"), extra_texts=("question_for_eval",),
           source="https://huggingface.co/datasets/AI4Math/MathVerse (testmini.parquet, "
                  "testmini_text_only.parquet); features as in https://huggingface.co/datasets/CaraJ/"
                  "MathVerse-lmmseval"),
    # data/test-*.parquet (3,040), data/testmini-*.parquet (304): id, question (with <image1>...), options,
    # image (relative path images/N.jpg), decoded_image (Image), answer, solution, level, subject; the local
    # ../shared/data/math_vision/testmini.jsonl has the same columns without decoded_image.
    Preset("math_vision", {"problem": "question", "answer": "answer", "options": "options",
                           "images": "decoded_image|image", "id": "id"}, ("problem", "images", "id"),
           source="https://huggingface.co/datasets/MathLLMs/MathVision (README dataset_info)"),
    # testmini.json (a list) + testmini.zip of images: ID (3steps_165), split, knowledge concept, question,
    # option ("A. ..;B. .."), answer (letter), image_path (3steps/image/165-3.png), key (the composite
    # problem: its sub-problems reuse derived figures), question number, ...
    Preset("wemath", {"problem": "question", "answer": "answer", "options": "option",
                      "images": "image_path|image", "id": "ID", "group": "key"}, ("problem", "images", "id"),
           options=_semicolon_options,
           source="https://huggingface.co/datasets/We-Math/We-Math (testmini.json, testmini.zip); field "
                  "template in the We-Math GitHub README"),
    # Parquet splits sample_variant1 ... sample_variant10 (501 seed questions each, regenerated numbers and
    # figures): id, question, image (path), decoded_image (Image), ground_truth, answer_type, subject,
    # knowledge_level. Load every split; the variants of one seed share its id (group).
    Preset("dynamath", {"problem": "question", "answer": "ground_truth", "images": "decoded_image|image",
                        "id": "id", "group": "id"}, ("problem", "answer", "images", "id"),
           source="https://huggingface.co/datasets/DynaMath/DynaMath_Sample (README)"),
    # data/dataset.json: ONE JSON object keyed by id (v1_0 ...) + data/images/: imagename (v1_0.png),
    # question, answer ("C", "A, C"), reasoning, skill, capability, imagesource, sourcelink; 448 questions.
    Preset("logicvista", {"problem": "question", "answer": "answer", "images": "imagename",
                          "id": KEY_FIELD}, ("problem", "answer", "images"), image_dir="images",
           source="https://github.com/Yijia-Xiao/LogicVista data/README.md, data/dataset.json"),
    # test.jsonl (500): problem, solution, answer, subject, level, unique_id (test/precalculus/807.json).
    Preset("math500", {"problem": "problem", "answer": "answer", "solution": "solution", "id": "unique_id"},
           ("problem", "answer"), source="https://huggingface.co/datasets/HuggingFaceH4/MATH-500"),
    # HuggingFaceH4/aime_2024 (id, problem, solution, answer, url, year); Maxwell-Jia/AIME_2024 (ID, Problem,
    # Solution, Answer); MathArena/aime_2025 (problem_idx, problem, answer); Qwen2.5-Math data/aime24.
    Preset("aime", {"problem": "problem|question", "answer": "answer", "id": "id|problem_idx"},
           ("problem", "answer"), answer=_number_text,
           source="https://huggingface.co/datasets/HuggingFaceH4/aime_2024, Maxwell-Jia/AIME_2024, "
                  "MathArena/aime_2025; Qwen2.5-Math evaluation/data_loader.py"),
    # Qwen2.5-Math data/amc23/test.jsonl (40): id, problem, question (= problem), answer (float 27.0), url.
    Preset("amc23", {"problem": "problem|question", "answer": "answer", "id": "id"}, ("problem", "answer"),
           answer=_number_text, source="Qwen2.5-Math evaluation/data/amc23/test.jsonl "
                                       "(../shared/data/benchmarks/amc23.jsonl)"),
    # configs main / socratic, splits train (7,473) / test (1,319): question, answer (rationale + #### 72).
    Preset("gsm8k", {"problem": "question", "answer": "answer"}, ("problem", "answer"), answer=_gsm8k_answer,
           source="https://huggingface.co/datasets/openai/gsm8k"),
    # Qwen2.5-Math data/minerva_math/test.jsonl (272): problem, solution, type, idx; no answer column.
    Preset("minerva_math", {"problem": "problem", "answer": "solution", "solution": "solution", "id": "idx"},
           ("problem", "answer"), answer=_boxed_answer,
           source="Qwen2.5-Math evaluation/data/minerva_math/test.jsonl (../shared/data/benchmarks/"
                  "minerva_math.jsonl); answer as its parse_ground_truth"),
    # GitHub data/<subset>.json + images/, HF Hothan/OlympiadBench (18 configs, OE_MM_maths_en_COMP ...):
    # id, question, context (prepended when not null), final_answer (list), solution (list), image_1 ...
    # image_9 (Image structs; placeholders <image_1>), is_multiple_answer, unit, answer_type, error.
    Preset("olympiadbench", {"problem": "question", "answer": "final_answer",
                             "images": "+".join(f"image_{i}" for i in range(1, 10)), "id": "id"},
           ("problem", "answer"), answer=_first_answer, context="context",
           source="https://github.com/OpenBMB/OlympiadBench README; HF Hothan/OlympiadBench image columns; "
                  "Qwen2.5-Math parse_ground_truth (final_answer[0].strip('$'))"),
]}
PRESETS["amc"] = PRESETS["amc23"]
PRESETS["minerva"] = PRESETS["minerva_math"]


class BenchmarkError(ValueError):
    """A benchmark that cannot be read as configured (a configuration error: the step stops)."""


@dataclass
class BenchmarkSpec:
    """One entry of the step's ``benchmarks`` list."""

    path: str
    preset: str | None = None
    map: dict[str, str] = field(default_factory=dict)
    image_root: str | None = None
    name: str | None = None

    @property
    def display(self) -> str:
        """The benchmark's name in details, stats and the data card: ``name``, else the preset, else the file
        name."""
        return self.name or self.preset or Path(self.path).name

    @classmethod
    def parse(cls, value: str | Path | Mapping[str, Any]) -> "BenchmarkSpec":
        """``PATH``, ``PATH:preset`` or ``{path, preset, map, image_root, name}``; unknown presets and keys are
        errors, a missing path is a ``FileNotFoundError``."""
        if isinstance(value, Mapping):
            bad = sorted(set(value) - {"path", "preset", "map", "image_root", "name"})
            if bad:
                raise BenchmarkError(f"decontaminate: benchmark entry {dict(value)!r}: unknown key(s) {bad}; "
                                     "keys are path, preset, map, image_root, name")
            if not value.get("path"):
                raise BenchmarkError(f"decontaminate: benchmark entry {dict(value)!r} has no path")
            spec = cls(str(value["path"]), value.get("preset"),
                       parse_mapping(value.get("map"), BENCH_TARGETS), value.get("image_root"), value.get("name"))
        else:
            path, preset = str(value), None
            head, sep, tail = path.rpartition(":")
            if sep and tail in PRESETS and not Path(path).exists():
                path, preset = head, tail
            spec = cls(path, preset)
        if spec.preset is not None and spec.preset not in PRESETS:
            raise BenchmarkError(f"decontaminate: unknown preset {spec.preset!r} for {spec.path}; presets: "
                                 f"{', '.join(sorted(PRESETS))}")
        if not Path(spec.path).exists():
            raise FileNotFoundError(f"decontaminate: benchmark file not found: {spec.path}")
        return spec


def read_benchmark(spec: BenchmarkSpec | str | Mapping[str, Any], *, column: str = "auto",
                   load_images: bool = True) -> list[BenchItem]:
    """The items of one benchmark (see the module docstring). ``column`` (the step's old option) names the
    problem column when neither a preset nor a map does; ``load_images=False`` skips reading image bytes."""
    spec = spec if isinstance(spec, BenchmarkSpec) else BenchmarkSpec.parse(spec)
    path = Path(spec.path)
    preset = PRESETS[spec.preset] if spec.preset else None
    mapping = dict(_DEFAULTS)
    if column != "auto":
        mapping["problem"] = column
    if preset:
        mapping.update(preset.mapping)
    mapping.update(spec.map)
    default_problem = mapping["problem"] == _DEFAULTS["problem"]
    base = Path(spec.image_root) if spec.image_root else (path if path.is_dir() else path.parent)
    if preset and preset.image_dir and not spec.image_root:
        base = base / preset.image_dir
    items: list[BenchItem] = []
    try:
        records = read_records(path)
        for k, rec in enumerate(records):
            if rec.error is not None or rec.data is None:
                raise BenchmarkError(f"decontaminate: benchmark {rec.locator}: cannot parse: {rec.error}")
            row = rec.data
            cols = {t: find_columns(s, row) for t, s in mapping.items()}
            if k == 0:
                _check_first_row(spec, preset, mapping, cols, row)
            items.append(_item(spec, preset, k, rec.locator, row, cols, base, default_problem, load_images))
    except MappingError as e:
        raise BenchmarkError(str(e)) from e
    if not items:
        raise BenchmarkError(f"decontaminate: benchmark {spec.path} has no rows")
    return items


def _check_first_row(spec: BenchmarkSpec, preset: Preset | None, mapping: dict, cols: dict, row: dict) -> None:
    need = list(preset.required) if preset else []
    need += [t for t in spec.map if t not in need]  # a mapped column must exist, as in curate ingest
    missing = [t for t in need if not cols.get(t)]
    if missing:
        who = f"preset {preset.name}" if preset else "map"
        found = ", ".join(sorted(str(c) for c in row if c != KEY_FIELD))
        raise BenchmarkError(
            f"decontaminate: {who} expects columns [{', '.join(mapping[t] for t in need)}]; "
            f"{Path(spec.path).name} has [{found}] (missing: {', '.join(missing)}; give the columns with "
            "map: target=column, or another preset)")


def _item(spec: BenchmarkSpec, preset: Preset | None, k: int, loc: str, row: dict, cols: dict, base: Path,
          default_problem: bool, load_images: bool) -> BenchItem:
    text = column_value(row, cols["problem"])
    if not isinstance(text, str):
        if default_problem and not cols["problem"]:
            raise BenchmarkError(
                f"decontaminate: benchmark {loc}: no string 'problem' or 'question' column (columns: "
                f"{sorted(row)}); set column: (or map: problem=COLUMN) to the problem column")
        col = cols["problem"][0] if cols["problem"] else spec.map.get("problem") or "problem"
        raise BenchmarkError(f"decontaminate: benchmark {loc}: column {col!r} is not a string ({text!r})")
    if preset and preset.context and isinstance(row.get(preset.context), str) and row[preset.context].strip():
        text = f"{row[preset.context]}\n{text}"
    answer = column_value(row, cols["answer"])
    if preset and preset.answer:
        answer = preset.answer(answer)
    options = column_value(row, cols["options"])
    if preset and preset.options:
        options = preset.options(options)
    options = [str(o) for o in options] if isinstance(options, (list, tuple)) else \
        ([options] if isinstance(options, str) and options.strip() else [])
    texts = [text] + [v for c in (preset.extra_texts if preset else ())
                      if isinstance(v := row.get(c), str) and v.strip() and v != text]
    images: list[dict] = []
    if load_images and cols.get("images"):
        try:
            images = image_structs(column_value(row, cols["images"]), base)
        except (ImageError, TypeError) as e:
            raise BenchmarkError(f"decontaminate: benchmark {loc}: {e} (image paths resolve against {base}; "
                                 "set image_root: to their folder)") from e
    rid, group = column_value(row, cols["id"]), column_value(row, cols.get("group", []))
    return BenchItem(spec.display, spec.path, k, loc, None if rid is None else str(rid), text,
                     None if answer is None else str(_number_text(answer)), options, images, texts,
                     None if group is None else str(group))
