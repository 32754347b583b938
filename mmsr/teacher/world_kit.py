"""What the SFT teacher needs from a built world: entities, pictures, searches, fact pools.

``WorldKit.open(world, index)`` reads a world written by ``mmsr world build`` and the local
index built over its corpus: the labelled entities (re-derived with the world's own seed, so
head/tail labels match the parquet files), a ``QueryDrawer`` for fresh query-style images, the
index's thumbnails by entity id (so drills show exactly the thumbnails the image search
returns), the world's train questions, and the local search tools. Real image hits are cached
per question id (each search runs the EfficientNet encoder once).

Not here: the conversations themselves (``mmsr.teacher.draw``).
"""

from __future__ import annotations

import json
import logging
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmsr.data import load_samples, open_image
from mmsr.search.base import ImageSearchBackend, TextSearchBackend
from mmsr.search.local.index import read_manifest
from mmsr.search.registry import build_search
from mmsr.types import ImageHit, Sample, TextHit
from mmsr.world.build import BuildConfig, QueryDrawer, load_world, wiki_url
from mmsr.world.entities import Entity
from mmsr.world.sources import find_noto_font

logger = logging.getLogger(__name__)


WORLD_FILE = "world.json"
"""Beside a warm start's weights: the settings of the world and index it was trained on."""
WORLD_DEFAULTS: dict[str, str] = {"fact_layout": "brief", "summary_order": "page"}
"""Those settings' defaults: the world a model without ``WORLD_FILE`` was trained on."""


def world_settings(world: str | Path, index: str | Path) -> dict[str, str]:
    """How a built world states facts and how its index orders summaries."""
    return {
        "fact_layout": world_config(world).fact_layout,
        "summary_order": read_manifest(index).summary_order,
    }


def trained_world(model: str | Path) -> dict[str, str]:
    """The world settings a model folder says it was trained on (``WORLD_FILE``; defaults
    where it has none), checked: a warm start is evaluated in the world it learnt to read."""
    path = Path(model) / WORLD_FILE
    settings = dict(WORLD_DEFAULTS)
    if path.is_file():
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as err:
            raise ValueError(f"{path}: not JSON ({err})") from err
        if not isinstance(saved, dict) or not set(saved) <= set(WORLD_DEFAULTS):
            raise ValueError(f"{path}: expected an object with keys {sorted(WORLD_DEFAULTS)}")
        settings.update(saved)
    check_world_settings(settings, str(path))
    return settings


def check_world_settings(settings: dict[str, Any], where: str) -> None:
    """A clear error for a setting ``world build`` / ``index build`` would not take."""
    from mmsr.search.local.summary import SUMMARY_ORDERS
    from mmsr.world.build import FACT_LAYOUTS

    allowed = {"fact_layout": FACT_LAYOUTS, "summary_order": SUMMARY_ORDERS}
    for key, value in settings.items():
        if key not in allowed:
            raise ValueError(f"{where}: unknown world setting {key!r} ({', '.join(allowed)})")
        if value not in allowed[key]:
            raise ValueError(f"{where}: {key} must be one of {allowed[key]}, got {value!r}")


def world_config(world: str | Path) -> BuildConfig:
    """The build config a world was written with (its seed and size, from ``stats.json``):
    ``load_world`` of it re-derives the world's labelled entities."""
    world = Path(world)
    stats = json.loads((world / "stats.json").read_text(encoding="utf-8"))
    return BuildConfig(
        out=world,
        seed=int(stats["seed"]),
        small=bool(stats["small"]),
        fact_layout=str(stats.get("fact_layout", "brief")),
    )


