"""Entities of the offline world: things that have both a Wikipedia summary and an emoji.

The join: a country flag emoji joins ``countryinfo`` by its ISO code and then the
summary of that country; any other emoji joins the summary whose title equals its Unicode name
or one of its short names. Each entity gets a kind (flag, animal, food, …), aliases (candidate
answers), facts (country facts, taxonomy read from the summary) and a
knowledge label: **head** (the policy will be taught it) or **tail** (it must search).
This module only decides *what* exists; images, pages and questions are made elsewhere.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from mmsr.world.sources import Article, Emoji

# Emoji subcategory (or its prefix before "-") → entity kind; unlisted ones are left out
# (faces, people, symbols: no concrete thing a question could be about).
KIND_BY_SUBCATEGORY: dict[str, str] = {
    "country-flag": "flag",
    "animal": "animal",
    "plant": "plant",
    "food": "food",
    "drink": "drink",
    "dishware": "object",
    "transport": "vehicle",
    "place": "place",
    "sky & weather": "weather",
    "sport": "sport",
    "game": "sport",
    "musical-instrument": "instrument",
    "body-parts": "body",
    "person-role": "job",
}
# Emoji filed under animals that show a part of one: asked about as objects.
KIND_BY_NAME: dict[str, str] = {"FEATHER": "object", "WING": "object"}
# Whole emoji categories whose remaining subcategories count as everyday objects.
OBJECT_CATEGORIES: frozenset[str] = frozenset({"Objects", "Activities"})

# Emoji whose name-matched article is about something else than what the picture shows
# (a card suit is not a heart, a carp streamer is not "Flag", a cake is not "Birthday").
SKIP_EMOJI: frozenset[str] = frozenset(
    {
        "BLACK CLUB SUIT",
        "BLACK DIAMOND SUIT",
        "BLACK HEART SUIT",
        "BLACK SPADE SUIT",
        "BIRTHDAY CAKE",
        "CARP STREAMER",
        "CONSTRUCTION SIGN",
        "COOKING",
        "PINE DECORATION",
        "PISTOL",
        "SMOKING SYMBOL",
        "SPEAKER WITH ONE SOUND WAVE",
    }
)

# Taxonomy read from the summary ("the genus Panthera", "the family Felidae"); an "extinct
# genus" is a relative, not the thing itself, and a "subfamily" is not its family.
TAXON_PATTERNS: dict[str, re.Pattern[str]] = {
    "genus": re.compile(r"(?<!extinct )\bgenus ([A-Z][a-z]{2,})\b"),
    "family": re.compile(r"(?<!extinct )(?<!sub)\bfamily ([A-Z][a-z]+(?:idae|aceae))\b"),
    "order": re.compile(r"(?<!extinct )(?<!sub)\border ([A-Z][a-z]{3,})\b"),
}
_SLUG = re.compile(r"[^a-z0-9]+")


@dataclass(frozen=True)
class Entity:
    """One thing of the world: an article, its emoji, its facts and whether it is head."""

    id: str
    """Stable slug of the name, e.g. ``"statue_of_liberty"``."""
    name: str
    """The canonical name (the Wikipedia title), the ground truth of naming questions."""
    kind: str
    """flag, animal, plant, food, drink, object, vehicle, place, weather, sport, instrument,
    body (a part of the body) or job (a person at work)."""
    aliases: tuple[str, ...]
    """Other accepted names (the name first)."""
    facts: dict[str, str] = field(default_factory=dict)
    """Fact name → value, e.g. ``{"capital": "Paris"}``; values are answer strings."""
    knowledge: str = "tail"
    """``"head"`` (taught to the policy) or ``"tail"`` (found only by searching)."""
    article: Article | None = None
    """The entity's Wikipedia summary."""
    emoji: Emoji | None = None
    """The entity's emoji (the Twemoji image and the text to render with Noto)."""


def slug(text: str) -> str:
    """Lower-case ASCII slug: ``"Côte d'Ivoire"`` → ``"c_te_d_ivoire"``."""
    return _SLUG.sub("_", text.lower()).strip("_") or "x"


def kind_of(emoji: Emoji) -> str | None:
    """The entity kind of an emoji, or None when such emoji are not entities."""
    if emoji.name in KIND_BY_NAME:
        return KIND_BY_NAME[emoji.name]
    sub = emoji.subcategory
    for key in (sub, sub.split("-")[0]):
        if key in KIND_BY_SUBCATEGORY:
            return KIND_BY_SUBCATEGORY[key]
    return "object" if emoji.category in OBJECT_CATEGORIES else None


def _dedup(names: Iterable[str]) -> tuple[str, ...]:
    seen: set[str] = set()
    out = []
    for name in names:
        name = " ".join(name.split())
        if name and name.lower() not in seen:
            seen.add(name.lower())
            out.append(name)
    return tuple(out)


def country_facts(info: dict[str, Any]) -> dict[str, str]:
    """Answerable facts of a ``countryinfo`` record; missing values are left out."""
    facts = {
        "capital": str(info.get("capital") or ""),
        "currency": str((info.get("currencies") or [""])[0]),
        "demonym": str(info.get("demonym") or ""),
        "region": str(info.get("region") or ""),
        "subregion": str(info.get("subregion") or ""),
        "calling_code": "+" + str((info.get("callingCodes") or [""])[0]).lstrip("+"),
        "tld": str((info.get("tld") or [""])[0]),
    }
    return {k: v.strip() for k, v in facts.items() if v.strip() and v.strip() != "+"}


