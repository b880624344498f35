"""Pass-rate bands: ``">0"``, ``">=0.125"``, ``"<1"``, ``"<=0.875"`` or a bare number (inclusive).

Shared by ``curate rl-set`` (which problems to keep) and ``curate score --adaptive`` (what the posterior must
decide: in or out of the band).  ``">0"`` is exclusive, ``">=0.1"`` inclusive; a bare number is inclusive
(``0.1`` = ``>=0.1`` as a minimum, ``<=0.9`` as a maximum).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["Bound", "parse_bound", "band_text", "in_band"]


@dataclass(frozen=True)
class Bound:
    """One side of the pass-rate band: ``value`` and whether it is ``inclusive``."""

    value: float
    inclusive: bool

    def admits(self, p: float, side: str) -> bool:
        if side == "min":
            return p >= self.value if self.inclusive else p > self.value
        return p <= self.value if self.inclusive else p < self.value


_BOUND = re.compile(r"^\s*(>=|<=|>|<)?\s*([0-9]*\.?[0-9]+(?:[eE][-+]?\d+)?)\s*$")


def parse_bound(spec: str | float | None, side: str, option: str | None = None) -> Bound | None:
    """``">0"`` -> exclusive 0; ``">=0.1"`` / ``"0.1"`` -> inclusive 0.1 (``side="min"``); ``"<1"``,
    ``"<=0.9"``, ``"0.9"`` likewise for ``side="max"``.  A ``<`` for a minimum (or ``>`` for a maximum)
    is an error, as is a value outside [0, 1].  ``option`` names the CLI option in errors (default
    ``--min-pass`` / ``--max-pass``)."""
    opt = option or f"--{side}-pass"
    if spec is None:
        return None
    if isinstance(spec, (int, float)):
        spec = str(spec)
    m = _BOUND.match(spec)
    if not m:
        raise ValueError(f"{opt}: expected e.g. '>0', '>=0.1', '<1', '<=0.9' or a number, got {spec!r}")
    op, value = m.group(1), float(m.group(2))
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{opt}: pass rate {value} outside [0, 1]")
    if side == "min":
        if op in ("<", "<="):
            raise ValueError(f"{option or '--min-pass'} {spec!r}: a minimum takes '>' or '>=' (e.g. '>0')")
        return Bound(value, op != ">")
    if op in (">", ">="):
        raise ValueError(f"{option or '--max-pass'} {spec!r}: a maximum takes '<' or '<=' (e.g. '<1')")
    return Bound(value, op != "<")


def band_text(lo: Bound | None, hi: Bound | None) -> str:
    left = f"{lo.value:g} {'<=' if lo.inclusive else '<'} " if lo else ""
    right = f" {'<=' if hi.inclusive else '<'} {hi.value:g}" if hi else ""
    return f"{left}p{right}"


def in_band(p: float, lo: Bound | None, hi: Bound | None) -> bool:
    """Whether pass rate ``p`` lies in the band (``None`` = no bound on that side)."""
    return (lo is None or lo.admits(p, "min")) and (hi is None or hi.admits(p, "max"))
