"""``build_world``: the whole offline world from packaged data, deterministically from a seed.

Steps: read the sources, join entities, label head/tail, make pages (one per entity plus
distractors from the other summaries), make questions and split them, draw one query image
per question, write everything (see ``mmsr.world.write`` for the files). Run it with
``mmsr world build --out DIR --seed N [--small]``.
"""

from __future__ import annotations

import io
import logging
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image
from tqdm import tqdm

from mmsr.search.local.corpus import Page
from mmsr.world import entities as ent_mod
from mmsr.world import images, questions, sources, write
from mmsr.world.entities import Entity
from mmsr.world.questions import Question
from mmsr.world.sources import Article

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BuildConfig:
    """What to build and where."""

    out: Path
    """Output folder (created; a previous world build there is replaced)."""
    seed: int = 7
    """Seeds the head/tail labels, the split, the sample of ``small`` and every image."""
    small: bool = False
    """A reduced world (a few dozen entities, few distractors) for tests."""
    font: Path | None = None
    """Noto Color Emoji font file; None looks in the standard Debian location."""
    head_fraction: float = 0.35
    """Share of each kind's entities the policy will be taught (head)."""
    test_fraction: float = 0.2
    """Share of each (question type, knowledge) group put in the test split."""
    image_size: int = 224
    """Side of the square query images, in pixels."""
    small_per_kind: int = 3
    """Entities per kind in a small build (flags: twice as many)."""
    small_distractors: int = 60
    """Distractor pages in a small build (a full build keeps every other summary)."""
    fact_layout: str = "brief"
    """How a page states its entity's facts (``FACT_LAYOUTS``): ``brief``, one infobox-like
    sentence after the article ("X in brief: capital city Y; currency code Z; …");
    ``lines``, one sentence a fact, named by the word a text query uses for it
    ("X calling code: +1268."), for every entity with facts (living things' taxonomy too), so
    that a summary for "<name> <fact word>" can put the asked fact's own sentence first."""
    progress: bool = False
    """Show progress bars (the CLI turns them on)."""


def wiki_url(title: str) -> str:
    return "https://en.wikipedia.org/wiki/" + title.replace(" ", "_")


def article_text(art: Article) -> str:
    """A page's text: the short description as a first sentence, then the summary."""
    return f"{art.description}. {art.extract}" if art.description else art.extract


# How a country's facts read on its page, in page order: the one wording of the world, which
# the SFT teacher's synthetic pages reuse (``mmsr.teacher.drills``). Like an infobox, each fact
# is named by the word a text query uses for it (``FACT_WORDS``), so an
# extractive summary of the page for "<country> <fact word>" keeps the fact's sentence.
FLAG_FACT_PHRASES: tuple[tuple[str, str], ...] = (
    ("capital", "capital city {}"),
    ("currency", "currency code {}"),
    ("demonym", "demonym {}"),
    ("subregion", "subregion {}"),
    ("region", "region {}"),
    ("calling_code", "international calling code {}"),
    ("tld", "internet domain {}"),
)


# How a fact is named in a text-search query, a reason, and a ``lines`` page.
FACT_WORDS: dict[str, str] = {
    "capital": "capital",
    "currency": "currency",
    "demonym": "demonym",
    "subregion": "subregion",
    "region": "region",
    "calling_code": "calling code",
    "tld": "internet domain",
    "genus": "genus",
    "family": "family",
    "order": "order",
}
FACT_LAYOUTS = ("brief", "lines")


def fact_lines_text(name: str, facts: dict[str, str]) -> str:
    """Facts one sentence each, in ``FACT_WORDS`` order: ``"X capital: Y. X currency: Z."``."""
    return " ".join(
        f"{name} {word}: {facts[key]}." for key, word in FACT_WORDS.items() if key in facts
    )


def flag_facts_text(name: str, facts: dict[str, str]) -> str:
    """A country's facts in words: ``"<name> in brief: capital city X; ...."``."""
    parts = [phrase.format(facts[key]) for key, phrase in FLAG_FACT_PHRASES if key in facts]
    return f"{name} in brief: " + "; ".join(parts) + "."


