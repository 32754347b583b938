"""Observation layouts: loading, validation, the original release's observations byte for byte."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from mmsr.protocol import (
    IMAGE_PLACEHOLDER,
    PromptSetError,
    default_prompt_set,
    load_prompt_set,
    render_first_turn,
    render_image_results,
    render_search_error,
    render_text_results,
)
from mmsr.protocol.layout import DEFAULT_LAYOUT, LayoutError, ObservationLayout, fill
from mmsr.protocol.prompts import load_release_layout, resolve_prompt_set
from mmsr.types import ImageHit, TextHit

Q = "Which country's flag is this?"
# What the chat encoder (and the release's processor) writes for one image placeholder, before
# the image pad is repeated to the image's token count.
VISION = "<|vision_start|><|image_pad|><|vision_end|>"

# The release's tool strings, from its tools (mmsearch_r1/utils/tools/{image,text}_search.py: a
# header line before the hits, and the error string that goes back alone). They are the worded
# fields a user's layout file gives; the form around them (its rollout's "Searched results:
# <information>…" wrapper and the hit lines) is mmsr's RELEASE_LAYOUT_FORM.
RELEASE_WORDING = r"""
image_results = "[Image Search Results] The result of the image search consists of web page information related to the image from the user's original question. Each result includes the main image from the web page and its title, ranked in descending order of search relevance, as demonstrated below:\n{hits}"
text_results = "[Text Search Results] Below are the text summaries of the most relevant webpages related to your query, ranked in descending order of relevance:\n{hits}"
image_error = "[Image Search Results] There is an error encountered in performing search. Please reason with your own capaibilities."
text_error = "[Text Search Results] There is an error encountered in performing search. Please reason with your own capaibilities."
"""  # noqa: E501


@pytest.fixture
def release_set(shared_samples: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "release"
    shutil.copytree(shared_samples / "mmsearch_r1_prompts", folder)
    (folder / "layout.toml").write_text(RELEASE_WORDING, encoding="utf-8")
    return folder


def test_release_observations_byte_for_byte(release_set: Path) -> None:
    prompts = load_release_layout(release_set)
    texts = {p.stem: p.read_text(encoding="utf-8") for p in release_set.glob("*.txt")}
    after_image = texts["after_image_search_prompt_qwenvl"]
    after_text = texts["after_text_search_prompt_qwenvl"]
    # first turn: the round-1 prompt with the question appended (it ends in "<image> ")
    first = render_first_turn(Q, "IMG", prompts)
    assert first.text == texts["round_1_user_prompt_qwenvl"] + Q

    hits = [ImageHit("Flag of France", "u1", "T1"), ImageHit("Tricolour - Wikipedia", "u2", "T2")]
    turn = render_image_results(hits, Q, prompts)
    assert turn.images == ("T1", "T2")
    assert turn.text.replace(IMAGE_PLACEHOLDER, VISION) == (
        "Searched results: <information>[Image Search Results] The result of the image search "
        "consists of web page information related to the image from the user's original "
        "question. Each result includes the main image from the web page and its title, ranked "
        "in descending order of search relevance, as demonstrated below:\n"
        f"1. image: {VISION}\ntitle: Flag of France\n"
        f"2. image: {VISION}\ntitle: Tricolour - Wikipedia\n"
        "</information>\n"
        "Original user's question: Which country's flag is this?\n" + after_image
    )

    pages = [
        TextHit("t", "https://en.wikipedia.org/wiki/Flag_of_France", "A blue, white, red flag."),
        TextHit("t", "https://example.org/flags", "Adopted in 1794."),
    ]
    assert render_text_results(pages, Q, prompts).text == (
        "Searched results: <information>[Text Search Results] Below are the text summaries of "
        "the most relevant webpages related to your query, ranked in descending order of "
        "relevance:\n"
        "1. (https://en.wikipedia.org/wiki/Flag_of_France) A blue, white, red flag.\n"
        "2. (https://example.org/flags) Adopted in 1794.\n"
        "</information>\n"
        "Original user's question: Which country's flag is this?\n" + after_text
    )

    # errors go back as the tool's raw string: no wrapper, no question, no instruction
    failed = render_search_error("text", "HTTP 429", Q, prompts)
    assert failed.text == (
        "[Text Search Results] There is an error encountered in performing search. "
        "Please reason with your own capaibilities."
    )
    assert failed.images == ()


def test_without_a_layout_file_a_folder_gets_ours(shared_samples: Path) -> None:
    prompts = load_prompt_set(shared_samples / "mmsearch_r1_prompts")
    assert prompts.layout == DEFAULT_LAYOUT == default_prompt_set().layout


def test_json_layout_and_defaults_for_missing_fields(tmp_path: Path) -> None:
    folder = tmp_path / "set"
    shutil.copytree(Path(__file__).parents[1] / "mmsr/protocol/prompts/default", folder)
    (folder / "layout.json").write_text(json.dumps({"text_hit": "[{n}] {url}: {summary}"}))
    prompts = load_prompt_set(folder)
    turn = render_text_results([TextHit("t", "u", "s")], Q, prompts)
    assert "\n[1] u: s\n" in turn.text
    assert prompts.layout.observation == DEFAULT_LAYOUT.observation


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        # a slot the field does not have
        ({"text_hit": "{n}. {title}"}, "unknown slots ['title']"),
        # an image hit must hold exactly one placeholder, so images and placeholders match
        ({"image_hit": "{n}. {title}"}, "must hold 1 <image>"),
        ({"image_hit": "<image><image> {title}"}, "must hold 1 <image>"),
        # no other field may add one
        ({"observation": "<image>{results}"}, "must hold 0 <image>"),
        # a field that does not exist
        ({"footer": "x"}, "unknown layout fields ['footer']"),
        # not a string
        ({"hit_separator": 3}, "must be a string"),
    ],
)
def test_bad_layouts_are_refused(tmp_path: Path, fields: dict[str, object], message: str) -> None:
    folder = tmp_path / "set"
    shutil.copytree(Path(__file__).parents[1] / "mmsr/protocol/prompts/default", folder)
    (folder / "layout.json").write_text(json.dumps(fields))
    with pytest.raises(PromptSetError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_prompt_set(folder)


def test_two_layout_files_or_a_broken_one_are_refused(tmp_path: Path) -> None:
    folder = tmp_path / "set"
    shutil.copytree(Path(__file__).parents[1] / "mmsr/protocol/prompts/default", folder)
    (folder / "layout.toml").write_text('observation = "{results')
    with pytest.raises(PromptSetError, match="not a readable layout"):
        load_prompt_set(folder)
    (folder / "layout.json").write_text("{}")
    with pytest.raises(PromptSetError, match="keep one"):
        load_prompt_set(folder)


def test_slots_are_filled_once_so_untrusted_text_cannot_pull_in_others() -> None:
    # a title that spells a slot stays text
    assert fill("{n}. {title}", n="1", title="{n} {question}") == "1. {n} {question}"
    with pytest.raises(LayoutError):
        ObservationLayout(no_results="{hits}")


def test_release_layout_by_its_setting_and_what_a_folder_lacks(
    release_set: Path, tmp_path: Path
) -> None:
    assert resolve_prompt_set(f"release-layout:{release_set}") == load_release_layout(release_set)
    assert resolve_prompt_set("") == default_prompt_set() == resolve_prompt_set("default")
    with pytest.raises(PromptSetError, match="release-layout:DIR"):
        resolve_prompt_set("release-layout")
    # an empty folder: every missing file is named in one message
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(PromptSetError) as caught:
        load_release_layout(empty)
    for name in (
        "round_1_user_prompt_qwenvl.pkl",
        "after_image_search_prompt_qwenvl.pkl",
        "after_text_search_prompt_qwenvl.pkl",
        "layout.toml or layout.json",
    ):
        assert name in str(caught.value)
    # a layout file without the worded fields: they are named, ours are never filled in
    (release_set / "layout.toml").write_text('text_error = "x"\n', encoding="utf-8")
    with pytest.raises(
        PromptSetError, match=r"the fields image_results, text_results, image_error \("
    ):
        load_release_layout(release_set)
