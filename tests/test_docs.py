"""The README and the docs site hold together: the README stays a short guide, every page the
site's nav names exists, the README's links into docs/ resolve, and no user-facing text names
issue numbers or machine-local paths. Fast and offline: mkdocs itself is not run here
(`make docs` builds the site with --strict)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"
MAX_README_LINES = 300

ISSUE_NUMBER = re.compile(r"\bissue #?\d+", re.IGNORECASE)
HASH_NUMBER = re.compile(r"#\d\d\b")
LOCAL_PATH = "/work/"
LINK = re.compile(r"\]\(([^)\s]+)\)")
FENCE = re.compile(r"^(`{3,}|~{3,}).*?^\1", re.MULTILINE | re.DOTALL)
INLINE_CODE = re.compile(r"`[^`\n]*`")


def prose(text: str) -> str:
    """The text outside code blocks, inline code and link targets."""
    text = FENCE.sub("", text)
    text = INLINE_CODE.sub("", text)
    return LINK.sub("]()", text)


def leaks(text: str) -> list[str]:
    """Issue numbers and machine-local paths found in a page's text."""
    found = ISSUE_NUMBER.findall(text) + HASH_NUMBER.findall(prose(text))
    if LOCAL_PATH in text:
        found.append(LOCAL_PATH)
    return found


def nav_pages(nav: object) -> list[str]:
    """Every page file named in mkdocs.yml's nav, however it nests."""
    if isinstance(nav, str):
        return [nav]
    if isinstance(nav, list):
        return [page for item in nav for page in nav_pages(item)]
    if isinstance(nav, dict):
        return [page for value in nav.values() for page in nav_pages(value)]
    return []


def user_pages() -> list[Path]:
    return [README, *sorted(DOCS.glob("*.md"))]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("fixed in issue 29", ["issue 29"]),  # the plain form
        ("see Issue #15 for why", ["Issue #15", "#15"]),  # with a hash, any case: both match
        ("the bar of #11 is 85 %", ["#11"]),  # a bare issue reference in prose
        ("run it from /work/main/runs", ["/work/"]),  # a machine-local path
        ("an issue with 3 causes", []),  # "issue" followed by words, not a number
        ("```\ncolor = '#12'\n```", []),  # a hash number inside a code block
        ("see [it](demo.md#12-steps)", []),  # an anchor in a link target
        ("step 12 of 8 prompts × 8 rollouts", []),  # plain numbers
    ],
)
def test_the_leak_patterns(text: str, expected: list[str]) -> None:
    assert leaks(text) == expected


def test_the_readme_is_a_short_guide() -> None:
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= MAX_README_LINES
    assert "make demo" in text and "make test" in text


def test_every_nav_page_exists() -> None:
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))
    pages = nav_pages(config["nav"])
    assert "index.md" in pages and "architecture.md" in pages
    assert [p for p in pages if not (DOCS / p).is_file()] == []
    # and every page is in the nav (mkdocs --strict says so too, but only when it runs)
    assert sorted(p.name for p in DOCS.glob("*.md")) == sorted(pages)


def test_the_readmes_links_into_docs_exist() -> None:
    targets = [t for t in LINK.findall(README.read_text(encoding="utf-8")) if t.startswith("docs/")]
    assert len(targets) >= 5  # the README links its docs pages
    missing = [t for t in targets if not (ROOT / t.split("#")[0]).is_file()]
    assert missing == []


@pytest.mark.parametrize("page", user_pages(), ids=lambda p: p.name)
def test_no_issue_numbers_or_local_paths(page: Path) -> None:
    assert leaks(page.read_text(encoding="utf-8")) == []


def test_the_inspector_screenshot_is_used() -> None:
    assert (DOCS / "inspect.png").is_file()
    assert "](inspect.png)" in (DOCS / "inspect.md").read_text(encoding="utf-8")
