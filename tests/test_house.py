"""The code speaks for itself: no file in the package or the tests cites a document a user's
clone does not have, and no user-facing package text names the project's issue tracker."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Built from parts so that this file does not match itself.
OUTSIDE_DOCS = re.compile(r"\b(" + "DES" + "IGN|ST" + "YLE" + r")\b")
ISSUE_NUMBER = re.compile(r"\bissue #?\d+", re.IGNORECASE)


def _text_files(folder: str) -> list[Path]:
    suffixes = {".py", ".txt", ".toml", ".md", ".html", ".js", ".css"}
    return [p for p in (ROOT / folder).rglob("*") if p.is_file() and p.suffix in suffixes]


def test_no_citation_of_documents_outside_the_repo() -> None:
    cited = [
        f"{p.relative_to(ROOT)}:{n}"
        for folder in ("mmsr", "tests")
        for p in _text_files(folder)
        for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
        if OUTSIDE_DOCS.search(line)
    ]
    assert cited == []


def test_no_issue_numbers_in_the_package() -> None:
    named = [
        f"{p.relative_to(ROOT)}:{n}"
        for p in _text_files("mmsr")
        for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
        if ISSUE_NUMBER.search(line)
    ]
    assert named == []