def page_text(ent: Entity, fact_layout: str = "brief") -> str:
    """The article's text, and its facts in words (``BuildConfig.fact_layout``): ``brief``
    states a country's; ``lines`` every entity's."""
    text = article_text(ent.article) if ent.article else ent.name
    if fact_layout == "lines" and ent.facts:
        text += " " + fact_lines_text(ent.name, ent.facts)
    elif ent.kind == "flag":
        text += " " + flag_facts_text(ent.name, ent.facts)
    return text


def make_pages(
    entities: Sequence[Entity],
    distractors: Sequence[Article],
    second_drawings: dict[str, bytes] | None = None,
    fact_layout: str = "brief",
) -> tuple[list[Page], dict[str, bytes]]:
    """One page per entity (with its Twemoji image and, where given, a second drawing of the
    same thing: the web has more than one picture of a thing), then one per distractor."""
    pages, image_files, seen = [], {}, set()
    second_drawings = second_drawings or {}
    for ent in entities:
        rel = f"images/{ent.id}.png" if ent.emoji is not None else None
        more: tuple[str, ...] = ()
        if ent.emoji is not None and rel is not None:
            image_files[rel] = ent.emoji.twemoji_png.read_bytes()
            if ent.id in second_drawings:
                more = (f"images/{ent.id}.noto.png",)
                image_files[more[0]] = second_drawings[ent.id]
        image = Path(rel) if rel is not None else None
        more_images = tuple(Path(path) for path in more)
        page = Page(
            ent.id, ent.name, wiki_url(ent.name), page_text(ent, fact_layout), image, more_images
        )
        pages.append(page)
        seen.add(ent.id)
    for art in distractors:
        page_id = ent_mod.slug(art.title)
        while page_id in seen:
            page_id += "_"
        seen.add(page_id)
        pages.append(Page(page_id, art.title, wiki_url(art.title), article_text(art)))
    return pages, image_files


class QueryDrawer:
    """Base drawings per entity (Noto when it can, else Twemoji) and their augmentations;
    ``draw(entity, key)`` is deterministic in (seed, key)."""

    def __init__(self, font: Path | None, size: int, seed: int) -> None:
        self.renderer = images.NotoRenderer(font) if font is not None else None
        self.size, self.seed = size, seed
        self.bases: dict[str, Image.Image] = {}
        self.fallback: set[str] = set()

    def base(self, ent: Entity) -> Image.Image:
        if ent.id not in self.bases:
            assert ent.emoji is not None, f"entity {ent.id} has no emoji"
            glyph = self.renderer.render(ent.emoji.chars) if self.renderer else None
            if glyph is None:
                self.fallback.add(ent.id)
                glyph = images.load_rgba(ent.emoji.twemoji_png)
            self.bases[ent.id] = glyph
        return self.bases[ent.id]

    def drawing_png(self, ent: Entity) -> bytes | None:
        """The clean Noto drawing of ``ent`` as PNG bytes, or None where it falls back to
        Twemoji (the web's own picture: no second drawing then)."""
        glyph = self.base(ent)
        if ent.id in self.fallback:
            return None
        buf = io.BytesIO()
        glyph.save(buf, format="PNG", optimize=False)
        return buf.getvalue()

    def draw(self, ent: Entity, data_id: str) -> bytes:
        rng = random.Random(f"{self.seed}:query:{data_id}")
        return images.jpeg_bytes(images.augment(self.base(ent), self.size, rng))


def load_world(config: BuildConfig) -> tuple[list[Entity], list[Article]]:
    """The labelled entities and the distractor articles of a build, without writing anything
    (for code that needs the entities themselves, e.g. to draw more query images)."""
    articles = sources.load_articles()
    entities = ent_mod.join_entities(articles, sources.load_emojis(), sources.load_countries())
    if config.small:
        entities = ent_mod.select_small(entities, config.small_per_kind, config.seed)
    entities = ent_mod.split_knowledge(entities, config.head_fraction, config.seed)
    used = {e.name for e in entities}
    others = [a for a in articles if a.title not in used]
    if config.small:
        rng = random.Random(f"{config.seed}:distractors")
        picked = sorted(rng.sample(range(len(others)), min(config.small_distractors, len(others))))
        others = [others[i] for i in picked]
    return entities, others


