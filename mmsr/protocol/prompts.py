"""Prompt sets: the texts that tell the model the rules of the search protocol.

A prompt set has four texts: the first user turn (with one image placeholder and an optional
``{question}`` slot; without the slot the question is appended, as the original release does),
the instruction after an image search, the instruction after a text search, and the message
for a failed search (``{tool}`` and ``{error}`` slots); and the observation layout, how the turn
after a search lays out its results (``mmsr.protocol.layout``; a folder's optional
``layout.toml`` or ``layout.json``, else mmsr's). Ours live as text files in
``mmsr/protocol/prompts/default``; ``load_prompt_set(directory)`` loads another set from files,
for instance the exact prompts and observations the released MMSearch-R1 model was trained with.
``resolve_prompt_set(spec)`` is what a config's ``prompts`` setting names: empty for ours, a
folder, or ``release-layout:DIR`` — the release's observation layout (``RELEASE_LAYOUT_FORM``)
with its texts from the user's folder (``load_release_layout``).

Files are read verbatim (a trailing space matters). ``.pkl`` files are accepted for prompt sets
shipped as pickles, but only a pickle holding one plain string is read: any other object is
refused before it is built.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import logging
import pickle
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from mmsr.protocol.layout import (
    DEFAULT_LAYOUT,
    LAYOUT_FILES,
    RELEASE_LAYOUT_FORM,
    RELEASE_WORDED_FIELDS,
    LayoutError,
    ObservationLayout,
    find_layout,
    find_layout_file,
    layout_from_mapping,
    read_layout_data,
)
from mmsr.protocol.layout import IMAGE_PLACEHOLDER as IMAGE_PLACEHOLDER

logger = logging.getLogger(__name__)

QUESTION_SLOT = "{question}"
DEFAULT_DIR = Path(__file__).parent / "prompts" / "default"

# Accepted file names for each role, in order of preference: ours, then the original release's.
ROLE_FILES: dict[str, tuple[str, ...]] = {
    "first_turn": ("first_turn", "round_1_user_prompt_qwenvl"),
    "after_image_search": ("after_image_search", "after_image_search_prompt_qwenvl"),
    "after_text_search": ("after_text_search", "after_text_search_prompt_qwenvl"),
    "search_failed": ("search_failed",),
}
OPTIONAL_ROLES = frozenset({"search_failed"})
RELEASE_LAYOUT = "release-layout"
MAX_PROMPT_BYTES = 1 << 20


class PromptSetError(ValueError):
    """A prompt set is missing a text or has a text that breaks the protocol."""


@dataclass(frozen=True)
class PromptSet:
    """The four protocol texts and the observation layout; see the module docstring."""

    first_turn: str
    after_image_search: str
    after_text_search: str
    search_failed: str
    name: str = "custom"
    layout: ObservationLayout = DEFAULT_LAYOUT

    def __post_init__(self) -> None:
        n_first = self.first_turn.count(IMAGE_PLACEHOLDER)
        if n_first != 1:
            raise PromptSetError(
                f"prompt set {self.name!r}: first_turn must hold exactly one {IMAGE_PLACEHOLDER} "
                f"placeholder, found {n_first}"
            )
        for role in ("after_image_search", "after_text_search", "search_failed"):
            if IMAGE_PLACEHOLDER in getattr(self, role):
                raise PromptSetError(
                    f"prompt set {self.name!r}: {role} must not contain {IMAGE_PLACEHOLDER}"
                )


class _StringOnlyUnpickler(pickle.Unpickler):
    """Refuses every class and function: what is left can build only plain data."""

    def find_class(self, module: str, name: str) -> type:
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a prompt pickle")


def _read_pickled_string(path: Path) -> str:
    try:
        value = _StringOnlyUnpickler(io.BytesIO(path.read_bytes())).load()
    except Exception as err:  # any malformed or hostile pickle is a prompt-set error
        raise PromptSetError(f"{path}: not a readable prompt pickle: {err}") from err
    if not isinstance(value, str):
        raise PromptSetError(f"{path}: the pickle holds {type(value).__name__}, not a string")
    return value


def read_prompt_file(path: Path) -> str:
    """Read one prompt text verbatim from a ``.txt`` (UTF-8) or string-only ``.pkl`` file."""
    if path.stat().st_size > MAX_PROMPT_BYTES:
        raise PromptSetError(f"{path}: larger than {MAX_PROMPT_BYTES} bytes; not a prompt")
    if path.suffix == ".pkl":
        return _read_pickled_string(path)
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise PromptSetError(f"{path}: not UTF-8 text: {err}") from err


def _find_role_file(directory: Path, role: str, explicit: str | None) -> Path | None:
    if explicit is not None:
        path = directory / explicit
        if not path.is_file():
            raise PromptSetError(f"{path}: no such file (given for {role})")
        return path
    for stem in ROLE_FILES[role]:
        for suffix in (".txt", ".pkl"):
            path = directory / f"{stem}{suffix}"
            if path.is_file():
                return path
    return None


def load_prompt_set(directory: str | Path, names: Mapping[str, str] | None = None) -> PromptSet:
    """Load a prompt set from a folder of text (or string-pickle) files.

    Each role is found under our file name (``first_turn.txt``, ``after_image_search.txt``,
    ``after_text_search.txt``, ``search_failed.txt``) or the original release's
    (``round_1_user_prompt_qwenvl``, ``after_image_search_prompt_qwenvl``,
    ``after_text_search_prompt_qwenvl``; ``.txt`` or ``.pkl``). ``names`` maps a role to an
    explicit file name inside ``directory``. ``search_failed`` is optional and defaults to ours;
    so does the observation layout (``layout.toml`` or ``layout.json``, see
    ``mmsr.protocol.layout``).
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise PromptSetError(f"{directory}: not a folder")
    names = dict(names or {})
    unknown = set(names) - set(ROLE_FILES)
    if unknown:
        raise PromptSetError(f"unknown prompt roles {sorted(unknown)}; known: {sorted(ROLE_FILES)}")
    texts: dict[str, str] = {}
    for role, stems in ROLE_FILES.items():
        path = _find_role_file(directory, role, names.get(role))
        if path is not None:
            texts[role] = read_prompt_file(path)
        elif role in OPTIONAL_ROLES:
            texts[role] = getattr(default_prompt_set(), role)
            logger.info("prompt set %s has no %s text; using mmsr's", directory, role)
        else:
            raise PromptSetError(
                f"{directory}: no text for {role} (looked for {', '.join(stems)} .txt/.pkl)"
            )
    try:
        layout = find_layout(directory) or DEFAULT_LAYOUT
    except LayoutError as err:
        raise PromptSetError(str(err)) from err
    return PromptSet(name=directory.name, layout=layout, **texts)


