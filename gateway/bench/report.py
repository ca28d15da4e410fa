"""The one table every benchmark prints: a figure, its unit, and its ratio to a baseline
measured in the same run (never a number remembered from an earlier run)."""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

_OPS: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}


@dataclass(frozen=True)
class Aim:
    """An issue's aim for a figure, checked in the run that measured it: the figure's value
    (or, `on_ratio`, its ratio to its baseline) `op` `bound`. `text` is how the figure's note
    states it, `aim >= 0.5x`; `unit` follows the bound there (`ms`, `bare p99`)."""

    op: Literal["<", "<=", ">", ">="]
    bound: float
    on_ratio: bool = False
    unit: str = ""

    @property
    def text(self) -> str:
        bound = f"{self.bound:,.0f}" if self.bound >= 1000 else f"{self.bound:g}"
        unit = f" {self.unit}" if self.unit else ""
        return f"aim {self.op} {bound}{'x' if self.on_ratio else ''}{unit}"

    def met(self, figure: Figure) -> bool | None:
        """Whether `figure` meets it (None: it has no ratio to judge)."""
        measured = figure.ratio if self.on_ratio else figure.value
        return None if measured is None else _OPS[self.op](measured, self.bound)


@dataclass(frozen=True)
class Figure:
    """One measured figure.

    value           the measurement, in `unit` (per second for rates, ms for latencies)
    baseline_value  the matching baseline from the same run, in the same unit, or None
    baseline        what the baseline is (for the ratio column)
    note            anything a reader needs: the aim, the size, what the ratio means
    aim             the aim it is checked against after the table (`format_aims`), if any
    """

    name: str
    value: float
    unit: str
    baseline_value: float | None = None
    baseline: str = ""
    note: str = ""
    aim: Aim | None = None

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


def format_aims(figures: Iterable[Figure]) -> str | None:
    """One line under the table: how many of the figures with an aim met it in this run, and
    which did not (their value or ratio and the aim); None when no figure has an aim."""
    judged = [(f, met) for f in figures if f.aim is not None and (met := f.aim.met(f)) is not None]
    if not judged:
        return None
    missed = [f for f, met in judged if not met]
    line = f"aims: {len(judged) - len(missed)} of {len(judged)} met in this run"
    if not missed:
        return line
    return line + "; not met: " + "; ".join(_missed(f) for f in missed)


def _missed(figure: Figure) -> str:
    assert figure.aim is not None
    if figure.aim.on_ratio and figure.ratio is not None:
        shown = f"{figure.ratio:.3f}x {figure.baseline}"
    else:
        shown = f"{_number(figure.value)} {figure.unit}"
    return f"{figure.name} {shown} ({figure.aim.text})"


def percentile(samples: list[float], fraction: float) -> float:
    """The nearest-rank percentile (`fraction` in 0..1) of `samples` (not empty)."""
    ordered = sorted(samples)
    rank = max(1, min(len(ordered), math.ceil(fraction * len(ordered))))
    return ordered[rank - 1]
