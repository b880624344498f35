"""Problem rows (schema ``problems``) from the real shared data, for tests that need a small problems table."""

from __future__ import annotations

import json
from pathlib import Path

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def gsm8k_rows(n: int) -> list[dict]:
    """The first ``n`` GSM8K test problems as problem rows (ids ``gsm8k-test-<i>``, numeric gold answers)."""
    rows = []
    with open(DATA / "gsm8k" / "test.jsonl") as f:
        for i, line in enumerate(f):
            if i >= n:
                break
            d = json.loads(line)
            rows.append({"id": f"gsm8k-test-{i}", "source": "gsm8k", "problem": d["question"], "images": [],
                         "answer": d["answer"].split("####")[-1].strip().replace(",", ""), "options": [],
                         "solution": None, "meta": None})
    return rows
