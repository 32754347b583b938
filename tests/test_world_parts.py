"""The world's pure parts: the join rules, answers, search needs, the split and the drawings."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from mmsr.world import images
from mmsr.world.entities import (
    Entity,
    country_aliases,
    country_facts,
    join_entities,
    kind_of,
    object_aliases,
    slug,
)
from mmsr.world.questions import (
    TEMPLATES,
    Question,
    Template,
    answer_variants,
    make_questions,
    split_questions,
)
from mmsr.world.sources import Article, Emoji, find_noto_font, load_emojis


def _emoji(category: str, subcategory: str, name: str = "X") -> Emoji:
    return Emoji(name, (), category, subcategory, "x", Path("x.png"), 0)


@pytest.mark.parametrize(
    ("category", "subcategory", "kind"),
    [
        ("Flags", "country-flag", "flag"),  # flags of countries
        ("Flags", "subdivision-flag", None),  # England, Scotland: no countryinfo record
        ("Animals & Nature", "animal-mammal", "animal"),  # prefix "animal" matches
        ("Food & Drink", "food-fruit", "food"),
        ("Food & Drink", "dishware", "object"),  # spoons are objects, not food
        ("Travel & Places", "transport-air", "vehicle"),
        ("Objects", "tool", "object"),  # the rest of Objects
        ("Smileys & Emotion", "face-smiling", None),  # faces are not things
        ("People & Body", "person", None),
    ],
)
def test_kind_of(category: str, subcategory: str, kind: str | None) -> None:
    assert kind_of(_emoji(category, subcategory)) == kind


def test_kind_of_a_part_of_an_animal_is_object() -> None:
    assert kind_of(_emoji("Animals & Nature", "animal-bird", "FEATHER")) == "object"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Statue of Liberty", "statue_of_liberty"),
        ("Côte d'Ivoire", "c_te_d_ivoire"),  # non-ASCII letters become separators
        ("  --  ", "x"),  # never empty
    ],
)
def test_slug(text: str, expected: str) -> None:
    assert slug(text) == expected


@pytest.mark.parametrize(
    ("fact", "value", "aliases", "expected"),
    [
        (None, "France", ("France", "French Republic"), ("France", "French Republic")),
        ("calling_code", "+33", (), ("+33", "33")),  # with and without the plus
        ("tld", ".fr", (), (".fr", "fr")),
        ("capital", "Bogotá", (), ("Bogotá", "Bogota")),  # accents folded
        ("capital", "Paris", (), ("Paris",)),  # no duplicates
    ],
)
def test_answer_variants(
    fact: str | None, value: str, aliases: tuple[str, ...], expected: tuple[str, ...]
) -> None:
    assert answer_variants(fact, value, aliases) == expected


def test_country_facts_and_aliases_drop_codes_and_blanks() -> None:
    info = {
        "name": "France",
        "altSpellings": ["FR", "FRA", "French Republic"],
        "capital": "Paris",
        "currencies": ["EUR", "XPF"],
        "callingCodes": ["33"],
        "tld": [".fr"],
        "demonym": "",
    }
    facts = country_facts(info)
    assert facts == {"capital": "Paris", "currency": "EUR", "calling_code": "+33", "tld": ".fr"}
    assert country_aliases("France", info) == ("France", "French Republic")


def _entity(id: str, kind: str, knowledge: str, facts: dict[str, str]) -> Entity:
    return Entity(id, id.title(), kind, (id.title(),), facts, knowledge)


@pytest.mark.parametrize(
    ("qtype", "knowledge", "need", "hops"),
    [
        ("flag_country", "tail", "image", 1),  # naming an unknown flag: image search
        ("flag_capital", "tail", "both", 2),  # image search names it, text search finds the fact
        ("capital_named", "tail", "text", 1),  # the question names the country
        ("flag_capital", "head", "none", 2),  # the policy knows head entities
    ],
)
def test_search_need(qtype: str, knowledge: str, need: str, hops: int) -> None:
    ent = _entity("chile", "flag", knowledge, {"capital": "Santiago"})
    (q,) = [q for q in make_questions([ent]) if q.question_type == qtype]
    assert (q.search_need, q.hops) == (need, hops)
    assert q.category == ("search_free" if need == "none" else "search_required")


def test_fact_templates_need_the_fact() -> None:
    qs = make_questions([_entity("tiger", "animal", "tail", {})])
    assert [q.question_type for q in qs] == ["animal_name"]
    qs = make_questions([_entity("tiger", "animal", "tail", {"genus": "Panthera"})])
    assert sorted(q.question_type for q in qs) == ["animal_name", "genus", "genus_named"]
    qs = make_questions([_entity("cat", "animal", "tail", {"family": "Felidae"})])
    assert sorted(q.question_type for q in qs) == ["animal_name", "family", "family_named"]


def test_template_ids_are_unique() -> None:
    assert len({t.id for t in TEMPLATES}) == len(TEMPLATES)


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda t: t.id)
def test_template_phrasings(template: Template) -> None:
    assert len(template.texts) >= 2
    for text in template.texts:
        assert text.endswith("?") and "|" not in text
        # Named templates say the name in every phrasing; others never do.
        assert ("{name}" in text) == template.named


def test_phrasing_is_seeded() -> None:
    ents = [_entity(f"c{i}", "animal", "tail", {}) for i in range(20)]
    texts = [q.question for q in make_questions(ents, seed=1)]
    assert texts == [q.question for q in make_questions(ents, seed=1)]
    assert len(set(texts)) == 2  # both phrasings of animal_name are used


def test_split_keeps_every_group_in_both_splits() -> None:
    ents = [_entity(f"c{i}", "flag", "tail" if i % 3 else "head", {}) for i in range(12)]
    qs: list[Question] = split_questions(make_questions(ents), 0.2, seed=1)
    for knowledge in ("head", "tail"):
        splits = {q.split for q in qs if q.knowledge == knowledge}
        assert splits == {"train", "test"}
    assert qs == split_questions(make_questions(ents), 0.2, seed=1)


def test_augment_is_deterministic_and_seed_dependent() -> None:
    glyph = Image.new("RGBA", (40, 30), (255, 0, 0, 255))

    def draw(seed: str) -> bytes:
        return images.jpeg_bytes(images.augment(glyph, 64, random.Random(seed)))

    assert draw("a") == draw("a")
    assert draw("a") != draw("b")


def test_noto_renders_flags_as_one_glyph_and_refuses_missing_ones() -> None:
    font = find_noto_font()
    if font is None:
        pytest.skip("fonts-noto-color-emoji is not installed")
    renderer = images.NotoRenderer(font)
    if not renderer.shaping:
        pytest.skip("Pillow has no raqm: flag ligatures cannot form")
    flag = renderer.render("\U0001f1eb\U0001f1f7")  # regional indicators F + R
    assert flag is not None and flag.width < 1.5 * images.GLYPH_SIDE
    assert renderer.render("A") is None  # the font has no Latin letters


def test_every_twemoji_file_exists() -> None:
    emojis = load_emojis()
    assert len(emojis) > 1500
    assert all(e.twemoji_png.is_file() for e in emojis[:50])


def _article(title: str, extract: str = "Some text.", description: str = "") -> Article:
    return Article(title, extract, description)


def test_join_gives_a_country_article_to_its_flag_first() -> None:
    articles = [_article("Japan"), _article("Tiger", "The tiger is in the genus Panthera.")]
    emojis = [
        Emoji("SILHOUETTE OF JAPAN", ("japan",), "Travel & Places", "place-map", "x", Path(), 1),
        Emoji("TIGER", ("tiger",), "Animals & Nature", "animal-mammal", "x", Path(), 2),
        Emoji("Japan Flag", ("jp", "flag-jp"), "Flags", "country-flag", "x", Path(), 3),
    ]
    countries = {"JP": {"name": "Japan", "capital": "Tokyo", "ISO": {"alpha2": "JP"}}}
    ents = {e.id: e for e in join_entities(articles, emojis, countries)}
    assert sorted(ents) == ["japan", "tiger"]
    assert ents["japan"].kind == "flag" and ents["japan"].facts["capital"] == "Tokyo"
    assert ents["tiger"].facts == {"genus": "Panthera"}


@pytest.mark.parametrize(
    ("extract", "facts"),
    [
        ("Zebras share the genus Equus with horses.", {"genus": "Equus"}),
        ("The extinct genus Amphechinus once lived here.", {}),  # a relative, not the thing
        ("A genus of plants.", {}),  # no name follows
        ("A cat of the family Felidae.", {"family": "Felidae"}),
        ("In the subfamily Felinae.", {}),  # a subfamily is not the family
        ("Bees, of the order Hymenoptera.", {"order": "Hymenoptera"}),
        ("A fruit of the family Rosaceae.", {"family": "Rosaceae"}),  # plant families: -aceae
    ],
)
def test_taxonomy_is_read_from_the_summary(extract: str, facts: dict[str, str]) -> None:
    emoji = Emoji("ZEBRA", ("zebra",), "Animals & Nature", "animal-mammal", "x", Path(), 1)
    (ent,) = join_entities([_article("Zebra", extract)], [emoji], {})
    assert ent.facts == facts


def test_skipped_emoji_make_no_entity() -> None:
    emoji = Emoji("BLACK HEART SUIT", ("hearts",), "Activities", "game", "x", Path(), 1)
    assert join_entities([_article("Heart")], [emoji], {}) == []


def test_the_world_builder_does_not_import_torch() -> None:
    code = "import sys, mmsr.world.build, mmsr.world.cli; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize(
    ("title", "name", "short_names", "aliases"),
    [
        ("Bee", "HONEYBEE", ("bee", "honeybee"), ("Bee", "honeybee")),  # inside the name
        ("Calendar", "CALENDAR", ("date",), ("Calendar",)),  # unrelated short name dropped
        ("Dog", "DOG FACE", ("dog",), ("Dog",)),  # same as the title: no duplicate
        ("Dolphin", "DOLPHIN", ("dolphin", "flipper"), ("Dolphin",)),
    ],
)
def test_object_aliases(
    title: str, name: str, short_names: tuple[str, ...], aliases: tuple[str, ...]
) -> None:
    emoji = Emoji(name, short_names, "Animals & Nature", "animal-mammal", "x", Path(), 1)
    assert object_aliases(title, emoji) == aliases
