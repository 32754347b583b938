"""Prompt sets: ours, ones loaded from files, and the original release's texts."""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import pytest

from mmsr.protocol import (
    IMAGE_PLACEHOLDER,
    PromptSet,
    PromptSetError,
    default_prompt_set,
    load_prompt_set,
    parse_action,
    render_first_turn,
)
from mmsr.protocol.prompts import DEFAULT_DIR, read_prompt_file
from mmsr.types import Answer, ImageSearch, TextSearch


def test_default_prompt_set_states_the_rules() -> None:
    p = default_prompt_set()
    assert p.first_turn.count(IMAGE_PLACEHOLDER) == 1
    assert "{question}" in p.first_turn
    for tag in ("<reason>", "<answer>", "<search><img></search>", "<text_search>", "<information>"):
        assert tag in p.first_turn, tag
    assert "<text_search>" in p.after_image_search and "<answer>" in p.after_image_search
    assert "<answer>" in p.after_text_search
    assert "{error}" in p.search_failed and "{tool}" in p.search_failed


def test_default_set_loads_from_its_folder() -> None:
    assert load_prompt_set(DEFAULT_DIR).first_turn == default_prompt_set().first_turn


def _write_original_names(folder: Path, suffix: str = ".txt") -> None:
    texts = {
        "round_1_user_prompt_qwenvl": "Rules.\n<image> ",
        "after_image_search_prompt_qwenvl": "After image.",
        "after_text_search_prompt_qwenvl": "After text.",
    }
    for stem, text in texts.items():
        path = folder / f"{stem}{suffix}"
        if suffix == ".pkl":
            path.write_bytes(pickle.dumps(text))
        else:
            path.write_text(text, encoding="utf-8")


def test_original_file_names_and_question_appended(tmp_path: Path) -> None:
    _write_original_names(tmp_path)
    p = load_prompt_set(tmp_path)
    assert p.first_turn == "Rules.\n<image> "  # verbatim, trailing space kept
    assert p.search_failed == default_prompt_set().search_failed  # optional role falls back
    turn = render_first_turn("What is this?", "IMG", p)
    assert turn.text == "Rules.\n<image> What is this?"
    assert turn.images == ("IMG",)


def test_string_pickles_are_read(tmp_path: Path) -> None:
    _write_original_names(tmp_path, ".pkl")
    assert load_prompt_set(tmp_path).after_text_search == "After text."


class _Evil:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (print, ("pwned",))


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (pickle.dumps(_Evil()), "refusing to load"),  # a pickle that calls a function
        (pickle.dumps(["a", "b"]), "not a string"),  # plain data but not a string
        (b"\x80\x05garbage", "not a readable prompt pickle"),  # not a pickle at all
    ],
)
def test_bad_pickles_are_refused(tmp_path: Path, payload: bytes, message: str) -> None:
    path = tmp_path / "x.pkl"
    path.write_bytes(payload)
    with pytest.raises(PromptSetError, match=message):
        read_prompt_file(path)


def test_explicit_names(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("A <image>", encoding="utf-8")
    (tmp_path / "b.txt").write_text("B", encoding="utf-8")
    (tmp_path / "c.txt").write_text("C", encoding="utf-8")
    names = {"first_turn": "a.txt", "after_image_search": "b.txt", "after_text_search": "c.txt"}
    p = load_prompt_set(tmp_path, names=names)
    assert (p.first_turn, p.after_image_search, p.after_text_search) == ("A <image>", "B", "C")


@pytest.mark.parametrize(
    ("files", "names", "message"),
    [
        ({}, None, "no text for first_turn"),  # empty folder
        ({"first_turn.txt": "<image>"}, None, "no text for after_image_search"),  # missing role
        ({}, {"first_turn": "nope.txt"}, "no such file"),  # explicit file missing
        ({}, {"opening": "x.txt"}, "unknown prompt roles"),  # unknown role
    ],
)
def test_load_errors(
    tmp_path: Path, files: dict[str, str], names: dict[str, str] | None, message: str
) -> None:
    for name, text in files.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    with pytest.raises(PromptSetError, match=message):
        load_prompt_set(tmp_path, names=names)


def test_not_a_folder(tmp_path: Path) -> None:
    with pytest.raises(PromptSetError, match="not a folder"):
        load_prompt_set(tmp_path / "missing")


def test_non_utf8_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "first_turn.txt"
    path.write_bytes(b"\xff\xfe<image>")
    with pytest.raises(PromptSetError, match="not UTF-8"):
        read_prompt_file(path)


@pytest.mark.parametrize(
    ("first", "after_image", "message"),
    [
        ("no placeholder", "x", "exactly one <image>"),  # first turn without the image
        ("<image> <image>", "x", "exactly one <image>"),  # two placeholders
        ("<image>", "see <image>", "must not contain <image>"),  # placeholder in a follow-up
    ],
)
def test_prompt_set_validation(first: str, after_image: str, message: str) -> None:
    with pytest.raises(PromptSetError, match=message):
        PromptSet(first, after_image, "t", "e {error}")


# --- the original release's prompt texts (team fixtures; skipped when absent) ---


def test_loads_original_release_prompts(shared_samples: Path) -> None:
    p = load_prompt_set(shared_samples / "mmsearch_r1_prompts")
    assert p.first_turn.endswith("<image> ")  # the trailing space is kept
    assert p.first_turn.count(IMAGE_PLACEHOLDER) == 1
    turn = render_first_turn("Who built this?", object(), p)
    assert turn.text.endswith("<image> Who built this?")


def test_parser_handles_the_syntax_the_original_prompts_describe(shared_samples: Path) -> None:
    p = load_prompt_set(shared_samples / "mmsearch_r1_prompts")
    texts = (p.first_turn, p.after_image_search, p.after_text_search)
    joined = "\n".join(texts)
    # every action the original prompts show, exactly as they spell it
    image_tags = re.findall(r"<search><img></search>", joined)
    text_examples = re.findall(r"<text_search>[^<]*</text_search>", joined)
    answer_examples = re.findall(r"<answer>[^<]+</answer>", joined)
    assert image_tags and text_examples and answer_examples
    reason = "<reason>Looking at the image.</reason>"
    assert parse_action(reason + image_tags[0]) == ImageSearch()
    for example in text_examples:
        query = example.removeprefix("<text_search>").removesuffix("</text_search>").strip()
        assert parse_action(reason + example) == TextSearch(query)
    for example in answer_examples:
        answer = example.removeprefix("<answer>").removesuffix("</answer>").strip()
        assert parse_action(reason + example) == Answer(answer)