@dataclass
class WorldKit:
    """A built world and its index, opened for making teacher conversations."""

    entities: list[Entity]
    """Every entity of the world, labelled head or tail."""
    drawer: QueryDrawer
    """Draws query-style images (Noto, augmented) of any entity, keyed by a string."""
    thumbnails: dict[str, Any]
    """Entity id → the thumbnail (PIL) the index returns for that entity's page."""
    train: list[Sample]
    """The world's train questions (the teacher never reads the test split), less the
    validation ones."""
    image_search: ImageSearchBackend
    """The local image search."""
    text_search: TextSearchBackend
    """The local text search."""
    validation: list[Sample] = field(default_factory=list)
    """Train questions held out of ``train`` (``open(validation=N)``) to check a warm start
    on without looking at the test split."""
    fact_layout: str = "brief"
    """How the world's pages state facts (``BuildConfig.fact_layout``): drills write theirs so."""
    summary_order: str = "page"
    """How the index orders a text hit's sentences (``IndexManifest.summary_order``)."""
    _image_hits: dict[str, list[ImageHit]] = field(default_factory=dict)
    _text_hits: dict[str, list[TextHit]] = field(default_factory=dict)

    @classmethod
    def open(cls, world: str | Path, index: str | Path, *, validation: int = 0) -> WorldKit:
        """``validation``: how many train questions (a sample seeded by the world's seed) to
        hold out of ``train`` as ``validation``."""
        world, index = Path(world), Path(index)
        config = world_config(world)
        entities, _ = load_world(config)
        _check_labels(entities, world / "entities.jsonl")
        drawer = QueryDrawer(find_noto_font(None), config.image_size, config.seed)
        search = build_search({"backend": "local", "index": str(index)})
        if search.image is None or search.text is None:
            raise ValueError(f"{index} lacks an image or a text index")
        train, held_out = split_validation(
            load_samples(world / "train.parquet"), validation, config.seed
        )
        kit = cls(
            entities=entities,
            drawer=drawer,
            thumbnails=_thumbnails(index),
            train=train,
            image_search=search.image,
            text_search=search.text,
            validation=held_out,
            fact_layout=config.fact_layout,
            summary_order=read_manifest(index).summary_order,
        )
        missing = [e.id for e in entities if e.id not in kit.thumbnails]
        if missing:
            raise ValueError(
                f"the index has no thumbnail for {len(missing)} entities: {missing[:5]}"
            )
        return kit

    @property
    def by_id(self) -> dict[str, Entity]:
        return {e.id: e for e in self.entities}

    def thumbnail_hit(self, entity: Entity) -> ImageHit:
        """The image hit the index would return for ``entity``'s page."""
        return ImageHit(entity.name, wiki_url(entity.name), self.thumbnails[entity.id])

    def query_image(self, entity: Entity, key: str) -> Any:
        """A fresh query-style picture of ``entity`` (deterministic in the world seed and key)."""
        return open_image(self.drawer.draw(entity, f"sft:{key}"))

    def image_hits(self, sample: Sample, image: Any, k: int) -> list[ImageHit]:
        """Real image-search hits for a train question's image (cached)."""
        if sample.id not in self._image_hits:
            self._image_hits[sample.id] = list(self.image_search.search(image, k))
        return self._image_hits[sample.id]

    def text_hits(self, query: str, question: str, k: int) -> list[TextHit]:
        """Real text-search hits (cached by query and question)."""
        key = f"{query}\x00{question}"
        if key not in self._text_hits:
            self._text_hits[key] = list(self.text_search.search(query, k, question=question))
        return self._text_hits[key]


def split_validation(samples: list[Sample], n: int, seed: int) -> tuple[list[Sample], list[Sample]]:
    """(the rest, ``n`` held-out samples): a sample seeded by ``seed``, both in file order."""
    if n <= 0:
        return list(samples), []
    if n >= len(samples):
        raise ValueError(f"cannot hold out {n} of {len(samples)} train questions")
    picked = set(random.Random(f"{seed}:validation").sample(range(len(samples)), n))
    rest = [s for i, s in enumerate(samples) if i not in picked]
    return rest, [s for i, s in enumerate(samples) if i in picked]


def _thumbnails(index: Path) -> dict[str, Any]:
    from PIL import Image

    out: dict[str, Any] = {}
    with (index / "images.jsonl").open(encoding="utf-8") as handle:
        for line in handle:
            row = json.loads(line)
            if row["id"] in out:  # a page with several pictures: one thumbnail
                continue
            with Image.open(index / row["thumbnail"]) as thumb:
                thumb.load()
                out[row["id"]] = thumb.copy()
    return out


def _check_labels(entities: list[Entity], path: Path) -> None:
    """The re-derived head/tail labels must be those the world was written with."""
    written = {}
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            row = json.loads(line)
            written[row["id"]] = row["knowledge"]
    derived = {e.id: e.knowledge for e in entities}
    if derived != written:
        raise ValueError(f"{path} does not match the world re-derived from its seed; rebuild it")
