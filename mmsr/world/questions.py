"""FVQA-like questions made from templates over the world's entities, and the train/test split.

A template asks for the entity's name (one hop: an image search finds the page whose title is
the answer) or for one of its facts (two hops: an image search names the entity, a text search
finds the fact). Templates marked ``named`` say the entity's name in the question, so only a
text search is needed. Whether a search is needed at all depends on the entity's knowledge
label: head entities give ``search_free`` questions, tail entities ``search_required`` ones
(paper §3's categories; the finer need is kept in ``search_need``). Wording is our own.
"""

from __future__ import annotations

import random
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

from mmsr.world.entities import Entity


@dataclass(frozen=True)
class Template:
    """One question pattern."""

    id: str
    """The question type, e.g. ``"flag_capital"``."""
    kinds: frozenset[str]
    """Entity kinds it applies to."""
    texts: tuple[str, ...]
    """Phrasings of the question (one is drawn per question); ``{name}`` is replaced by the
    entity name when ``named``."""
    fact: str | None = None
    """The fact asked for, or None for the entity's name."""
    named: bool = False
    """The question names the entity: a text search alone suffices."""

    @property
    def hops(self) -> int:
        """Searches a tail question needs: 2 for a fact about an unnamed entity, else 1."""
        return 2 if self.fact is not None and not self.named else 1


def _t(id: str, kinds: str, texts: str, fact: str | None = None, named: bool = False) -> Template:
    """A template from compact table cells: kinds split on spaces, phrasings on " | "."""
    return Template(id, frozenset(kinds.split()), tuple(texts.split(" | ")), fact, named)


LIVING = "animal plant food"
TEMPLATES: tuple[Template, ...] = (
    _t("flag_country", "flag", "Which country's flag is this? | "
       "This flag belongs to which country?"),
    _t("flag_capital", "flag", "What is the capital of the country whose flag is shown? | "
       "Which city is the capital of the country that uses this flag?", "capital"),
    _t("flag_currency", "flag", "Which currency code does the country with this flag use? | "
       "What is the code of the currency of the country this flag stands for?", "currency"),
    _t("flag_demonym", "flag", "What are the people of the country with this flag called? | "
       "What do you call someone from the country whose flag this is?", "demonym"),
    _t("flag_subregion", "flag", "In which part of the world is the country that flies this "
       "flag? | Which subregion of the world is home to the country of this flag?",
       "subregion"),
    _t("flag_calling_code", "flag", "What is the international calling code of the country "
       "whose flag this is? | Which telephone country code does the nation with this flag "
       "have?", "calling_code"),
    _t("flag_tld", "flag", "Which internet domain ending belongs to the country of this flag? | "
       "What is the top-level web domain of the country that uses this flag?", "tld"),
    _t("capital_named", "flag", "This is the flag of {name}. What is its capital city? | "
       "The flag shown is that of {name}. Which city is its capital?", "capital", named=True),
    _t("animal_name", "animal", "What is this animal called? | Which animal is in the picture?"),
    _t("plant_name", "plant", "What plant is shown here? | Which plant does this picture show?"),
    _t("food_name", "food drink", "What food or drink is pictured here? | "
       "What is the food or drink in this image?"),
    _t("object_name", "object instrument", "What is the object in this picture called? | "
       "What is this thing?"),
    _t("vehicle_name", "vehicle", "What kind of vehicle is this? | "
       "Which means of transport is shown in this picture?"),
    _t("place_name", "place weather", "What place or natural sight does this picture show? | "
       "What is shown in this scene?"),
    _t("sport_name", "sport", "Which sport or game does this picture stand for? | "
       "What game or sport is this picture about?"),
    _t("body_part", "body", "Which part of the body is shown here? | "
       "What body part is in this picture?"),
    _t("job_name", "job", "What job does the person in this picture do? | "
       "What is the occupation of the person shown?"),
    _t("genus", LIVING, "To which genus does the living thing in this picture belong? | "
       "What genus is the species shown here in?", "genus"),
    _t("genus_named", LIVING, "The picture shows: {name}. Which genus does it belong to? | "
       "This is a picture of {name}. What is its genus?", "genus", named=True),
    _t("family", LIVING, "Which biological family does the living thing pictured here belong "
       "to? | In which family of living things is the one in this image?", "family"),
    _t("family_named", LIVING, "The picture shows: {name}. In which biological family is it? | "
       "This is a picture of {name}. Which family does it belong to?", "family", named=True),
    _t("order", LIVING, "To which biological order does the creature or plant shown belong? | "
       "What order of living things does the one in this picture belong to?", "order"),
)  # fmt: skip


