"""Observation layouts: how the user turn after a search lays out results, question and errors.

What the model reads after a search is part of what it was trained on, so the layout belongs to
the prompt set beside the instructions. A layout is a handful of template strings with named
slots (``{results}``, ``{n}``, ``{title}``…). ``DEFAULT_LAYOUT`` is mmsr's own (the warm start
was trained on it; ``tests/test_render_golden.py`` pins it); a prompt-set folder may hold a
``layout.toml`` or ``layout.json`` that overrides any of its fields, e.g. to reproduce the
observations of another release. What it is not: the neutralising of untrusted text or the
length limits (``mmsr.protocol.render``), which apply to every layout alike.

Slots are filled in one pass, so a title that reads ``{question}`` stays text. Only the slots
listed in ``SLOTS`` for a field may appear in it; any other ``{word}`` is an error.
"""

from __future__ import annotations

import dataclasses
import json
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from mmsr.protocol.actions import INFORMATION_CLOSE, INFORMATION_OPEN

IMAGE_PLACEHOLDER = "<image>"
LAYOUT_FILES = ("layout.toml", "layout.json")
_SLOT = re.compile(r"\{(\w+)\}")
_WRAPPED = f"{INFORMATION_OPEN}\n{{body}}\n{INFORMATION_CLOSE}\nQuestion: {{question}}\n"


class LayoutError(ValueError):
    """A layout file is unreadable, or a template uses a slot its field does not have."""


@dataclass(frozen=True)
class ObservationLayout:
    """Template strings of the user turn after a search; the defaults are mmsr's layout."""

    observation: str = _WRAPPED.replace("{body}", "{results}") + "{instruction}"
    """The turn after a search that ran: ``{results}``, ``{question}``, ``{instruction}``."""
    image_results: str = "{hits}"
    """The results of an image search: ``{hits}`` (e.g. behind a header line)."""
    text_results: str = "{hits}"
    """The results of a text search: ``{hits}``."""
    image_hit: str = f"{{n}}. {IMAGE_PLACEHOLDER} {{title}}"
    """One image hit with a thumbnail: ``{n}``, ``{title}`` and exactly one ``<image>``."""
    image_hit_no_thumbnail: str = "{n}. {title}"
    """One image hit without a thumbnail: ``{n}``, ``{title}``."""
    text_hit: str = "{n}. {url}\n{summary}"
    """One text hit: ``{n}``, ``{url}``, ``{summary}``."""
    hit_separator: str = "\n"
    """What stands between two hits."""
    no_results: str = "No results."
    """``{hits}`` when a search found nothing."""
    image_error: str = _WRAPPED.replace("{body}", "{message}") + "{instruction}"
    """The turn after a failed image search: ``{message}`` (the prompt set's ``search_failed``
    text, filled), ``{error}``, ``{tool}``, ``{question}``, ``{instruction}``."""
    text_error: str = _WRAPPED.replace("{body}", "{message}") + "{instruction}"
    """The turn after a failed text search: the same slots as ``image_error``."""

    def __post_init__(self) -> None:
        for name, allowed in SLOTS.items():
            template = getattr(self, name)
            if not isinstance(template, str):
                raise LayoutError(f"layout field {name!r} must be a string")
            unknown = set(_SLOT.findall(template)) - allowed
            if unknown:
                raise LayoutError(
                    f"layout field {name!r} has unknown slots {sorted(unknown)}; "
                    f"it may use {sorted(allowed) or 'none'}"
                )
            wanted = 1 if name == "image_hit" else 0
            if template.count(IMAGE_PLACEHOLDER) != wanted:
                # one placeholder per thumbnail, so placeholders and images always match
                raise LayoutError(
                    f"layout field {name!r} must hold {wanted} {IMAGE_PLACEHOLDER} placeholder(s)"
                )


