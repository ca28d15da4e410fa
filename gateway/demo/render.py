"""What the demo's reader sees: step headings, tables, progress bars and the busy-time timeline.

On a terminal the output is coloured and the progress bars animate; otherwise (CI, a pipe, a
test) it is plain text and each progress bar is printed once, finished. The timeline falls back
to ASCII when the output cannot encode block characters.
"""

from __future__ import annotations

import os
import sys
import textwrap
from collections.abc import Iterable, Sequence
from datetime import date, datetime, time, timedelta
from typing import IO, TextIO, cast
from zoneinfo import ZoneInfo

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

Span = tuple[datetime, datetime]

# The timeline's day: 08:00 to 18:00 local, in 15-minute cells (40 characters).
DAY_START = time(8, 0)
DAY_END = time(18, 0)
CELL = timedelta(minutes=15)
WORK_START = time(9, 0)
WORK_END = time(17, 0)


# Width when the output is not a terminal (rich would use 80): the timeline and URLs fit.
PLAIN_WIDTH = 100

# Rich's drawing characters in their ASCII forms, for output that is not a terminal.
_ASCII = str.maketrans({"─": "-", "━": "-", "…": "...", "│": "|", "█": "#", "·": ".", "▒": "*"})


class PlainText:
    """A text stream for logs, CI and pipes: plain ASCII (rich's rules and ellipses in their
    ASCII forms, anything else as `?`) and no trailing spaces (rich pads table cells), so the
    output diffs, greps and pastes cleanly."""

    encoding = "ascii"  # rich picks ASCII glyphs (the timeline's) from this

    def __init__(self, target: TextIO) -> None:
        self._target = target
        self._pending = ""

    def write(self, text: str) -> int:
        lines = (self._pending + text).split("\n")
        self._pending = lines.pop()
        for line in lines:
            self._target.write(self._plain(line) + "\n")
        return len(text)

    def flush(self) -> None:
        self._target.flush()

    def isatty(self) -> bool:
        return False

    @staticmethod
    def _plain(line: str) -> str:
        ascii_only = line.translate(_ASCII).encode("ascii", "replace").decode("ascii")
        return ascii_only.rstrip()


def make_console(*, plain: bool = False) -> Console:
    """A console on stdout: plain (no colour, no animation) when asked or not a terminal.
    Plain output is ASCII without trailing spaces, and long lines are never wrapped (a URL or
    an identifier broken across lines cannot be pasted)."""
    if plain or not sys.stdout.isatty():
        console = Console(
            # rich writes, flushes and asks isatty/encoding only: all PlainText has.
            file=cast("IO[str]", PlainText(sys.stdout)),
            force_terminal=False,
            no_color=True,
            highlight=False,
            soft_wrap=True,
            width=PLAIN_WIDTH if "COLUMNS" not in os.environ else None,
        )
    else:
        console = Console(highlight=False)
    return console


def heading(console: Console, number: int, title: str) -> None:
    console.print()
    console.rule(f"[bold]{number}. {title}", align="left")


def note(console: Console, text: str, indent: int = 2) -> None:
    """An indented paragraph of explanation (rich markup allowed); wrapped lines keep the
    indentation."""
    prefix = " " * indent
    width = max(20, console.width - indent)
    if isinstance(console.file, PlainText):
        # Plain output is for copying: a URL or an id longer than the line stays whole.
        plain = Text.from_markup(text).plain
        for part in textwrap.wrap(plain, width, break_long_words=False, break_on_hyphens=False):
            console.print(prefix + part, soft_wrap=True, markup=False)
        return
    for line in Text.from_markup(text).wrap(console, width):
        line.rstrip()
        console.print(Text(prefix) + line, soft_wrap=True)


def http_line(console: Console, method: str, path: str, status: int, what: str = "") -> None:
    """`  POST /v1/slots -> 200  what`"""
    style = "green" if status < 400 else "yellow"
    line = Text("  ")
    line.append(f"{method} {path}", style="bold")
    line.append(" -> ")
    line.append(str(status), style=style)
    if what:
        line.append(f"  {what}")
    console.print(line, soft_wrap=True)