@functools.cache
def default_prompt_set() -> PromptSet:
    """mmsr's own wording of the protocol rules."""
    texts = {
        role: read_prompt_file(DEFAULT_DIR / f"{ROLE_FILES[role][0]}.txt") for role in ROLE_FILES
    }
    return PromptSet(name="mmsr-default", layout=DEFAULT_LAYOUT, **texts)


def load_release_layout(directory: str | Path) -> PromptSet:
    """The release's observation layout with the texts of the user's folder ``directory``.

    The folder holds the release's three prompt files (``round_1_user_prompt_qwenvl``,
    ``after_image_search_prompt_qwenvl``, ``after_text_search_prompt_qwenvl``; ``.pkl`` or
    ``.txt``) and a ``layout.toml`` or ``layout.json`` giving the worded fields
    (``RELEASE_WORDED_FIELDS``); the form of the turns is ``RELEASE_LAYOUT_FORM``. Anything
    missing is named in one error.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise PromptSetError(f"{RELEASE_LAYOUT}: {directory} is not a folder")
    names, missing = {}, []
    for role, stems in ROLE_FILES.items():
        if role in OPTIONAL_ROLES:
            continue
        release_stem = stems[-1]
        found = [
            f"{release_stem}{s}"
            for s in (".pkl", ".txt")
            if (directory / f"{release_stem}{s}").is_file()
        ]
        if found:
            names[role] = found[0]
        else:
            missing.append(f"{release_stem}.pkl (or .txt)")
    try:
        layout_file = find_layout_file(directory)
        user_layout = read_layout_data(layout_file) if layout_file is not None else {}
    except LayoutError as err:
        raise PromptSetError(str(err)) from err
    if layout_file is None:
        missing.append(f"{' or '.join(LAYOUT_FILES)} with {', '.join(RELEASE_WORDED_FIELDS)}")
    else:
        absent = [f for f in RELEASE_WORDED_FIELDS if f not in user_layout]
        if absent:
            missing.append(f"{layout_file.name}: the fields {', '.join(absent)}")
    if missing:
        raise PromptSetError(
            f"{RELEASE_LAYOUT}: {directory} lacks " + "; ".join(missing) + " (the texts come "
            "from your copy of the release: its prompt pickles and its search tools' strings)"
        )
    texts = load_prompt_set(directory, names)  # the folder's own layout is replaced below
    try:
        layout = layout_from_mapping({**RELEASE_LAYOUT_FORM, **user_layout}, str(layout_file))
    except LayoutError as err:
        raise PromptSetError(str(err)) from err
    return dataclasses.replace(texts, name=f"{RELEASE_LAYOUT}:{directory.name}", layout=layout)


def resolve_prompt_set(spec: str) -> PromptSet:
    """The prompt set a config's ``prompts`` setting names: ``""`` or ``default`` for ours, a
    folder (``load_prompt_set``), or ``release-layout:DIR`` (``load_release_layout``)."""
    if spec in ("", "default"):
        return default_prompt_set()
    kind, colon, folder = spec.partition(":")
    if kind == RELEASE_LAYOUT:
        if not colon or not folder:
            raise PromptSetError(
                f"{RELEASE_LAYOUT} needs the folder of your copy of the release's texts: "
                f"{RELEASE_LAYOUT}:DIR"
            )
        return load_release_layout(folder)
    return load_prompt_set(spec)