def country_aliases(title: str, info: dict[str, Any]) -> tuple[str, ...]:
    """The article title, countryinfo's name, and long alternative spellings (codes such as
    "FR" or "FRA" are left out: they are not names anyone answers with)."""
    alts = [str(s) for s in info.get("altSpellings") or () if len(str(s)) > 3]
    return _dedup([title, str(info.get("name") or ""), *alts])


def _flag_code(emoji: Emoji) -> str:
    codes = [s.split("-", 1)[1] for s in emoji.short_names if s.startswith("flag-")]
    return (codes[0] if codes else emoji.short_names[0] if emoji.short_names else "").upper()


def _candidate_titles(emoji: Emoji) -> list[str]:
    """Names under which an article may describe an emoji: its Unicode name, its short names,
    and the name without a trailing "face" ("DOG FACE" → "dog")."""
    names = [emoji.name.lower(), *(s.replace("_", " ").lower() for s in emoji.short_names)]
    names += [n[: -len(" face")] for n in names if n.endswith(" face")]
    names += [n[:-1] for n in names if n.endswith("s")]
    return names


def taxonomy(extract: str) -> dict[str, str]:
    """Genus, family and order named in a summary, where it names them."""
    found = {rank: pattern.search(extract) for rank, pattern in TAXON_PATTERNS.items()}
    return {rank: m.group(1) for rank, m in found.items() if m is not None}


def object_aliases(title: str, emoji: Emoji) -> tuple[str, ...]:
    """The title and the emoji's short names that say the same thing: those inside its Unicode
    name or containing the title ("honeybee" for Bee; not "date" for Calendar)."""
    name = emoji.name.lower()
    keep = []
    for short in (s.replace("_", " ") for s in emoji.short_names):
        related = short in name or title.lower() in short
        if related and len(short) > 2 and not short.endswith("face"):
            keep.append(short)
    return _dedup([title, *keep])


def join_entities(
    articles: Sequence[Article], emojis: Sequence[Emoji], countries: dict[str, dict[str, Any]]
) -> list[Entity]:
    """Every emoji that has an article becomes one entity; an article is used once (the first
    emoji in Unicode order wins). Sorted by id."""
    by_lower = {a.title.lower(): a for a in articles}
    used: set[str] = set()
    entities: list[Entity] = []
    # Flags first, so that a country's article goes to its flag, not to a map or landmark.
    ordered = sorted(emojis, key=lambda e: kind_of(e) != "flag")
    for emoji in ordered:
        kind = kind_of(emoji)
        if kind is None or emoji.name in SKIP_EMOJI:
            continue
        if kind == "flag":
            info = countries.get(_flag_code(emoji))
            article = by_lower.get(str(info.get("name", "")).lower()) if info else None
            if info is None or article is None or article.title in used:
                continue
            aliases = country_aliases(article.title, info)
            facts = country_facts(info)
        else:
            titles = _candidate_titles(emoji)
            article = next((by_lower[t] for t in titles if t in by_lower), None)
            if article is None or article.title in used:
                continue
            aliases = object_aliases(article.title, emoji)
            facts = taxonomy(article.extract) if kind in ("animal", "plant", "food") else {}
        used.add(article.title)
        entities.append(
            Entity(slug(article.title), article.title, kind, aliases, facts, "tail", article, emoji)
        )
    return _unique_ids(sorted(entities, key=lambda e: e.id))


def _unique_ids(entities: list[Entity]) -> list[Entity]:
    seen: dict[str, int] = {}
    out = []
    for ent in entities:
        n = seen.get(ent.id, 0)
        seen[ent.id] = n + 1
        out.append(ent if n == 0 else replace(ent, id=f"{ent.id}_{n + 1}"))
    return out


def split_knowledge(entities: Sequence[Entity], head_fraction: float, seed: int) -> list[Entity]:
    """Label a seeded ``head_fraction`` of each kind as head, the rest as tail."""
    by_kind: dict[str, list[Entity]] = {}
    for ent in entities:
        by_kind.setdefault(ent.kind, []).append(ent)
    head: set[str] = set()
    for kind, group in sorted(by_kind.items()):
        ids = sorted(e.id for e in group)
        random.Random(f"{seed}:head:{kind}").shuffle(ids)
        head.update(ids[: round(head_fraction * len(ids))])
    return [replace(e, knowledge="head" if e.id in head else "tail") for e in entities]


def select_small(entities: Sequence[Entity], per_kind: int, seed: int) -> list[Entity]:
    """A seeded sample of at most ``per_kind`` entities of each kind (for ``--small``); the
    flags get twice the share, as the fact questions are about them."""
    by_kind: dict[str, list[Entity]] = {}
    for ent in entities:
        by_kind.setdefault(ent.kind, []).append(ent)
    keep: set[str] = set()
    for kind, group in sorted(by_kind.items()):
        limit = per_kind * 2 if kind == "flag" else per_kind
        ids = sorted(e.id for e in group)
        keep.update(random.Random(f"{seed}:small:{kind}").sample(ids, min(limit, len(ids))))
    return [e for e in entities if e.id in keep]