_ERROR_SLOTS = frozenset({"message", "error", "tool", "question", "instruction"})
SLOTS: dict[str, frozenset[str]] = {
    "observation": frozenset({"results", "question", "instruction"}),
    "image_results": frozenset({"hits"}),
    "text_results": frozenset({"hits"}),
    "image_hit": frozenset({"n", "title"}),
    "image_hit_no_thumbnail": frozenset({"n", "title"}),
    "text_hit": frozenset({"n", "url", "summary"}),
    "hit_separator": frozenset(),
    "no_results": frozenset(),
    "image_error": _ERROR_SLOTS,
    "text_error": _ERROR_SLOTS,
}
DEFAULT_LAYOUT = ObservationLayout()

# The original release's observation layout, its wording left out: how its rollout wraps a
# tool's output (a label, the output inside <information>, the question, the instruction) and
# how its tools list hits. Its tools' header lines and error strings are sentences of the
# release, so they come from the user's own layout file (``RELEASE_WORDED_FIELDS``).
RELEASE_LAYOUT_FORM: dict[str, str] = {
    "observation": (
        f"Searched results: {INFORMATION_OPEN}{{results}}{INFORMATION_CLOSE}\n"
        "Original user's question: {question}\n{instruction}"
    ),
    "image_hit": f"{{n}}. image: {IMAGE_PLACEHOLDER}\ntitle: {{title}}\n",
    # the release's tools always return a thumbnail; this line is ours, in its style
    "image_hit_no_thumbnail": "{n}. title: {title}\n",
    "text_hit": "{n}. ({url}) {summary}\n",
    "hit_separator": "",
    "no_results": "",
}
RELEASE_WORDED_FIELDS = ("image_results", "text_results", "image_error", "text_error")
"""The release-layout fields whose text the user's layout file must give (the release's tool
headers before ``{hits}`` and its error strings)."""


def fill(template: str, **values: str) -> str:
    """``template`` with each ``{slot}`` replaced by its value, in one pass.

    >>> fill("{n}. {title}", n="1", title="{n}")
    '1. {n}'
    """
    return _SLOT.sub(lambda m: values[m.group(1)], template)


def layout_from_mapping(data: Mapping[str, object], source: str = "layout") -> ObservationLayout:
    """A layout from field names to templates; fields left out keep mmsr's default."""
    known = {f.name for f in dataclasses.fields(ObservationLayout)}
    unknown = set(data) - known
    if unknown:
        raise LayoutError(
            f"{source}: unknown layout fields {sorted(unknown)}; known: {sorted(known)}"
        )
    try:
        return ObservationLayout(**data)  # type: ignore[arg-type]
    except LayoutError as err:
        raise LayoutError(f"{source}: {err}") from err


def load_layout(path: str | Path) -> ObservationLayout:
    """Read a layout from a ``.toml`` or ``.json`` file of ``field = "template"`` pairs."""
    return layout_from_mapping(read_layout_data(path), str(path))


def read_layout_data(path: str | Path) -> dict[str, object]:
    """The ``field = "template"`` pairs of a ``.toml`` or ``.json`` layout file, unchecked."""
    path = Path(path)
    try:
        if path.suffix == ".toml":
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        elif path.suffix == ".json":
            data = json.loads(path.read_text(encoding="utf-8"))
        else:
            raise LayoutError(f"{path}: a layout is a .toml or .json file")
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, json.JSONDecodeError) as err:
        raise LayoutError(f"{path}: not a readable layout: {err}") from err
    if not isinstance(data, dict):
        raise LayoutError(f"{path}: a layout is a table of field = template pairs")
    return data


def find_layout_file(directory: Path) -> Path | None:
    """The layout file of a prompt-set folder, if it has one (two is an error)."""
    found = [directory / name for name in LAYOUT_FILES if (directory / name).is_file()]
    if len(found) > 1:
        raise LayoutError(f"{directory}: both {' and '.join(LAYOUT_FILES)}; keep one")
    return found[0] if found else None


def find_layout(directory: Path) -> ObservationLayout | None:
    """The layout of a prompt-set folder's layout file, if it has one."""
    path = find_layout_file(directory)
    return load_layout(path) if path is not None else None