@dataclass(frozen=True)
class Question:
    """One question about one entity, with everything a row of the dataset needs."""

    data_id: str
    question: str
    answer: str
    candidates: tuple[str, ...]
    """Accepted answers, the ground truth first."""
    question_type: str
    entity: str
    knowledge: str
    search_need: str
    """``"none"`` (head), else what a tail question needs: image, text or both."""
    hops: int
    split: str = "train"

    @property
    def category(self) -> str:
        return "search_free" if self.search_need == "none" else "search_required"


def answer_variants(fact: str | None, value: str, aliases: Sequence[str]) -> tuple[str, ...]:
    """Candidate answers: the aliases for a name; for a fact its value plus spellings a reader
    would accept (without the "+" or ".", without accents)."""
    names = list(aliases) if fact is None else [value, value.lstrip("+."), _ascii_fold(value)]
    out: list[str] = []
    for name in names:
        if name and name not in out:
            out.append(name)
    return tuple(out)


def _ascii_fold(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def _need(template: Template, knowledge: str) -> str:
    if knowledge == "head":
        return "none"
    if template.named:
        return "text"
    return "both" if template.hops == 2 else "image"


def make_questions(entities: Sequence[Entity], seed: int = 0) -> list[Question]:
    """Every applicable template for every entity (a fact template only when the entity has
    that fact), each with a seeded choice of phrasing; sorted by data_id."""
    questions = []
    for ent in entities:
        for tpl in TEMPLATES:
            if ent.kind not in tpl.kinds or (tpl.fact is not None and tpl.fact not in ent.facts):
                continue
            answer = ent.name if tpl.fact is None else ent.facts[tpl.fact]
            data_id = f"mmsr_world-{tpl.id}-{ent.id}"
            text = random.Random(f"{seed}:phrase:{data_id}").choice(tpl.texts)
            questions.append(
                Question(
                    data_id=data_id,
                    question=text.format(name=ent.name) if tpl.named else text,
                    answer=answer,
                    candidates=answer_variants(tpl.fact, answer, ent.aliases),
                    question_type=tpl.id,
                    entity=ent.id,
                    knowledge=ent.knowledge,
                    search_need=_need(tpl, ent.knowledge),
                    hops=tpl.hops,
                )
            )
    return sorted(questions, key=lambda q: q.data_id)


def split_questions(
    questions: Sequence[Question], test_fraction: float, seed: int
) -> list[Question]:
    """Mark a seeded ``test_fraction`` of every (question type, knowledge) group as test, at
    least one where the group has two or more; each question lands in exactly one split."""
    from dataclasses import replace

    groups: dict[tuple[str, str], list[str]] = {}
    for q in questions:
        groups.setdefault((q.question_type, q.knowledge), []).append(q.data_id)
    test: set[str] = set()
    for (qtype, knowledge), ids in sorted(groups.items()):
        ids = sorted(ids)
        random.Random(f"{seed}:split:{qtype}:{knowledge}").shuffle(ids)
        n_test = round(test_fraction * len(ids))
        if len(ids) >= 2:
            n_test = min(max(n_test, 1), len(ids) - 1)
        test.update(ids[:n_test])
    return [replace(q, split="test" if q.data_id in test else "train") for q in questions]
