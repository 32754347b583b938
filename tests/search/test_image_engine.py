"""The image engine: views, training and resuming, indexes built with it, pages with several
pictures, and the cache namespace that tells every backend option apart."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from search_helpers import query_image, write_corpus

from mmsr.assets import IMAGE_ENGINE
from mmsr.search.local.corpus import CorpusError, read_corpus
from mmsr.search.local.engine import EngineTrainConfig, read_info, train_engine
from mmsr.search.local.engine_data import corpus_pictures
from mmsr.search.local.index import build_index, read_manifest
from mmsr.search.local.search import LocalImageSearch
from mmsr.search.local.views import view
from mmsr.search.registry import _namespace, parse_search_config


def test_views_are_seeded_and_varied() -> None:
    picture = query_image("🦓")
    first = view(picture, random.Random(1))
    again = view(picture, random.Random(1))
    other = view(picture, random.Random(2))
    assert first.mode == "RGB" and np.array_equal(np.asarray(first), np.asarray(again))
    assert first.size != other.size or not np.array_equal(np.asarray(first), np.asarray(other))


def test_more_images_are_read_checked_and_kept_inside_the_corpus(tmp_path: Path) -> None:
    folder = write_corpus(tmp_path / "c")
    rows = [json.loads(line) for line in (folder / "pages.jsonl").read_text().splitlines()]
    rows[0]["more_images"] = [rows[1]["image"]]
    (folder / "pages.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    page = read_corpus(folder).pages[0]
    assert page.pictures == (page.image, folder.resolve() / rows[1]["image"])
    for bad, message in (
        ("img/x.png", "must be a list"),
        (["../up.png"], "points outside the corpus folder"),
        ([3], "non-empty string paths"),
    ):
        rows[0]["more_images"] = bad
        (folder / "pages.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        with pytest.raises(CorpusError, match=message):
            read_corpus(folder)


def test_a_page_with_two_pictures_is_found_by_either_and_returned_once(tmp_path: Path) -> None:
    folder = write_corpus(tmp_path / "c")
    rows = [json.loads(line) for line in (folder / "pages.jsonl").read_text().splitlines()]
    query_image("🐧").save(folder / "img" / "second.png")  # a second picture of the banana page
    rows[0]["more_images"] = ["img/second.png"]
    (folder / "pages.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    manifest = build_index(folder, tmp_path / "idx")
    assert (manifest.images, manifest.image_model, manifest.format) == (5, "efficientnet-color", 3)
    search = LocalImageSearch(tmp_path / "idx")
    hits = search.search(query_image("🐧"), 5)
    titles = [hit.title for hit in hits]
    assert len(titles) == len(set(titles)) == 4  # four pages with pictures, each once
    assert titles[0] == "Banana"  # its second picture is the penguin's very image


@pytest.fixture(scope="module")
def tiny_engine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    corpus = write_corpus(tmp_path_factory.mktemp("corpus"))
    pictures, _ = corpus_pictures(corpus)
    out = tmp_path_factory.mktemp("engine") / "e"
    config = EngineTrainConfig(steps=4, batch=4, warmup=1, checkpoint_every=2, eval_every=0)
    train_engine(pictures, out, config, validation=[(0, query_image("🍌"))])
    return out


def test_an_engine_trains_saves_its_identity_and_validates(tiny_engine: Path) -> None:
    info = read_info(tiny_engine)
    assert (info.steps, info.classes, info.pictures) == (4, 4, 4)
    assert len(info.digest) == 64 and info.validation[-1]["step"] == 4
    assert (tiny_engine / "checkpoint" / "progress.json").is_file()


def test_an_engine_run_resumes_from_its_checkpoint(tmp_path: Path) -> None:
    corpus = write_corpus(tmp_path / "c")
    pictures, _ = corpus_pictures(corpus)
    config = EngineTrainConfig(steps=2, batch=4, warmup=1, checkpoint_every=2, eval_every=0)
    train_engine(pictures, tmp_path / "e", config)
    longer = EngineTrainConfig(steps=3, batch=4, warmup=1, checkpoint_every=1, eval_every=0)
    train_engine(pictures, tmp_path / "e", longer)
    progress = json.loads((tmp_path / "e" / "checkpoint" / "progress.json").read_text())
    assert progress["step"] == 3 and read_info(tmp_path / "e").steps == 3


def test_an_index_built_with_an_engine_searches_with_it(tiny_engine: Path, tmp_path: Path) -> None:
    corpus = write_corpus(tmp_path / "c")
    manifest = build_index(corpus, tmp_path / "idx", engine=tiny_engine)
    assert manifest.image_model == "engine" and manifest.features.startswith("engine/160/256/")
    assert read_info(tmp_path / "idx" / "engine").digest == read_info(tiny_engine).digest
    rows = np.load(tmp_path / "idx" / "images.npy")
    assert rows.shape == (4, 256) and np.allclose(np.linalg.norm(rows, axis=1), 1, atol=1e-3)
    hits = LocalImageSearch(tmp_path / "idx").search(Image.new("RGB", (50, 50), "red"), 3)
    assert len(hits) == 3 and len({h.title for h in hits}) == 3


def test_an_engine_folder_that_is_not_one_is_refused_before_any_work(tmp_path: Path) -> None:
    corpus = write_corpus(tmp_path / "c")
    with pytest.raises(ValueError, match="not an image engine"):
        build_index(corpus, tmp_path / "idx", engine=tmp_path)
    assert not (tmp_path / "idx").exists()


def test_the_packaged_engine_is_shipped_with_its_identity() -> None:
    info = read_info(IMAGE_ENGINE)
    assert info.classes >= 500 and info.validation and info.validation[-1]["rank1"] >= 0.9


def test_format_2_indexes_still_open_as_efficientnet_color(
    local_index: Path, tmp_path: Path
) -> None:
    import shutil

    old = tmp_path / "old"
    shutil.copytree(local_index, old)
    manifest = json.loads((old / "manifest.json").read_text())
    del manifest["image_model"]
    manifest["format"] = 2
    (old / "manifest.json").write_text(json.dumps(manifest))
    assert read_manifest(old).image_model == "efficientnet-color"
    assert LocalImageSearch(old).search(query_image("🦓"), 1)[0].title == "Zebra"


def test_the_cache_namespace_changes_with_every_option_and_the_index(
    local_index: Path, local_corpus: Path, tmp_path: Path
) -> None:
    def namespace(**options: object) -> str:
        return _namespace(
            parse_search_config({"backend": "local", "index": str(local_index), **options})
        )

    base = namespace()
    assert base == namespace() and base.startswith(f"local:{local_index}#")
    assert (
        len(
            {
                base,
                namespace(color_weight=1.0),
                namespace(summary_chars=300),
                namespace(images=False),
            }
        )
        == 4
    )
    # the same folder rebuilt from another corpus: same prefix, another digest
    folder = tmp_path / "rebuilt"
    build_index(local_corpus, folder)
    before = _namespace(parse_search_config({"backend": "local", "index": str(folder)}))
    extra = {"id": "n", "title": "N", "url": "u", "text": "new page"}
    build_index(write_corpus(tmp_path / "c", extra_rows=[extra]), folder)
    after = _namespace(parse_search_config({"backend": "local", "index": str(folder)}))
    assert before.split("#")[0] == after.split("#")[0] == f"local:{folder}"
    assert before != after
