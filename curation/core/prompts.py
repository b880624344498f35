"""Conversational prompts for a problem row: system prompt + user text (+ choices) + image parts.

Templates are YAML files in ``pipelines/prompts/<name>.yaml`` (``default``, ``r1``, ``plain``) or any path::

    name: default
    system: "You are a helpful assistant ..."      # or null for no system message
    user: "{problem}{options}\\n\\nPlease reason step by step ... \\boxed{}."
    options_header: "\\n\\nChoices:\\n"             # put before the choices block
    option_format: "({label}) {text}"              # one choice; labels A, B, C ...
    option_separator: "\\n"
    image_placement: first                         # first | inline

``{problem}`` and ``{options}`` are substituted literally (no ``str.format``), so LaTeX braces such as
``\\boxed{}`` need no escaping.  ``{options}`` becomes ``options_header`` + the formatted choices, or ``""``
for a problem without options.

Messages come out in the shape chat templates and TRL expect: text-only problems give string contents
(``{"role": "user", "content": "..."}``); problems with images give typed parts
(``[{"type": "image"}, ..., {"type": "text", "text": "..."}]``, the ``MM_MESSAGE`` schema) and the decoded
PIL images in the order of their image parts.  ``image_placement: first`` puts all images before the text;
``inline`` replaces each ``<imageK>`` placeholder (MATH-Vision style) by the part for image K, with
unreferenced images first.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from curation.core import images as I

__all__ = ["PromptError", "PromptTemplate", "BuiltPrompt", "load_template", "list_templates", "build_prompt",
           "to_mm_messages", "image_order"]

_REPO_PROMPTS = Path(__file__).resolve().parents[2] / "pipelines" / "prompts"
_IMAGE_TAG = re.compile(r"<image(\d+)>")


class PromptError(ValueError):
    """A problem row from which no prompt can be built (missing text, undecodable image ...)."""

    def __init__(self, reason: str, message: str):
        self.reason = reason
        super().__init__(message)


@dataclass(frozen=True)
class PromptTemplate:
    name: str
    user: str = "{problem}{options}"
    system: str | None = None
    description: str = ""
    options_header: str = "\n\nChoices:\n"
    option_format: str = "({label}) {text}"
    option_separator: str = "\n"
    image_placement: str = "first"

    def __post_init__(self) -> None:
        if "{problem}" not in self.user:
            raise ValueError(f"prompt template {self.name!r}: 'user' must contain {{problem}}")
        if self.image_placement not in {"first", "inline"}:
            raise ValueError(f"prompt template {self.name!r}: image_placement must be 'first' or 'inline'")

    def fingerprint(self) -> str:
        """Content hash: resumed jobs check that the prompt did not change."""
        return hashlib.sha1(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class BuiltPrompt:
    messages: list[dict]
    images: list  # PIL images, in the order of the image parts


def _search_dirs() -> list[Path]:
    dirs = []
    if os.environ.get("RLCURATE_PROMPTS"):
        dirs.append(Path(os.environ["RLCURATE_PROMPTS"]))
    dirs.append(_REPO_PROMPTS)
    return dirs


def list_templates() -> list[str]:
    names: set[str] = set()
    for d in _search_dirs():
        if d.is_dir():
            names.update(p.stem for p in d.glob("*.yaml"))
    return sorted(names)


def load_template(name_or_path: str | Path | PromptTemplate | None = None) -> PromptTemplate:
    """A template by name (``default``, ``r1``, ``plain``; searched in ``$RLCURATE_PROMPTS`` then the
    repository's ``pipelines/prompts``) or by path to a YAML file.  ``None`` -> ``default``."""
    if isinstance(name_or_path, PromptTemplate):
        return name_or_path
    name = str(name_or_path or "default")
    path = Path(name)
    if not (path.suffix in {".yaml", ".yml"} and path.is_file()):
        path = next((d / f"{name}.yaml" for d in _search_dirs() if (d / f"{name}.yaml").is_file()), None)
        if path is None:
            raise ValueError(f"unknown prompt template {name!r}; known: {', '.join(list_templates()) or 'none'}")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a prompt template must be a YAML mapping")
    known = set(PromptTemplate.__dataclass_fields__)
    bad = sorted(set(data) - known)
    if bad:
        raise ValueError(f"{path}: unknown template key(s) {bad}; allowed: {sorted(known)}")
    data.setdefault("name", path.stem)
    return PromptTemplate(**data)


def _row_label(row: dict) -> str:
    rid = row.get("id") or row.get("problem_id")
    return f"problem {rid!r}" if rid else f"row {row.get('_locator', '?')}"


def build_prompt(row: dict, template: str | Path | PromptTemplate | None = None) -> BuiltPrompt:
    """The chat messages and PIL images for a ``problems`` row; :class:`PromptError` names the row."""
    tpl = load_template(template)
    problem = row.get("problem")
    if not isinstance(problem, str) or not problem.strip():
        raise PromptError("missing_problem", f"{_row_label(row)}: field 'problem' is missing or empty")
    options = row.get("options") or []
    opts = ""
    if options:
        labels = [chr(ord("A") + i) for i in range(len(options))]
        opts = tpl.options_header + tpl.option_separator.join(
            tpl.option_format.replace("{label}", lab).replace("{text}", str(o)) for lab, o in zip(labels, options)
        )
    text = tpl.user.replace("{problem}", problem.strip()).replace("{options}", opts)

    pil = []
    for k, img in enumerate(row.get("images") or []):
        try:
            pil.append(I.decode(img))
        except I.ImageError as e:
            raise PromptError("bad_image", f"{_row_label(row)}: image {k + 1}: {e}") from e

    messages: list[dict[str, Any]] = []
    if tpl.system:
        messages.append({"role": "system", "content": tpl.system.strip()})
    if not pil:
        messages.append({"role": "user", "content": text})
        return BuiltPrompt(messages, [])

    parts: list[dict] = []
    ordered: list = []
    if tpl.image_placement == "inline" and _IMAGE_TAG.search(text):
        refs = [int(m.group(1)) for m in _IMAGE_TAG.finditer(text)]
        for k in range(1, len(pil) + 1):  # unreferenced images go first
            if k not in refs:
                parts.append({"type": "image"})
                ordered.append(pil[k - 1])
        pos = 0
        for m in _IMAGE_TAG.finditer(text):
            k = int(m.group(1))
            if not 1 <= k <= len(pil):
                continue  # a tag for an image the row lacks stays as text
            if text[pos : m.start()]:
                parts.append({"type": "text", "text": text[pos : m.start()]})
            parts.append({"type": "image"})
            ordered.append(pil[k - 1])
            pos = m.end()
        if text[pos:]:
            parts.append({"type": "text", "text": text[pos:]})
    else:
        parts = [{"type": "image"} for _ in pil] + [{"type": "text", "text": text}]
        ordered = pil
    messages.append({"role": "user", "content": parts})
    return BuiltPrompt(messages, ordered)


def to_mm_messages(messages: list[dict]) -> list[dict]:
    """Messages with every string content turned into one text part (the ``MM_MESSAGE`` shape), so text
    and image rows share one Arrow type; image parts become ``{"type": "image", "text": None}``."""
    out = []
    for m in messages:
        c = m["content"]
        if isinstance(c, str):
            parts = [{"type": "text", "text": c}]
        else:
            parts = [{"type": p["type"], "text": p.get("text") if p["type"] == "text" else None} for p in c]
        out.append({"role": m["role"], "content": parts})
    return out



def _digest(im: Any) -> str:
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{im.mode}:{im.size}".encode())
    h.update(im.tobytes())
    return h.hexdigest()



def image_order(row_images: list[dict], prompt_images: list, placement: str) -> list[dict]:
    """The row's image structs (original bytes) in the order of the prompt's image parts.

    With ``image_placement: first`` that is the row's order.  With ``inline`` the prompt may reorder
    (``<image2>`` before ``<image1>``); each prompt image is matched to its source by a digest of the
    decoded pixels."""
    if placement != "inline" or len(row_images) <= 1:
        return list(row_images)
    by_digest: dict[str, dict] = {}
    for img in row_images:
        by_digest.setdefault(_digest(I.decode(img)), img)
    return [by_digest[_digest(im)] for im in prompt_images]
