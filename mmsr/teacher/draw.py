"""Teacher conversations for the SFT warm start, rendered with the real protocol.

A ``Teacher`` draws a conversation (a list of ``Turn``: user turns from
``mmsr.protocol.render``, assistant turns from ``mmsr.teacher.turns``) of a kind picked by the
mixture ``TeacherConfig.weights``; ``DRAWERS`` is the table of kinds. The drills (fresh
pictures, synthetic results) are in ``mmsr.teacher.drills``; here are the kinds over the world's
train questions:

- ``head``: a train question about a head entity. Answered directly (``<reason>`` names the
  entity, then the fact) with probability ``head_direct``, else by the search path below — the
  warm start leans towards searching, as a RAG-trained model does, so RL has searches to remove.
- ``tail``: a train question about a tail entity: image search (the REAL hits of the local
  index for the question's image) → for two hops a text search whose query names the entity
  (REAL text hits) → the answer. When the index missed the entity in its top k, its own hit
  replaces a seeded random one of the k (the teacher must point at the right page). A two-hop
  question whose real text hits do not contain the value is skipped (the teacher never answers
  what it cannot read).
- ``head_answers = "recall"``: a head question that searched (``head``, ``rag``) ends in the
  direct answer's own words — the results never change what the policy knows; ``copy`` (the
  default) reads the value from the hits as for a tail question.
- ``rag`` / ``direct``: train questions in the evaluation methods' own formats
  (``mmsr.protocol.method_turns``, which the evaluation renders with too), so those baselines
  measure what the warm start knows rather than whether a tiny model can read a prompt it
  never saw. ``rag``: the prefetched image results, a text query naming the entity (the name
  itself for a naming question), its real text hits, the answer; ``direct``: a head question
  answered from knowledge (the teacher has no answer to a tail question without search, so
  none is drawn). ``oracle`` is a reading drill in a one-turn format of its own
  (``prompts/oracle/``, which no evaluation method shows): the searches the question's
  ``search_need`` label asks for, made for it (the text query the entity's name), then the
  answer.

Blind mode (``TeacherConfig.decision = "blind"``): the path no longer follows the picture's
knowledge class, so that RL must learn the decision from reward alone. ``head`` and ``tail``
search with probability ``search_share`` either way, else answer directly; a tail question's
direct answer is a guess, as an untrained model's — a head entity of its kind, its value
(``mmsr.teacher.turns.guess_entity``) — and so wrong: reward teaches searching on tail
pictures. A head question that searched is right but pays the search penalty: reward teaches
answering head pictures directly. ``direct`` (head-only by definition) is refused there.

Not here: tokenisation and training (``mmsr.train.sft``).
"""

from __future__ import annotations

import random
from typing import Any

from mmsr.protocol.method_turns import (
    direct_first_turn,
    image_section,
    method_prompt_set,
    prefetched_first_turn,
    text_section,
)
from mmsr.protocol.prompts import PromptSet
from mmsr.protocol.render import render_first_turn, render_text_results
from mmsr.teacher.config import (
    COPY_ENTITIES,
    KINDS,
    PRIMER_KINDS,
    SHORT_KINDS,
    KindWeights,
    TeacherConfig,
    parse_weights,
)
from mmsr.teacher.drills import DRILLS, DrawContext, Drawer, answer_directly
from mmsr.teacher.turns import (
    Question,
    after_image,
    after_text,
    answer,
    direct,
    query_action,
    sample_question,
    say,
    search_path,
    text_query,
    with_entity,
)
from mmsr.teacher.world_kit import WorldKit
from mmsr.types import ImageHit, Sample, TextHit, Turn

__all__ = [
    "COPY_ENTITIES",
    "DRAWERS",
    "KINDS",
    "PRIMER_KINDS",
    "SHORT_KINDS",
    "KindWeights",
    "Teacher",
    "TeacherConfig",
    "parse_weights",
]


def _sample_question(c: DrawContext, sample: Sample) -> Question:
    return sample_question(sample, c.kit.by_id)


def _real_hits(c: DrawContext, sample: Sample, q: Question) -> list[ImageHit]:
    """The index's real image hits for a train question, with its entity among them."""
    real = c.kit.image_hits(sample, q.image, c.config.image_k)
    own = c.kit.thumbnail_hit(q.entity)
    seeded = random.Random(f"{sample.id}:place")  # the same placement every epoch
    return with_entity(real, own, seeded)


def _readable_text_hits(c: DrawContext, q: Question, query: str) -> list[TextHit] | None:
    """Real text hits for ``query``; None when a fact question's value is not in them."""
    hits = c.kit.text_hits(query, q.text, c.config.text_k)
    if q.fact is not None and not any(q.value in h.summary for h in hits):
        return None
    return hits


def _recalls(c: DrawContext, q: Question) -> bool:
    """Whether a searched question ends in the direct answer's words (``head_answers``)."""
    return c.config.head_answers == "recall" and q.entity.knowledge == "head"


def _searched(c: DrawContext, sample: Sample, q: Question) -> list[Turn] | None:
    image_hits = [] if q.named else _real_hits(c, sample, q)
    text_hits: list[TextHit] = []
    if q.fact is not None:
        found = _readable_text_hits(c, q, text_query(q.entity, q.fact))
        if found is None:
            return None
        text_hits = found
    turns = search_path(q, image_hits, text_hits, c.prompts, c.quotes)
    if _recalls(c, q):
        turns[-1] = direct(q)[0]
    return turns


