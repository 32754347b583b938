"""The teacher's assistant turns and the questions they answer: pure functions, no state.

How the warm start speaks: a direct answer names what the image shows, then the
fact; a search opens with the protocol's action; after results it names what they show and
copies the answer from them. Shared by the train-question kinds (``mmsr.teacher.draw``) and
the drills (``mmsr.teacher.drills``). Not here: drawing questions or hits.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mmsr.data import open_image
from mmsr.protocol import IMAGE_PLACEHOLDER
from mmsr.protocol.prompts import QUESTION_SLOT, PromptSet
from mmsr.protocol.render import render_first_turn, render_image_results, render_text_results
from mmsr.types import ImageHit, Role, Sample, TextHit, Turn
from mmsr.world.build import FACT_WORDS, FLAG_FACT_PHRASES, fact_lines_text, flag_facts_text
from mmsr.world.entities import Entity
from mmsr.world.questions import TEMPLATES, Template

LIVING_FACTS: tuple[str, ...] = ("genus", "family", "order")

# The primers' prompt texts: nothing but the results and the question.
BARE_PROMPTS = PromptSet(
    first_turn=f"{IMAGE_PLACEHOLDER}Question: {QUESTION_SLOT}",
    after_image_search="",
    after_text_search="",
    search_failed="",
    name="bare",
)

UNKNOWN_THING = "nothing I know"
"""What an unknown picture "shows": it fills the slot a known entity's name fills in a direct
answer ("The image shows <name>."), so the search decision is taken at the token where the
policy recognises the picture — one more class beside the head entities' names — not at the
reply's first word, where nothing has been recognised yet."""
UNKNOWN_IMAGE = f"The image shows {UNKNOWN_THING}, so I search with it."
SEARCH_IMAGE = f"<reason>{UNKNOWN_IMAGE}</reason><search><img></search>"


def say(reason: str, action: str) -> Turn:
    return Turn(Role.ASSISTANT, f"<reason>{reason}</reason>{action}")


def answer(value: str) -> str:
    return f"<answer>{value}</answer>"


def query_action(query: str) -> str:
    return f"<text_search>{query}</text_search>"


def text_query(entity: Entity, fact: str) -> str:
    return f"{entity.name} {FACT_WORDS[fact]}"


@dataclass(frozen=True)
class Question:
    """A question of a teacher conversation: its entity, fact (None: the name), text, image."""

    entity: Entity
    fact: str | None
    named: bool
    text: str
    image: Any

    @property
    def value(self) -> str:
        return self.entity.name if self.fact is None else self.entity.facts[self.fact]


def sample_question(sample: Sample, entities: Mapping[str, Entity]) -> Question:
    """The ``Question`` of a world question row (its entity looked up in ``entities`` by id)."""
    entity = entities[str(sample.extra["entity"])]
    template = next(t for t in TEMPLATES if t.id == sample.extra["question_type"])
    assert sample.image is not None, f"{sample.id} has no image"
    return Question(
        entity, template.fact, template.named, sample.question, open_image(sample.image)
    )


def direct(q: Question) -> list[Turn]:
    """Answer from the policy's own knowledge: recognise, then recall the fact."""
    return _direct_reply(q, q.entity.name, q.value)


def guess_entity(
    entity: Entity, fact: str | None, head_entities: Sequence[Entity]
) -> Entity | None:
    """The head entity an untrained model takes ``entity``'s picture for: one of its kind with
    ``fact`` (any of its kind for a naming question; of any kind with ``fact`` when its kind
    has none), the same one in every process (seeded by the entity's id). None: no head entity
    has ``fact``."""
    known = [e for e in head_entities if e.id != entity.id and (fact is None or fact in e.facts)]
    pool = [e for e in known if e.kind == entity.kind] or known
    if not pool:
        return None
    return random.Random(f"guess:{entity.id}").choice(sorted(pool, key=lambda e: e.id))


def guessed_direct(q: Question, guess: Entity) -> list[Turn]:
    """A direct answer without the knowledge (blind mode's direct path on a tail picture): the
    picture named as ``guess``, the fact ``guess``'s. A question whose text names its entity
    keeps that name ("This is X."): the text says it, only the value is guessed."""
    value = guess.name if q.fact is None else guess.facts[q.fact]
    return _direct_reply(q, q.entity.name if q.named else guess.name, value)