def build_world(config: BuildConfig) -> dict[str, Any]:
    """Build and write the world; returns the stats (also written to ``stats.json``)."""
    out = config.out
    if config.fact_layout not in FACT_LAYOUTS:
        raise ValueError(f"fact_layout must be one of {FACT_LAYOUTS}, got {config.fact_layout!r}")
    write.prepare_out_dir(out)
    entities, distractors = load_world(config)
    logger.info("%d entities, %d distractor pages", len(entities), len(distractors))
    font = sources.find_noto_font(config.font)
    if font is None:
        logger.warning(
            "Noto Color Emoji font not found (%s): query images fall back to augmented "
            "Twemoji, so image search is easier than intended; install fonts-noto-color-emoji",
            config.font or "standard locations",
        )
    drawer = QueryDrawer(font, config.image_size, config.seed)
    drawings = {}
    for ent in entities:
        png = drawer.drawing_png(ent) if ent.emoji is not None else None
        if png is not None:
            drawings[ent.id] = png
    pages, image_files = make_pages(entities, distractors, drawings, config.fact_layout)
    write.write_corpus(out / "corpus", pages, image_files)

    qs = questions.split_questions(
        questions.make_questions(entities, config.seed), config.test_fraction, config.seed
    )
    by_id = {e.id: e for e in entities}
    rows: dict[str, list[dict[str, Any]]] = {"train": [], "test": []}
    for q in tqdm(qs, desc="query images", unit="img", disable=not config.progress):
        rows[q.split].append(write.question_row(q, drawer.draw(by_id[q.entity], q.data_id)))
    for split, split_rows in rows.items():
        write.write_parquet(out / f"{split}.parquet", split_rows)

    write.write_jsonl(
        out / "entities.jsonl", (write.entity_record(e, wiki_url(e.name)) for e in entities)
    )
    write.write_json(out / "vocab.json", write.vocabulary(entities, qs))
    (out / "NOTICE").write_text(write.NOTICE, encoding="utf-8")
    if font is not None and drawer.fallback:
        logger.warning(
            "%d entities have no Noto glyph; their query images are augmented Twemoji: %s",
            len(drawer.fallback),
            ", ".join(sorted(drawer.fallback)),
        )
    stats = world_stats(config, entities, pages, qs, font is not None, sorted(drawer.fallback))
    write.write_json(out / "stats.json", stats)
    return stats


def world_stats(
    config: BuildConfig,
    entities: Sequence[Entity],
    pages: Sequence[Page],
    qs: Sequence[Question],
    font_found: bool,
    fallback: list[str],
) -> dict[str, Any]:
    """Counts of everything built (no timings: the file must be identical between runs)."""

    def count(values: Any) -> dict[str, int]:
        return dict(sorted(Counter(values).items()))

    return {
        "seed": config.seed,
        "small": config.small,
        **({"fact_layout": config.fact_layout} if config.fact_layout != "brief" else {}),
        "entities": {
            "total": len(entities),
            "by_kind": count(e.kind for e in entities),
            "by_knowledge": count(e.knowledge for e in entities),
        },
        "pages": {
            "total": len(pages),
            "with_image": sum(p.image is not None for p in pages),
        },
        "questions": {
            "total": len(qs),
            "by_split": count(q.split for q in qs),
            "by_split_category": count(f"{q.split}/{q.category}" for q in qs),
            "by_type": count(q.question_type for q in qs),
            "by_search_need": count(q.search_need for q in qs),
            "by_hops": count(str(q.hops) for q in qs),
        },
        "query_images": {
            "style": "noto" if font_found else "twemoji",
            "font_found": font_found,
            "twemoji_fallback_entities": len(fallback),
            "fallback_ids": fallback if font_found else [],
        },
        "vocab": len(write.vocabulary(entities, qs)),
    }
