"""The dataset card: its context from the staged tables and stats (rows per step and reason, scoring
settings, histograms, sources, decontamination, licences), rendered from ``data_cards/<kind>.md.j2`` and
validated as huggingface_hub does."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import pyarrow as pa
import yaml

from curation.publish.discover import _KIND_MAIN, Discovery, PublishError, _rel

__all__ = ["SPLIT", "HUB_LICENSES", "ConfigInfo", "card_context", "render_card", "size_category", "validate_card"]

SPLIT = "train"



TEMPLATES_DIR = Path(__file__).resolve().parents[2] / "data_cards"



# Licences of the sources the ingest adapters know (see /work/shared/README.md); used when --license is
# not given and every source agrees.
KNOWN_SOURCE_LICENSES = {"gsm8k": "mit", "math_vision": "mit", "math": "mit"}



# Hub licence identifiers accepted by --license (https://huggingface.co/docs/hub/repositories-licenses).
HUB_LICENSES = {
    "apache-2.0", "mit", "openrail", "bigscience-openrail-m", "creativeml-openrail-m", "bigscience-bloom-rail-1.0",
    "bigcode-openrail-m", "afl-3.0", "artistic-2.0", "bsl-1.0", "bsd", "bsd-2-clause", "bsd-3-clause",
    "bsd-3-clause-clear", "c-uda", "cc", "cc0-1.0", "cc-by-2.0", "cc-by-2.5", "cc-by-3.0", "cc-by-4.0",
    "cc-by-sa-3.0", "cc-by-sa-4.0", "cc-by-nc-2.0", "cc-by-nc-3.0", "cc-by-nc-4.0", "cc-by-nd-4.0",
    "cc-by-nc-nd-3.0", "cc-by-nc-nd-4.0", "cc-by-nc-sa-2.0", "cc-by-nc-sa-3.0", "cc-by-nc-sa-4.0",
    "cdla-sharing-1.0", "cdla-permissive-1.0", "cdla-permissive-2.0", "wtfpl", "ecl-2.0", "epl-1.0",
    "epl-2.0", "etalab-2.0", "eupl-1.1", "eupl-1.2", "agpl-3.0", "gfdl", "gpl", "gpl-2.0", "gpl-3.0", "lgpl",
    "lgpl-2.1", "lgpl-3.0", "isc", "h-research", "intel-research", "lppl-1.3c", "ms-pl", "apple-ascl",
    "apple-amlr", "mpl-2.0", "odc-by", "odbl", "openmdw-1.0", "openrail++", "osl-3.0", "postgresql", "ofl-1.1",
    "ncsa", "unlicense", "zlib", "pddl", "lgpl-lr", "deepfloyd-if-license", "fair-noncommercial-research-license",
    "llama2", "llama3", "llama3.1", "llama3.2", "llama3.3", "llama4", "grok2-community", "gemma", "unknown",
    "other",
}



@dataclass
class ConfigInfo:
    name: str
    description: str
    num_rows: int
    num_bytes: int
    files: list[str]
    columns: list[str]
    features: Any
    sources: dict[str, int]  # rows per ``source`` (empty when the table has no source column)
    with_images: int | None  # rows with at least one image (None when no image column)
    with_vps: int | None  # rows with a non-null ``vps`` (None when no vps column)
    inputs: list[str]  # the local tables it came from (relative to the published folder)



def size_category(n: int) -> str:
    """The Hub's ``size_categories`` bucket of ``n`` rows (datasets/utils/resources/size_categories.json)."""
    bounds = [(1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
              (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M"), (1_000_000_000, "100M<n<1B")]
    for bound, label in bounds:
        if n < bound:
            return label
    return "1B<n<10B"



def _infer_license(infos: Mapping[str, ConfigInfo]) -> str:
    sources = {s for info in infos.values() for s in info.sources}
    lic = {KNOWN_SOURCE_LICENSES.get(s) for s in sources}
    if len(lic) == 1 and None not in lic:
        return lic.pop()
    return "other"



def _benchmark_label(b: Any) -> str:
    """A ``decontaminate`` benchmark entry (``PATH``, ``PATH:preset`` or ``{path, preset, name, ...}``) by
    file name."""
    if isinstance(b, dict):
        label = Path(str(b.get("path"))).name
        return b.get("name") or (f"{label}:{b['preset']}" if b.get("preset") else label)
    return Path(str(b)).name


# step-entry keys of stats.json that are results (a step's summary()), not options
_STEP_RESULT_KEYS = {"step", "rows_in", "rows_out", "excluded", "seconds", "benchmarks_checked", "thresholds",
                     "rows_compared"}


def _step_options(step: dict) -> str:
    """Compact ``k=v`` list of a build step's options (paths shown by file name)."""
    parts = []
    for k, v in step.items():
        if k in _STEP_RESULT_KEYS or v is None or v == [] or v == {}:
            continue
        if k == "benchmarks" and isinstance(v, list):
            v = [_benchmark_label(b) for b in v]
        if isinstance(v, (list, tuple)):
            v = ",".join(str(x) for x in v)
        parts.append(f"{k}={v}")
    return ", ".join(parts)



_SCORE_SETTING_KEYS: list[tuple[str, tuple[str, ...]]] = [
    ("mode", ("mode",)),
    ("model", ("model_name", "model", "models")),
    ("N (samples per prompt)", ("n", "num_samples", "samples")),
    ("temperature", ("temperature",)),
    ("top_p", ("top_p",)),
    ("max_tokens", ("max_tokens", "max_new_tokens")),
    ("seed", ("seed",)),
    ("TDS metric", ("tds_metric", "metric")),
    ("alpha (OVS weight)", ("alpha",)),
    ("beta (TDS weight)", ("beta",)),
    ("normalize_ovs", ("normalize_ovs",)),
    ("engine", ("engine_name", "engine", "backend")),
    ("prompt template", ("prompt_template",)),
    ("pass-rate prior", ("prior",)),
    ("credible interval", ("credible",)),
    ("VPS from", ("vps_from",)),
    ("adaptive scoring", ("adaptive",)),
]


def _setting_text(key: str, value: Any) -> Any:
    """Dict-valued settings as one line: the prior (curation.score.posterior.PriorSpec) and the adaptive policy."""
    if key == "prior" and isinstance(value, dict):
        from curation.score.posterior import PriorSpec

        try:
            return PriorSpec(**value).label()
        except (TypeError, ValueError):
            return value.get("kind")
    if key == "credible" and isinstance(value, (int, float)):
        return f"{value:.0%} equal-tailed"
    if key == "adaptive" and isinstance(value, dict):
        parts = [f"n_max {value.get('n_max')}", f"round {value.get('round_size')}", f"band {value.get('band_text')}",
                 f"delta {value.get('delta')}", f"VPS precision {value.get('vps_precision')}"]
        if value.get("budget"):
            parts.append(f"budget {value['budget']}")
        return ", ".join(parts)
    return value



def _score_settings(stats: dict | None, scores: pa.Table | None) -> list[dict]:
    """Scoring settings from the score stage's stats.json (top level or under ``settings``/``config``),
    completed from the scores table itself (models, N) when the stats lack them."""
    pools: list[dict] = []
    if stats:
        for key in ("settings", "config", "options", "args"):
            if isinstance(stats.get(key), dict):
                pools.append(stats[key])
        pools.append(stats)
    rows = []
    for label, keys in _SCORE_SETTING_KEYS:
        value = None
        for pool in pools:
            for k in keys:
                v = pool.get(k)
                if v is not None and (not isinstance(v, dict) or k in ("prior", "adaptive")):
                    value = _setting_text(k, v)
                    break
            if value is not None:
                break
        if value is None and scores is not None and scores.num_rows:
            if label == "model":
                value = sorted(set(scores.column("model").to_pylist()))
            elif label.startswith("N "):
                value = sorted(set(scores.column("n").to_pylist()))
        if value is None:
            continue
        if isinstance(value, (list, tuple)):
            value = ", ".join(str(v) for v in value)
        rows.append({"setting": label, "value": value})
    return rows



def _scalars(d: Mapping[str, Any], prefix: str = "") -> list[dict]:
    """Flatten the numeric/short-string entries of a stats dict into ``key``/``value`` rows."""
    out = []
    for k, v in d.items():
        key = f"{prefix}{k}"
        if k == "timing" or k.endswith(("_s", "seconds")):  # run times are not properties of the data
            continue
        if isinstance(v, bool) or isinstance(v, (int, float)):
            out.append({"key": key, "value": v})
        elif isinstance(v, str) and len(v) <= 80 and not ("/" in v or "\\" in v):
            out.append({"key": key, "value": v})
        elif isinstance(v, dict) and len(prefix.split(".")) < 3:
            out.extend(_scalars(v, f"{key}."))
    return out



def card_context(
    discovery: Discovery,
    infos: Mapping[str, ConfigInfo],
    *,
    kind: str,
    main: str,
    repo_id: str,
    license: str | None,
    pretty_name: str | None,
    score_summary: dict | None,
    scores_table: pa.Table | None,
    assets: Mapping[str, str],
    verdicts: Mapping[str, int] | None = None,
) -> dict:
    """Everything the card templates show; every number comes from the tables or a stats.json."""
    from datasets import DatasetInfo, SplitDict, SplitInfo

    license = license or _infer_license(infos)
    if license not in HUB_LICENSES:
        raise PublishError(f"--license {license!r} is not a Hub licence identifier (e.g. mit, apache-2.0, "
                           "cc-by-4.0, other)")
    multimodal = any((i.with_images or 0) > 0 for i in infos.values())
    main_rows = infos[main].num_rows
    order = list(infos)

    configs_yaml = []
    infos_yaml = []
    for name in order:
        info = infos[name]
        entry: dict[str, Any] = {"config_name": name, "data_files": [{"split": SPLIT, "path": f"data/{name}/{SPLIT}-*"}]}
        if name == main:
            entry["default"] = True
        configs_yaml.append(entry)
        di = DatasetInfo(features=info.features, splits=SplitDict())
        di.splits.add(SplitInfo(name=SPLIT, num_bytes=info.num_bytes, num_examples=info.num_rows))
        di.dataset_size = info.num_bytes
        d = di._to_yaml_dict()
        d.pop("download_size", None)
        d = {"config_name": name, **d}
        infos_yaml.append(d)

    tags = ["math", "reasoning", "rlcurate"]
    if multimodal:
        tags.append("multimodal")
    if "scores" in infos or any("vps" in infos[c].columns for c in infos):
        tags += ["mmr1", "variance-aware-sampling"]
    if any(c.startswith("rl") for c in infos):
        tags.append("grpo")
    if any(c.startswith("cold_start") for c in infos):
        tags += ["sft", "chain-of-thought"]
    task_categories = ["question-answering", "text-generation"]
    if multimodal:
        task_categories.append("visual-question-answering")
    name = pretty_name or repo_id.split("/")[-1]
    metadata = {
        "pretty_name": name,
        "license": license,
        "language": ["en"],
        "task_categories": task_categories,
        "size_categories": [size_category(main_rows)],
        "tags": tags,
        "configs": configs_yaml,
        "dataset_info": infos_yaml,
    }

    # curation: ingest stats (one per source), then the build steps
    ingest = []
    for _folder, st in sorted(discovery.stats.get("ingest", []), key=lambda x: str(x[0])):
        ingest.append({
            "source": st.get("source"), "format": st.get("format"), "rows_in": st.get("rows_in"),
            "rows_out": st.get("rows_out"), "excluded": dict(st.get("excluded") or {}),
            "excluded_total": sum((st.get("excluded") or {}).values()), "with_images": st.get("with_images"),
        })
    builds = discovery.stats.get("build", [])
    build = None
    if builds:
        # the build whose problems table is published, else the first one
        chosen = [b for b in builds if any(t.path.parent == b[0] for t in discovery.tables.get("problems", []))]
        st = (chosen or builds)[0][1]
        steps = []
        for s in st.get("steps", []):
            steps.append({
                "step": s.get("step"), "options": _step_options(s), "rows_in": s.get("rows_in"),
                "rows_out": s.get("rows_out"), "excluded": dict(s.get("excluded") or {}),
                "excluded_total": sum((s.get("excluded") or {}).values()),
            })
        decon = [s for s in st.get("steps", []) if s.get("step") == "decontaminate"]
        build = {
            "input_rows": st.get("input_rows"), "output_rows": st.get("output_rows"),
            "excluded_rows": st.get("excluded_rows"), "excluded_by_reason": dict(st.get("excluded_by_reason") or {}),
            "steps": steps,
            "decontamination": [
                {
                    "benchmarks": [_benchmark_label(b) for b in (d.get("benchmarks") or [])],
                    "checked": [
                        {**c, "file": Path(str(c.get("path"))).name,
                         "by_rule": ", ".join(f"{r}: {n}" for r, n in (c.get("excluded_by_rule") or {}).items())}
                        for c in d.get("benchmarks_checked") or []
                    ],
                    "thresholds": d.get("thresholds") or {},
                    "options": _step_options({k: v for k, v in d.items() if k != "benchmarks"}),
                    "rows_in": d.get("rows_in"), "excluded": dict(d.get("excluded") or {}),
                    "excluded_total": sum((d.get("excluded") or {}).values()),
                }
                for d in decon
            ],
        }

    scoring = None
    if scores_table is not None:
        score_stats = (discovery.stats.get("score") or [(None, None)])[0][1]
        scoring = {
            "settings": _score_settings(score_stats, scores_table),
            "summary": (score_summary or {}).get("overall"),
            "per_model": (score_summary or {}).get("per_model") or {},
            "histograms": dict(assets),
            "verdicts": dict(verdicts or {}),
        }
    other_stages = []
    for stage_name in ("cot", "rl-set"):
        for folder, st in discovery.stats.get(stage_name, []):
            other_stages.append({"stage": stage_name, "folder": _rel(folder, discovery.root),
                                 "entries": _scalars(st)})

    sources = sorted({s for i in infos.values() for s in i.sources})
    source_mix = {
        "configs": [c for c in order if infos[c].sources and c != "excluded"],
        "rows": [
            {"source": s, **{c: infos[c].sources.get(s, 0) for c in order if infos[c].sources and c != "excluded"}}
            for s in sources
        ],
    }
    return {
        "repo_id": repo_id,
        "pretty_name": name,
        "kind": kind,
        "main_config": main,
        "license": license,
        "multimodal": multimodal,
        "metadata_yaml": yaml.safe_dump(metadata, sort_keys=False, allow_unicode=True, width=1000),
        "metadata": metadata,
        "configs": [
            {"name": c, "description": infos[c].description, "rows": infos[c].num_rows,
             "files": infos[c].files, "columns": infos[c].columns, "with_images": infos[c].with_images,
             "inputs": infos[c].inputs, "default": c == main, "with_vps": infos[c].with_vps}
            for c in order
        ],
        "kind_configs": [c for c in _KIND_MAIN[kind] if c in infos],
        "kind_rows": sum(infos[c].num_rows for c in _KIND_MAIN[kind] if c in infos),
        "kind_vps_rows": sum(infos[c].with_vps or 0 for c in _KIND_MAIN[kind] if c in infos),
        "ingest": ingest,
        "build": build,
        "scoring": scoring,
        "source_mix": source_mix,
        "other_stages": other_stages,
    }



def _md_cell(value: Any) -> str:
    """A value safe inside a Markdown table cell."""
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "\\|").replace("\n", " ")



def render_card(context: Mapping[str, Any], *, kind: str | None = None,
                templates_dir: str | Path | None = None) -> str:
    """Render ``data_cards/<kind>.md.j2`` (Jinja, strict: an unknown variable is an error)."""
    import jinja2

    tdir = Path(templates_dir) if templates_dir else TEMPLATES_DIR
    kind = kind or context["kind"]
    if not (tdir / f"{kind}.md.j2").is_file():
        raise PublishError(f"no card template {kind}.md.j2 in {tdir}")
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(tdir)),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
    )
    env.filters["md"] = _md_cell
    env.filters["pct"] = lambda v: "" if v is None else f"{100 * float(v):.1f}%"
    text = env.get_template(f"{kind}.md.j2").render(**context)
    text = re.sub(r"\n{3,}", "\n\n", text)  # templates may leave runs of blank lines
    return text.rstrip("\n") + "\n"



