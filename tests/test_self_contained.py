"""The suite runs from a clean clone alone: what the tests read is in the repository."""

from __future__ import annotations

import re
from pathlib import Path

from tests.fixtures import GOOGLE

TESTS = Path(__file__).parent
# Absolute paths into this workplace, or the team's reference folder beside the repository.
OUTSIDE = re.compile(r"""["'](/work/|/home/|/root/|\.\./shared/|shared/reference/)""")
# Where a test's data came from is told in the repository too, not by a pointer to that folder.
POINTER_OUTSIDE = re.compile(r"\.\./shared/|\bshared/reference/")


def test_no_test_names_a_path_outside_the_repository() -> None:
    found = [
        f"{path.relative_to(TESTS)}:{number}: {line.strip()}"
        for path in sorted(TESTS.rglob("*.py"))
        for number, line in enumerate(path.read_text("utf-8").splitlines(), start=1)
        if (OUTSIDE.search(line) or POINTER_OUTSIDE.search(line)) and path != Path(__file__)
    ]
    assert found == []


def test_every_recording_has_its_provenance() -> None:
    provenance = (GOOGLE / "PROVENANCE.md").read_text("utf-8")
    recordings = sorted(p.name for p in GOOGLE.glob("*.json"))
    assert recordings
    assert [name for name in recordings if f"| {name} |" not in provenance] == []
