"""The aims line under a benchmark's table (`format_aims`): which figures met their issue's
aim in the run that measured them, read the way the table shows them."""

from __future__ import annotations

from gateway.bench.report import Aim, Figure, format_aims

RATIO = Aim(">=", 0.5, on_ratio=True)
LAG = Aim("<", 250, unit="ms")


def test_the_aim_reads_in_the_note_as_in_the_issue() -> None:
    assert RATIO.text == "aim >= 0.5x"
    assert LAG.text == "aim < 250 ms"
    assert Aim(">=", 20_000).text == "aim >= 20,000"
    assert Aim("<=", 2, on_ratio=True, unit="bare p99").text == "aim <= 2x bare p99"


def test_every_aim_is_judged_on_its_value_or_its_ratio() -> None:
    figures = [
        Figure("served", 6_000, "req/s", 12_000, "bare", aim=RATIO),  # exactly 0.5x: met
        Figure("lag p99", 250, "ms", aim=LAG),  # not under 250: missed
        Figure("per CPU", 9_000, "events/CPU-s", 20_000, "parse+insert", aim=RATIO),
        Figure("no aim", 1, "ms"),
        Figure("no baseline", 5, "ms", aim=RATIO),  # no ratio to judge: left out
    ]
    assert format_aims(figures) == (
        "aims: 1 of 3 met in this run; not met: lag p99 250 ms (aim < 250 ms); "
        "per CPU 0.450x parse+insert (aim >= 0.5x)"
    )


def test_all_met_or_nothing_to_judge() -> None:
    assert format_aims([Figure("lag p99", 120, "ms", aim=LAG)]) == "aims: 1 of 1 met in this run"
    assert format_aims([Figure("lag p99", 120, "ms")]) is None