def validate_card(content: str):
    """Offline validation of a dataset card (no network): huggingface_hub parses the YAML header into
    ``DatasetCardData`` (strict), then the fields the Hub checks are verified against 🤗 datasets' own
    tables: ``configs`` (``MetadataConfigs``: config names, data_files, one default), ``dataset_info``
    (``DatasetInfosDict``), ``size_categories``, ``task_categories`` and ``license``.  Returns the card."""
    from datasets.info import DatasetInfosDict
    from datasets.utils.metadata import MetadataConfigs
    from huggingface_hub import DatasetCard

    try:  # deprecated in datasets but still the library's list of Hub task ids
        from datasets.utils.metadata import known_task_ids
    except ImportError:  # pragma: no cover
        known_task_ids = {"question-answering", "text-generation", "visual-question-answering", "other"}

    try:
        card = DatasetCard(content)
    except Exception as e:  # noqa: BLE001 - report huggingface_hub's own message
        raise PublishError(f"invalid dataset card metadata: {e}") from None
    data = card.data
    try:
        configs = MetadataConfigs.from_dataset_card_data(data)
        configs.get_default_config_name()
        DatasetInfosDict.from_dataset_card_data(data)
    except Exception as e:  # noqa: BLE001
        raise PublishError(f"invalid dataset card configs/dataset_info: {e}") from None
    import datasets.utils.resources as res

    sizes = json.loads((Path(res.__file__).parent / "size_categories.json").read_text())
    for s in data.size_categories or []:
        if s not in sizes:
            raise PublishError(f"invalid size_categories value {s!r} (allowed: {sizes})")
    for t in data.task_categories or []:
        if t not in known_task_ids:
            raise PublishError(f"unknown task_categories value {t!r}")
    lic = data.license
    for item in lic if isinstance(lic, list) else [lic]:
        if item is not None and item not in HUB_LICENSES:
            raise PublishError(f"unknown license {item!r}")
    return card
