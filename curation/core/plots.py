"""Report building blocks: histogram PNGs (matplotlib, Agg backend, no display needed) and Markdown tables."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

__all__ = ["histogram_png", "markdown_table"]


def histogram_png(
    values: Sequence[float] | Mapping[str, Sequence[float]],
    path: str | Path,
    *,
    title: str,
    xlabel: str,
    bins: int | Sequence[float] = 20,
    range_: tuple[float, float] | None = None,
) -> Path:
    """Write a histogram of ``values`` (or one overlaid series per key of a mapping) to ``path`` (PNG)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    series = dict(values) if isinstance(values, Mapping) else {"": list(values)}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=100)
    try:
        for label, vals in series.items():
            vals = [v for v in vals if v is not None]
            ax.hist(vals, bins=bins, range=range_, alpha=0.6 if len(series) > 1 else 0.9,
                    label=label or None, edgecolor="black", linewidth=0.4)
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("prompts")
        if len(series) > 1:
            ax.legend(fontsize=8)
        fig.tight_layout()
        tmp = path.with_name(f".{path.name}.tmp.png")
        fig.savefig(tmp)
        tmp.replace(path)
    finally:
        plt.close(fig)
    return path



def markdown_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> str:
    if not rows:
        return "_(none)_\n"
    columns = list(columns or rows[0].keys())

    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.4g}"
        return "" if v is None else str(v)

    out = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    out += ["| " + " | ".join(fmt(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(out) + "\n"
