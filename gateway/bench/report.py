"""The one table every benchmark prints: a figure, its unit, and its ratio to a baseline
measured in the same run (never a number remembered from an earlier run)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Figure:
    """One measured figure.

    value           the measurement, in `unit` (per second for rates, ms for latencies)
    baseline_value  the matching baseline from the same run, in the same unit, or None
    baseline        what the baseline is (for the ratio column)
    note            anything a reader needs: the aim, the size, what the ratio means
    """

    name: str
    value: float
    unit: str
    baseline_value: float | None = None
    baseline: str = ""
    note: str = ""

    @property
    def ratio(self) -> float | None:
        if self.baseline_value is None or self.baseline_value <= 0:
            return None
        return self.value / self.baseline_value


def _number(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def _ratio(ratio: float) -> str:
    # Small ratios keep a significant digit: 0.001x is not 0.00x.
    return f"{ratio:.2f}" if ratio >= 0.1 else f"{ratio:.3f}"


def format_table(figures: Iterable[Figure], *, markdown: bool = False) -> str:
    """A fixed-width table (or a Markdown one, for the README) of `figures`."""
    rows = [
        (
            f.name,
            _number(f.value),
            f.unit,
            "" if f.ratio is None else f"{_ratio(f.ratio)}x {f.baseline}",
            f.note,
        )
        for f in figures
    ]
    header = ("measurement", "value", "unit", "ratio to baseline", "note")
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|---|---:|---|---|---|"]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        return "\n".join(lines)
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    aligns = ["<", ">", "<", "<", "<"]

    def line(cells: tuple[str, ...]) -> str:
        return "  ".join(f"{c:{a}{w}}" for c, a, w in zip(cells, aligns, widths, strict=True))

    out = [line(header), "-" * len(line(header))]
    out += [line(row) for row in rows]
    return "\n".join(s.rstrip() for s in out)


def percentile(samples: list[float], fraction: float) -> float:
    """The nearest-rank percentile (`fraction` in 0..1) of `samples` (not empty)."""
    ordered = sorted(samples)
    rank = max(1, min(len(ordered), math.ceil(fraction * len(ordered))))
    return ordered[rank - 1]