def key_values(console: Console, rows: Iterable[tuple[str, str]]) -> None:
    table = Table(show_header=False, box=None, padding=(0, 1, 0, 2))
    table.add_column(style="dim", no_wrap=True)
    table.add_column()
    for key, value in rows:
        table.add_row(key, value)
    console.print(table)


def table(console: Console, headers: Sequence[str], rows: Iterable[Sequence[str]]) -> None:
    grid = Table(padding=(0, 1), show_edge=False, box=None, header_style="bold")
    for name in headers:
        grid.add_column(name)
    for row in rows:
        grid.add_row(*row)
    console.print(grid, new_line_start=True)


def progress(console: Console, label: str) -> Progress:
    """A progress bar for a step of unknown or known length (sync pages, data keys)."""
    return Progress(
        TextColumn(f"  {label}"),
        BarColumn(bar_width=30),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )


def _glyphs(console: Console) -> tuple[str, str, str]:
    """(busy, free, highlighted) cell characters for this console's encoding."""
    if console.encoding.lower().replace("-", "").startswith("utf"):
        return "█", "·", "▒"
    return "#", ".", "*"


def _overlaps(start: datetime, end: datetime, spans: Sequence[Span]) -> bool:
    return any(s < end and start < e for s, e in spans)


def timeline_header() -> str:
    hours = DAY_END.hour - DAY_START.hour
    cells_per_hour = timedelta(hours=1) // CELL
    return " " * 14 + "".join(
        f"{DAY_START.hour + h:02d}".ljust(cells_per_hour) for h in range(hours)
    )


def timeline_row(
    console: Console,
    day: date,
    tz: ZoneInfo,
    busy: Sequence[Span],
    highlight: Sequence[Span] = (),
    label: str = "",
) -> Text:
    """One day from 08:00 to 18:00 local: a cell is busy when any busy time touches it;
    `highlight` (a booked or moved event) is drawn with its own character. Hours outside
    09:00-17:00 are dimmed."""
    full, empty, marked = _glyphs(console)
    row = Text(f"  {day:%a %d %b}  ")
    cursor = datetime.combine(day, DAY_START, tzinfo=tz)
    end_of_day = datetime.combine(day, DAY_END, tzinfo=tz)
    busy_minutes = 0
    while cursor < end_of_day:
        nxt = cursor + CELL
        working = WORK_START <= cursor.time() < WORK_END
        if _overlaps(cursor, nxt, highlight):
            row.append(marked, style="bold cyan")
        elif _overlaps(cursor, nxt, busy):
            row.append(full, style="red" if working else "dim red")
        else:
            row.append(empty, style="green" if working else "dim")
        cursor = nxt
    day_start = datetime.combine(day, WORK_START, tzinfo=tz)
    day_end = datetime.combine(day, WORK_END, tzinfo=tz)
    for s, e in busy:
        overlap = min(e, day_end) - max(s, day_start)
        busy_minutes += max(0, int(overlap.total_seconds() // 60))
    hours, minutes = divmod(busy_minutes, 60)
    row.append(f"  {hours}h{minutes:02d} busy")
    if label:
        row.append(f"  {label}", style="cyan")
    return row


def timeline(
    console: Console,
    days: Sequence[date],
    tz: ZoneInfo,
    busy: Sequence[Span],
    *,
    highlight: Sequence[Span] = (),
    labels: dict[date, str] | None = None,
) -> None:
    """The busy time of `days`, one row each, with an hour ruler and a legend."""
    full, empty, marked = _glyphs(console)
    console.print(timeline_header(), style="dim")
    for day in days:
        console.print(
            timeline_row(console, day, tz, busy, highlight, (labels or {}).get(day, "")),
            soft_wrap=True,
        )
    legend = f"  {full} busy   {empty} free   (15-minute cells, {tz.key}; working hours 09-17)"
    if highlight:
        legend += f"   {marked} just booked or moved"
    console.print(legend, style="dim")
