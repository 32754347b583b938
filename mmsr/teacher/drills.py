"""The teacher's drills: conversations over fresh pictures and synthetic results, not train
questions.

- ``head_drill``: a head entity in a FRESH query-style image, a random template, answered
  directly under the protocol's prompt: the "knowledge" the policy has.
- ``copy1``: a 1-hop copy drill over any entity (or the tail ones only: ``copy_entities``):
  image results of the entity among random others (the entity first with probability
  ``copy_first``, else anywhere), answer = that entity. Random lists make memorising
  impossible; the policy must copy.
- ``copy2``: a 2-hop copy drill over any entity with facts: image results as in ``copy1``, a
  text search naming the entity, then synthetic text hits in the pages' own wording whose fact
  values are drawn at random (so the value must be copied, never recalled). The named
  templates go straight to the text search. The entity's own hit opens with the asked fact
  (as a query naming it makes the index summarise it) for a ``fact_first`` share of drills,
  else the fact stands among the page's others.
- ``prime1`` / ``prime2``: the copy drills stripped to their copying: they open with the image
  results (no instructions, no images, no first turn), the entity always the first image hit,
  lists of 1 to k hits (``prime2``: the entity's text hit first with probability
  ``copy_first``). A tiny random model learns to copy in a few hundred steps of these short,
  dense conversations and not in thousands of steps of the full ones (measured; see
  ``mmsr.train.sft``), so a run starts with them.
- ``know``: ``head_drill`` without the instructions (the bare question under the image), short
  enough to be drawn in large batches: the head entities' recognition, fast.
- ``know_not``: its counterpart over the tail: a tail entity in a fresh picture under the bare
  question, and only the first move — the search. It teaches the policy which pictures it does
  NOT know, never what they are (no name, no fact). Without it, recognition is closed-set: a
  tail picture is "recognised" as the nearest head entity (measured: 234 of 242 tail questions
  answered directly named a head entity).
- ``decide`` / ``decide_full``: ``know`` and ``know_not`` drawn per conversation, so each
  batch holds both and only a decision that depends on the picture lowers its loss; under the
  bare question (short) or the protocol's prompt.
- In blind mode (``TeacherConfig.decision``) ``decide`` / ``decide_full`` draw the picture's
  class by the same coin, then the path by a second one (``search_share``): the first search,
  or the direct answer — recalled over a head picture, guessed over a tail one
  (``answer_directly``). ``know``, ``know_not`` and ``head_drill`` are refused there, and the
  copy drills picture every entity.

Each drill is a function of a ``DrawContext`` (the world, the config, the seeded stream);
``DRILLS`` is their table. Not here: the train-question kinds (``mmsr.teacher.draw``).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import replace

from mmsr.protocol import default_prompt_set
from mmsr.protocol.prompts import PromptSet
from mmsr.protocol.render import render_first_turn, render_image_results, render_text_results
from mmsr.search.local.summary import summarize
from mmsr.teacher.config import TeacherConfig
from mmsr.teacher.turns import (
    BARE_PROMPTS,
    Question,
    after_image,
    after_text,
    applicable,
    direct,
    fact_sentence,
    first_search,
    guess_entity,
    guessed_direct,
    make_question,
    search_path,
    text_query,
)
from mmsr.teacher.world_kit import WorldKit
from mmsr.types import ImageHit, TextHit, Turn
from mmsr.world.build import wiki_url
from mmsr.world.entities import Entity
from mmsr.world.questions import Template


class DrawContext:
    """What every drawer reads: the world's entities in pools, the config, one seeded stream.

    Deterministic in its seed and call order: every random choice comes from ``rng``.
    """

    def __init__(
        self, kit: WorldKit, config: TeacherConfig, seed: int, prompts: PromptSet | None
    ) -> None:
        self.kit, self.config = kit, config
        self.prompts = prompts or default_prompt_set()
        self.rng = random.Random(f"teacher:{seed}")
        self.head = [s for s in kit.train if s.extra.get("knowledge") == "head"]
        self.tail = [s for s in kit.train if s.extra.get("knowledge") == "tail"]
        self.head_entities = [e for e in kit.entities if e.knowledge == "head"]
        self.tail_entities = [e for e in kit.entities if e.knowledge == "tail"]
        self.fact_entities = [e for e in kit.entities if e.facts]
        self.copy_pool = self.tail_entities if config.copy_entities == "tail" else kit.entities
        self.copy_fact_pool = [e for e in self.copy_pool if e.facts]
        if not self.copy_pool or not self.copy_fact_pool:
            raise ValueError(f"no {config.copy_entities} entities (with facts) for the copy drills")
        self.by_kind: dict[str, list[Entity]] = {}
        for e in kit.entities:
            self.by_kind.setdefault(e.kind, []).append(e)
        pools: dict[str, set[str]] = {}
        for e in kit.entities:
            for key, value in e.facts.items():
                pools.setdefault(key, set()).add(value)
        self.pools = {k: sorted(v) for k, v in pools.items()}
        self.draws = 0
        """Conversations drawn so far (keys the fresh pictures)."""
        self.quotes = kit.fact_layout if config.value_reason == "quote" else None
        """The fact layout whose words answers read from text results quote, or None: our own
        words (``TeacherConfig.value_reason``)."""

    def fresh_question(self, entity: Entity, templates: Sequence[Template]) -> Question:
        image = self.kit.query_image(entity, f"{self.draws}:{self.rng.randrange(10**9)}")
        return make_question(entity, self.rng.choice(list(templates)), image, self.rng)

    def distractors(self, entity: Entity, n: int) -> list[Entity]:
        out: list[Entity] = []
        while len(out) < n:
            same = self.rng.random() < self.config.same_kind and len(self.by_kind[entity.kind]) > 1
            pool = self.by_kind[entity.kind] if same else self.kit.entities
            other = self.rng.choice(pool)
            if other.id != entity.id and other not in out:
                out.append(other)
        return out

    def drill_hits(self, entity: Entity) -> list[ImageHit]:
        k = self.config.image_k
        entities = self.distractors(entity, k - 1)
        at = 0 if self.rng.random() < self.config.copy_first else self.rng.randrange(k)
        entities.insert(at, entity)
        return [self.kit.thumbnail_hit(e) for e in entities]

    def random_facts(self, entity: Entity) -> dict[str, str]:
        return {key: self.rng.choice(self.pools[key]) for key in entity.facts}

    def text_hit(
        self,
        entity: Entity,
        facts: dict[str, str],
        query: str,
        question: str,
        *,
        lead: bool = True,
    ) -> TextHit:
        """A hit on ``entity``'s page for ``query``: its facts in the world's layout, and in
        ``lines`` summarised for the query as the index summarises a real page (``lead``
        False: for the entity's bare name, the asked fact among the others)."""
        text = fact_sentence(entity, facts, self.kit.fact_layout)
        if self.kit.fact_layout == "lines":
            summarised_for = query if lead else entity.name
            text = summarize(text, summarised_for, question, order=self.kit.summary_order)
        return TextHit(entity.name, wiki_url(entity.name), text)

    def fact_leads(self) -> bool:
        """Whether a copy drill's own text hit opens with the asked fact (``fact_first``; no
        draw at 1, so the default teacher's stream is unchanged)."""
        share = self.config.fact_first
        return share >= 1.0 or self.rng.random() < share


Drawer = Callable[[DrawContext], "list[Turn] | None"]
"""One conversation of a kind, or None when this draw cannot make one (the teacher redraws)."""


def answer_directly(c: DrawContext, q: Question) -> list[Turn] | None:
    """The direct answer: from knowledge over a head entity, guessed over a tail one (blind
    mode's direct path: ``turns.guess_entity``); None when there is nothing to guess from."""
    if q.entity.knowledge == "head":
        return direct(q)
    guess = guess_entity(q.entity, q.fact, c.head_entities)
    return None if guess is None else guessed_direct(q, guess)


def head_drill(c: DrawContext) -> list[Turn]:
    entity = c.rng.choice(c.head_entities)
    q = c.fresh_question(entity, applicable(entity))
    return [render_first_turn(q.text, q.image, c.prompts), *direct(q)]


def copy1(c: DrawContext) -> list[Turn]:
    entity = c.rng.choice(c.copy_pool)
    naming = [t for t in applicable(entity) if t.fact is None]
    q = c.fresh_question(entity, naming)
    return search_path(q, c.drill_hits(entity), [], c.prompts)


def copy2(c: DrawContext) -> list[Turn]:
    entity = c.rng.choice(c.copy_fact_pool)
    facts = c.random_facts(entity)
    templates = [t for t in applicable(entity) if t.fact is not None]
    q = c.fresh_question(entity, templates)
    q = replace(q, entity=replace(entity, facts=facts))
    others = [e for e in c.distractors(entity, 2 * c.config.text_k) if e.facts]
    assert q.fact is not None
    query = text_query(entity, q.fact)
    hits = [c.text_hit(e, c.random_facts(e), query, q.text) for e in others[: c.config.text_k - 1]]
    own = c.text_hit(entity, facts, query, q.text, lead=c.fact_leads())
    hits.insert(c.rng.randrange(len(hits) + 1), own)
    return search_path(q, c.drill_hits(entity), hits, c.prompts, c.quotes)


def _prime_question(c: DrawContext, entity: Entity, fact: bool) -> Question:
    templates = [t for t in applicable(entity) if (t.fact is not None) == fact]
    q = make_question(entity, c.rng.choice(templates), None, c.rng)
    return replace(q, named=False)  # a primer always shows the image results


def _primed(c: DrawContext, q: Question, text_hits: Sequence[TextHit]) -> list[Turn]:
    others = c.distractors(q.entity, c.rng.randrange(c.config.image_k))
    image_hits = [ImageHit(e.name, wiki_url(e.name)) for e in [q.entity, *others]]
    turns = [render_image_results(image_hits, q.text, BARE_PROMPTS), after_image(q)]
    if q.fact is not None:
        turns += [render_text_results(text_hits, q.text, BARE_PROMPTS), after_text(q, c.quotes)]
    return turns


def prime1(c: DrawContext) -> list[Turn]:
    entity = c.rng.choice(c.kit.entities)
    return _primed(c, _prime_question(c, entity, fact=False), [])


def prime2(c: DrawContext) -> list[Turn]:
    entity = c.rng.choice(c.fact_entities)
    facts = c.random_facts(entity)
    q = replace(_prime_question(c, entity, fact=True), entity=replace(entity, facts=facts))
    n = c.rng.randrange(c.config.text_k)
    others = [e for e in c.distractors(entity, 2 * c.config.text_k) if e.facts][:n]
    assert q.fact is not None
    query = text_query(entity, q.fact)
    hits = [c.text_hit(e, c.random_facts(e), query, q.text) for e in others]
    at = 0 if c.rng.random() < c.config.copy_first else c.rng.randrange(len(hits) + 1)
    hits.insert(at, c.text_hit(entity, facts, query, q.text, lead=c.fact_leads()))
    return _primed(c, q, hits)


def know(c: DrawContext) -> list[Turn]:
    """A head entity in a fresh query-style image, the bare question, the direct answer.

    The head drill without the protocol's instructions: ≈ 50 tokens instead of ≈ 300, so it is
    drawn in large batches and the recognition of the head entities (the vision tower learns it
    from scratch) gets many more images per minute.
    """
    entity = c.rng.choice(c.head_entities)
    q = c.fresh_question(entity, applicable(entity))
    return [render_first_turn(q.text, q.image, BARE_PROMPTS), *direct(q)]


def know_not(c: DrawContext) -> list[Turn]:
    """A tail entity in a fresh query-style image, the bare question, the first search.

    The conversation stops at the search: the drill teaches the decision on a picture the
    policy was never taught, not the results (the tail kind and the copy drills do that).
    """
    entity = c.rng.choice(c.tail_entities)
    q = c.fresh_question(entity, applicable(entity))
    return [render_first_turn(q.text, q.image, BARE_PROMPTS), first_search(q)]


def _decision(c: DrawContext, prompts: PromptSet) -> list[Turn] | None:
    tail = c.rng.random() < 0.5
    entity = c.rng.choice(c.tail_entities if tail else c.head_entities)
    q = c.fresh_question(entity, applicable(entity))
    first = render_first_turn(q.text, q.image, prompts)
    if c.config.decision == "blind":  # the path by its own coin, whatever the picture
        if c.rng.random() < c.config.search_share:
            return [first, first_search(q)]
        answered = answer_directly(c, q)
        return None if answered is None else [first, *answered]
    return [first, first_search(q)] if tail else [first, *direct(q)]


def decide(c: DrawContext) -> list[Turn] | None:
    """``know`` or ``know_not`` by a coin, drawn per conversation (short, large batches).

    A batch then holds head and tail pictures together, so the only way its loss falls is a
    decision that depends on the picture. Batches of a single kind (``know`` then
    ``know_not``) move the search prior back and forth instead (measured: 9 minutes with
    ``know_not`` weighted up turned searches on 21 % of head and 42 % of tail questions into
    86 % and 100 %).
    """
    return _decision(c, BARE_PROMPTS)


def decide_full(c: DrawContext) -> list[Turn] | None:
    """``decide`` under the protocol's own prompt, where the decision is measured (long:
    ordinary batches; a bare and a full prompt in one batch would pad the bare ones 5x)."""
    return _decision(c, c.prompts)


DRILLS: dict[str, Drawer] = {
    "head_drill": head_drill,
    "copy1": copy1,
    "copy2": copy2,
    "prime1": prime1,
    "prime2": prime2,
    "know": know,
    "know_not": know_not,
    "decide": decide,
    "decide_full": decide_full,
}
