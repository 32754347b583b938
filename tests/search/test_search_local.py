"""The local backend: corpus rows, index build, summaries, search quality, the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from search_helpers import query_image, write_corpus

from mmsr.search.local.corpus import CorpusError, read_corpus
from mmsr.search.local.index import build_index, read_manifest
from mmsr.search.local.search import LocalImageSearch, LocalTextSearch
from mmsr.search.local.summary import split_sentences, summarize

GOOD = {"id": "x", "title": "T", "url": "u", "text": "t"}
BAD_ROWS: list[tuple[Any, str]] = [
    # not JSON
    ("{oops", "not valid JSON"),
    # JSON but not an object
    ("[1, 2]", "must be a JSON object"),
    # a required field missing
    ({"id": "x", "title": "T", "url": "u"}, "field 'text' is missing"),
    # a field of the wrong type
    ({**GOOD, "title": 3}, "field 'title' must be a string"),
    # an empty id
    ({**GOOD, "id": " "}, "field 'id' is empty"),
    # a field nobody knows
    ({**GOOD, "colour": "red"}, "unknown field(s) 'colour'"),
    # an image path escaping the corpus folder
    ({**GOOD, "image": "../secret.png"}, "field 'image'"),
    # an id used twice (p0 is in the base corpus)
    ({**GOOD, "id": "p0"}, "duplicate id 'p0'"),
]


@pytest.mark.parametrize(("row", "message"), BAD_ROWS)
def test_bad_rows_name_file_line_and_field(row: Any, message: str, tmp_path: Path) -> None:
    folder = write_corpus(tmp_path, extra_rows=[row])
    with pytest.raises(CorpusError) as info:
        read_corpus(folder)
    text = str(info.value)
    assert f"{folder.resolve() / 'pages.jsonl'}:7" in text  # six good rows come first
    assert message in text
    assert read_corpus(folder, skip_bad=True).skipped == 1


def test_corrupt_and_missing_images_are_counted_not_fatal(tmp_path: Path) -> None:
    folder = write_corpus(tmp_path / "c")
    (folder / "img" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    rows = [{**GOOD, "id": "b", "image": "img/broken.png"}, {**GOOD, "id": "m", "image": "no.png"}]
    write_corpus(folder, extra_rows=rows)
    manifest = build_index(folder, tmp_path / "idx")
    assert (manifest.pages, manifest.images, manifest.bad_images) == (8, 4, 2)


def test_rebuild_is_deterministic_and_replaces_the_index(
    local_corpus: Path, local_index: Path, tmp_path: Path
) -> None:
    out = tmp_path / "again"
    build_index(local_corpus, out)
    (out / "stale").write_text("from the first build")
    build_index(local_corpus, out)
    assert not (out / "stale").exists()
    assert read_manifest(out) == read_manifest(local_index)
    first, second = np.load(local_index / "images.npy"), np.load(out / "images.npy")
    assert first.tobytes() == second.tobytes()
    for index in (local_index, out):
        hits = LocalTextSearch(index).search("tower in paris", 3)
        assert [h.url for h in hits] == [
            h.url for h in LocalTextSearch(out).search("tower in paris", 3)
        ]


def test_refuses_to_replace_a_folder_that_is_not_an_index(local_corpus: Path) -> None:
    with pytest.raises(ValueError, match="not a search index"):
        build_index(local_corpus, local_corpus)


TEXT_CASES = [
    # title words rank their page first
    ("zebra", None, "Zebra"),
    # stemming: "penguins" finds "penguin"
    ("emperor penguins", None, "Penguin"),
    # body words
    ("himalayas nepal", None, "Mount Everest"),
    # query-language syntax in the query is treated as words, not operators
    ('capital: "France" AND (', None, "Paris"),
]


@pytest.mark.parametrize(("query", "question", "title"), TEXT_CASES)
def test_text_search_ranks_the_right_page_first(
    local_index: Path, query: str, question: str | None, title: str
) -> None:
    hits = LocalTextSearch(local_index).search(query, 3, question)
    assert hits[0].title == title


def test_text_search_without_words_finds_nothing(local_index: Path) -> None:
    assert LocalTextSearch(local_index).search("?!", 3) == []


SUMMARY_CASES = [
    # the sentence with the query words wins
    ("A. The Eiffel Tower is tall. C.", "eiffel tower", None, 100, "The Eiffel Tower is tall."),
    # the question breaks ties between query matches
    ("Paris is old. Paris has 2 million people.", "paris", "how many people", 30,
     "Paris has 2 million people."),
    # nothing matches: the lead of the page
    ("First one. Second one.", "zebra", None, 12, "First one."),
    # one long matching sentence is cut at a word boundary
    ("Zebra " + "stripes " * 20 + "end.", "zebra", None, 20, "Zebra stripes…"),
    # chosen sentences keep page order
    ("Zebra a. Other. Zebra stripes b.", "zebra stripes", None, 100, "Zebra a. Zebra stripes b."),
]  # fmt: skip


@pytest.mark.parametrize(("text", "query", "question", "limit", "expected"), SUMMARY_CASES)
def test_summaries(text: str, query: str, question: str | None, limit: int, expected: str) -> None:
    summary = summarize(text, query, question, max_chars=limit)
    assert summary == expected and len(summary) <= limit


def test_summaries_are_bounded_in_the_hits(local_index: Path) -> None:
    hits = LocalTextSearch(local_index, summary_chars=60).search("tower", 5, "when completed?")
    assert hits and all(len(h.summary) <= 60 for h in hits)
    # the tower sentence (58 characters) fits; adding the "completed" sentence would not
    assert hits[0].summary == "The Eiffel Tower is a wrought-iron lattice tower in Paris."


def test_sentence_splitting() -> None:
    assert split_sentences('He said "Hi." Then left!  2 more.') == [
        'He said "Hi."',
        "Then left!",
        "2 more.",
    ]
    # an abbreviation does not end a sentence: the capital of Grenada stays whole
    assert split_sentences("Capital city St. George's; code XCD. Mt. Fuji is high.") == [
        "Capital city St. George's; code XCD.",
        "Mt. Fuji is high.",
    ]


@pytest.mark.parametrize(("emoji", "title"), [("🦓", "Zebra"), ("🚀", "Rocket"), ("🍌", "Banana")])
def test_image_search_finds_the_page_of_a_changed_image(
    local_index: Path, emoji: str, title: str
) -> None:
    hits = LocalImageSearch(local_index).search(query_image(emoji), 2)
    assert hits[0].title == title
    assert hits[0].thumbnail.size[0] <= 128


def test_cli_builds_an_index(local_corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "cli-index"
    args = ["-m", "mmsr.cli", "index", "build", "--corpus", str(local_corpus), "--out", str(out)]
    done = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1])["images"] == 4
    assert "image features" in done.stderr  # the progress bar


def test_cli_reports_a_bad_corpus_as_an_error(tmp_path: Path) -> None:
    folder = write_corpus(tmp_path / "c", extra_rows=["{oops"])
    args = ["-m", "mmsr.cli", "index", "build", "--corpus", str(folder), "--out", str(tmp_path)]
    done = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert "pages.jsonl:7: not valid JSON" in done.stderr


_OFFLINE_ENCODER = """
import socket
def refuse(*args, **kwargs):
    raise OSError("network use is forbidden in this test")
socket.socket.connect = refuse
socket.create_connection = refuse
from PIL import Image
from mmsr.search.local.features import ImageEncoder
features = ImageEncoder().encode([Image.new("RGB", (30, 20), (200, 30, 30))])
print(features.shape, round(float((features ** 2).sum()), 4))
"""


def test_image_encoder_loads_its_packaged_weights_without_network() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _OFFLINE_ENCODER], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "(1, 1280) 1.0"


def test_a_runaway_query_is_cut_to_its_first_words(local_index: Path) -> None:
    search = LocalTextSearch(local_index)
    long_query = "zebra " + "qwertyuiop " * 5000 + "penguin"
    hits = search.search(long_query, 3)
    assert [h.title for h in hits] == ["Zebra"]  # "penguin", word 5002, was not searched