def head(c: DrawContext) -> list[Turn] | None:
    sample = c.rng.choice(c.head)
    q = _sample_question(c, sample)
    blind = c.config.decision == "blind"
    answered = 1.0 - c.config.search_share if blind else c.config.head_direct
    if c.rng.random() < answered:
        return [render_first_turn(q.text, q.image, c.prompts), *direct(q)]
    return _searched(c, sample, q)


def tail(c: DrawContext) -> list[Turn] | None:
    sample = c.rng.choice(c.tail)
    q = _sample_question(c, sample)
    if c.config.decision == "blind" and c.rng.random() >= c.config.search_share:
        guessed = answer_directly(c, q)  # blind: a guess, as an untrained model's
        if guessed is None:
            return None
        return [render_first_turn(q.text, q.image, c.prompts), *guessed]
    return _searched(c, sample, q)


def rag(c: DrawContext) -> list[Turn] | None:
    sample = c.rng.choice(c.kit.train)
    q = _sample_question(c, sample)
    query = q.entity.name if q.fact is None else text_query(q.entity, q.fact)
    text_hits = _readable_text_hits(c, q, query)
    if text_hits is None:
        return None
    section, thumbs = image_section(_real_hits(c, sample, q))
    first = prefetched_first_turn("rag", q.text, q.image, [section], thumbs)
    name = q.entity.name
    if q.fact is None:
        ask = say(f"The results show {name}. I search for it to be sure.", query_action(query))
        last = say(f"The results confirm {name}.", answer(name))
    else:
        ask, last = after_image(q), after_text(q, c.quotes)
    follow = render_text_results(text_hits, q.text, method_prompt_set("rag"))
    if _recalls(c, q):
        last = direct(q)[0]
    return [first, ask, follow, last]


def oracle(c: DrawContext) -> list[Turn] | None:
    sample = c.rng.choice(c.kit.train)
    q = _sample_question(c, sample)
    need = str(sample.extra.get("search_need"))
    if need == "none":
        return [direct_first_turn(q.text, q.image), *direct(q)]
    sections: list[str] = []
    thumbs: list[Any] = []
    if need in ("image", "both"):
        section, thumbs = image_section(_real_hits(c, sample, q))
        sections.append(section)
    if need in ("text", "both"):
        text_hits = _readable_text_hits(c, q, q.entity.name)
        if text_hits is None:
            return None
        sections.append(text_section(q.entity.name, text_hits))
    first = prefetched_first_turn("oracle", q.text, q.image, sections, thumbs)
    if q.fact is None:
        return [first, say(f"The results show {q.entity.name}.", answer(q.entity.name))]
    return [first, after_text(q, c.quotes)]


def direct_method(c: DrawContext) -> list[Turn]:
    q = _sample_question(c, c.rng.choice(c.head))
    return [direct_first_turn(q.text, q.image), *direct(q)]


QUESTION_KINDS: dict[str, Drawer] = {
    "head": head,
    "tail": tail,
    "rag": rag,
    "oracle": oracle,
    "direct": direct_method,
}
_ALL_KINDS: dict[str, Drawer] = {**QUESTION_KINDS, **DRILLS}
if set(_ALL_KINDS) != set(KINDS):  # a kind added on one side only
    raise ImportError(f"teacher kinds {sorted(_ALL_KINDS)} != {KINDS}")
DRAWERS: dict[str, Drawer] = {kind: _ALL_KINDS[kind] for kind in KINDS}
"""Every kind's drawer, in ``KINDS`` order."""


class Teacher:
    """Draws teacher conversations of each kind; deterministic in its seed and call order."""

    def __init__(
        self,
        kit: WorldKit,
        config: TeacherConfig | None = None,
        *,
        seed: int = 0,
        prompts: PromptSet | None = None,
    ) -> None:
        self.config = config or TeacherConfig()
        self.context = DrawContext(kit, self.config, seed, prompts)
        self.skipped = 0
        """Draws that could not make a conversation and were drawn again."""

    def kind(self) -> str:
        return self.context.rng.choices(KINDS, weights=self.config.weights.as_tuple())[0]

    def primer_kind(self, progress: float) -> str:
        """``prime1`` over the first half of the primer steps (``progress`` < 0.5), then both.

        Copying sets in on the 1-hop primer alone after ≈ 250 steps of 32 and later when the
        longer 2-hop primer is mixed in from the start.
        """
        return "prime1" if progress < 0.5 else self.context.rng.choice(PRIMER_KINDS)

    def draw(self, kind: str) -> list[Turn]:
        """One conversation of ``kind`` (see ``KINDS``)."""
        if kind not in DRAWERS:
            raise ValueError(f"unknown teacher kind {kind!r}; known: {', '.join(KINDS)}")
        self.context.draws += 1
        for _ in range(100):
            turns = DRAWERS[kind](self.context)
            if turns is not None:
                return list(turns)
            self.skipped += 1
        raise RuntimeError(f"the teacher could not draw a {kind!r} conversation")