def _direct_reply(q: Question, name: str, value: str) -> list[Turn]:
    if q.fact is None:
        reason = f"The image shows {name}."
    else:
        seen = f"This is {name}." if q.named else f"The image shows {name}."
        reason = f"{seen} Its {FACT_WORDS[q.fact]} is {value}."
    return [say(reason, answer(value))]


def after_image(q: Question) -> Turn:
    """The turn after image results that contain the entity."""
    name = q.entity.name
    if q.fact is None:
        return say(f"The results show {name}.", answer(name))
    need = f"The results show {name}. I need its {FACT_WORDS[q.fact]}."
    return say(need, f"<text_search>{text_query(q.entity, q.fact)}</text_search>")


def after_text(q: Question, quote: str | None = None) -> Turn:
    """The answer read from text results: in our words ("the capital of X is Y"), or with
    ``quote`` (the world's fact layout, ``BuildConfig.fact_layout``) in the page's own words,
    its key right before the value ("X: capital city Y", "X capital: Y"), so that the value is
    found where the same key stands in the hits."""
    assert q.fact is not None
    if quote == "lines":
        return say(
            f"The results say {fact_lines_text(q.entity.name, {q.fact: q.value})}", answer(q.value)
        )
    if quote:
        return say(f"The results say {q.entity.name}: {page_phrase(q)}.", answer(q.value))
    word = FACT_WORDS[q.fact]
    return say(f"The results say the {word} of {q.entity.name} is {q.value}.", answer(q.value))


def page_phrase(q: Question) -> str:
    """How the world's pages state ``q``'s fact: ``"international calling code +1441"``,
    ``"the family Leporidae"``."""
    assert q.fact is not None
    phrases = dict(FLAG_FACT_PHRASES)
    if q.entity.kind == "flag" and q.fact in phrases:
        return phrases[q.fact].format(q.value)
    return f"the {q.fact} {q.value}"


def first_search(q: Question) -> Turn:
    """The opening search: on the image, or for a question that names its entity a text
    search for the fact."""
    if not q.named:
        return Turn(Role.ASSISTANT, SEARCH_IMAGE)
    assert q.fact is not None
    reason = f"I do not know the {FACT_WORDS[q.fact]} of {q.entity.name}, so I search for it."
    return say(reason, query_action(text_query(q.entity, q.fact)))


def search_path(
    q: Question,
    image_hits: Sequence[ImageHit],
    text_hits: Sequence[TextHit],
    prompts: PromptSet,
    quote: str | None = None,
) -> list[Turn]:
    """image search → (text search) → answer; a named question skips the image search."""
    turns = [render_first_turn(q.text, q.image, prompts), first_search(q)]
    if not q.named:
        turns += [render_image_results(image_hits, q.text, prompts), after_image(q)]
    if q.fact is not None:
        turns += [render_text_results(text_hits, q.text, prompts), after_text(q, quote)]
    return turns


def with_entity(hits: Sequence[ImageHit], own: ImageHit, rng: random.Random) -> list[ImageHit]:
    """``hits`` if they hold ``own``'s title, else ``hits`` with a random one replaced by it."""
    out = list(hits)
    if any(h.title == own.title for h in out):
        return out
    if not out:
        return [own]
    out[rng.randrange(len(out))] = own
    return out


def applicable(entity: Entity) -> list[Template]:
    return [
        t
        for t in TEMPLATES
        if entity.kind in t.kinds and (t.fact is None or t.fact in entity.facts)
    ]


def make_question(entity: Entity, template: Template, image: Any, rng: random.Random) -> Question:
    text = rng.choice(template.texts)
    if template.named:
        text = text.format(name=entity.name)
    return Question(entity, template.fact, template.named, text, image)


def fact_sentence(entity: Entity, facts: dict[str, str], layout: str = "brief") -> str:
    """``facts`` of ``entity`` in the world pages' own wording (``BuildConfig.fact_layout``):
    one sentence, or with ``lines`` one sentence a fact."""
    if layout == "lines":
        return fact_lines_text(entity.name, facts)
    if entity.kind == "flag":
        return flag_facts_text(entity.name, facts)
    parts = [f"the {key} {facts[key]}" for key in LIVING_FACTS if key in facts]
    return f"{entity.name} belongs to " + ", ".join(parts) + "."
