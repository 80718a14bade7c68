"""Golden files: rendered artifacts kept in the repo so a reviewer sees every rendering change as a diff.

Regenerate after an intended change with:  UPDATE_GOLDEN=1 python -m pytest tests
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path

GOLDEN_DIR = Path(__file__).resolve().parent / "golden"


def assert_matches_golden(relative_path: str, actual: str) -> None:
    path = GOLDEN_DIR / relative_path
    if os.environ.get("UPDATE_GOLDEN") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(actual)
        return
    assert path.exists(), f"{path} is missing; create it with UPDATE_GOLDEN=1 python -m pytest tests"
    expected = path.read_text()
    if actual != expected:
        diff = "".join(
            difflib.unified_diff(
                expected.splitlines(keepends=True), actual.splitlines(keepends=True), f"golden/{relative_path}", "rendered"
            )
        )
        raise AssertionError(f"rendering changed; if intended, UPDATE_GOLDEN=1 python -m pytest tests\n{diff}")
