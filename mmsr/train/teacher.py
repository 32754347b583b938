"""Teacher conversations for the SFT warm start (DESIGN §5), rendered with the real protocol.

Five kinds, each a list of ``Turn`` (user turns from ``mmsr.protocol.render``, assistant turns
written here), drawn by a seeded ``Teacher``:

- ``head``: a train question about a head entity. Answered directly (``<reason>`` names the
  entity, then the fact) with probability ``head_direct``, else by the search path below — the
  warm start leans towards searching, as a RAG-trained model does, so RL has searches to remove.
- ``tail``: a train question about a tail entity: image search (the REAL hits of the local
  index for the question's image) → for two hops a text search whose query names the entity
  (REAL text hits) → the answer. When the index missed the entity in its top k, its own hit
  replaces a seeded random one of the k (the teacher must point at the right page). A two-hop
  question whose real text hits do not contain the value is skipped (the teacher never answers
  what it cannot read).
- ``head_drill``: a head entity in a FRESH query-style image, a random template, answered
  directly: the "knowledge" the policy has (recognition in the query style, and the facts).
- ``copy1``: a 1-hop copy drill over any entity (or the tail ones only: ``copy_entities``):
  image results of the entity among random others (the entity first with probability
  ``copy_first``, else anywhere), answer = that entity. Random lists make memorising
  impossible; the policy must copy.
- ``copy2``: a 2-hop copy drill over any entity with facts: image results as in ``copy1``, a
  text search naming the entity, then synthetic text hits in the pages' own wording whose fact
  values are drawn at random (so the value must be copied, never recalled). The named
  templates go straight to the text search.
- ``prime1`` / ``prime2``: the copy drills stripped to their copying: they open with the
  image results (no instructions, no images, no first turn), the entity always the first
  image hit, lists of 1 to k hits (``prime2``: the entity's text hit first with probability
  ``copy_first``). A tiny random model learns to copy in a few
  hundred steps of these short, dense conversations and not in thousands of steps of the full
  ones (measured; see ``mmsr.train.sft``), so a run starts with them.
- ``know``: ``head_drill`` without the instructions (the bare question under the image), short
  enough to be drawn in large batches: the head entities' recognition, fast.
- ``know_not``: its counterpart over the tail: a tail entity in a fresh query-style image under
  the bare question, and only the first move — the search (an image search; a text search for
  a question that names the entity). It teaches the policy which pictures it does NOT know,
  never what they are (no name, no fact). Without it, recognition is closed-set: a tail
  picture is "recognised" as the nearest head entity (measured: 234 of 242 tail questions
  answered directly named a head entity).
- ``rag`` / ``oracle`` / ``direct``: train questions in the evaluation methods' own formats
  (``mmsr.eval.methods``), so those baselines measure what the warm start knows rather than
  whether a tiny model can read a prompt it never saw. ``rag``: the prefetched image results,
  a text query naming the entity (the name itself for a naming question), its real text hits,
  the answer; ``oracle``: the searches the question's ``search_need`` labels made for it, the
  answer; ``direct``: a head question answered from knowledge (the teacher has no answer to a
  tail question without search, so none is drawn).

Not here: tokenisation and training (``mmsr.train.sft``).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from mmsr.data import open_image
from mmsr.eval.methods import (
    direct_first_turn,
    image_section,
    method_prompt_set,
    prefetched_first_turn,
    text_section,
)
from mmsr.protocol import IMAGE_PLACEHOLDER, default_prompt_set
from mmsr.protocol.prompts import QUESTION_SLOT, PromptSet
from mmsr.protocol.render import render_first_turn, render_image_results, render_text_results
from mmsr.train.world_kit import WorldKit
from mmsr.types import ImageHit, Role, Sample, TextHit, Turn
from mmsr.world.build import wiki_url
from mmsr.world.entities import Entity
from mmsr.world.questions import TEMPLATES, Template

KINDS: tuple[str, ...] = (
    "head",
    "tail",
    "head_drill",
    "copy1",
    "copy2",
    "prime1",
    "prime2",
    "rag",
    "oracle",
    "direct",
    "know",
    "know_not",
)
PRIMER_KINDS: tuple[str, ...] = ("prime1", "prime2")
SHORT_KINDS: tuple[str, ...] = (*PRIMER_KINDS, "know", "know_not")
"""Kinds short enough to be drawn in batches of ``SFTConfig.primer_batch_size``."""

# How a fact is named in a reason and in a text-search query.
FACT_WORDS: dict[str, str] = {
    "capital": "capital",
    "currency": "currency",
    "demonym": "demonym",
    "subregion": "subregion",
    "calling_code": "calling code",
    "tld": "internet domain",
    "genus": "genus",
    "family": "family",
    "order": "order",
}
# The page wording of each country fact (as ``mmsr.world.build.page_text`` writes it).
FLAG_FACT_PHRASES: tuple[tuple[str, str], ...] = (
    ("capital", "capital city {}"),
    ("currency", "currency code {}"),
    ("demonym", "its people are called {}"),
    ("subregion", "it lies in {}"),
    ("calling_code", "international calling code {}"),
    ("tld", "internet domain {}"),
)
LIVING_FACTS: tuple[str, ...] = ("genus", "family", "order")

# The primers' prompt texts: nothing but the results and the question.
BARE_PROMPTS = PromptSet(
    first_turn=f"{IMAGE_PLACEHOLDER}Question: {QUESTION_SLOT}",
    after_image_search="",
    after_text_search="",
    search_failed="",
    name="bare",
)

UNKNOWN_IMAGE = "I cannot tell what the image shows, so I search with it."
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


def direct(q: Question) -> list[Turn]:
    """Answer from the policy's own knowledge: recognise, then recall the fact."""
    name, value = q.entity.name, q.value
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


def after_text(q: Question) -> Turn:
    assert q.fact is not None
    word = FACT_WORDS[q.fact]
    return say(f"The results say the {word} of {q.entity.name} is {q.value}.", answer(q.value))


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
) -> list[Turn]:
    """image search → (text search) → answer; a named question skips the image search."""
    turns = [render_first_turn(q.text, q.image, prompts), first_search(q)]
    if not q.named:
        turns += [render_image_results(image_hits, q.text, prompts), after_image(q)]
    if q.fact is not None:
        turns += [render_text_results(text_hits, q.text, prompts), after_text(q)]
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


def fact_sentence(entity: Entity, facts: dict[str, str]) -> str:
    """One page sentence stating ``facts`` of ``entity`` in the world pages' own wording."""
    if entity.kind == "flag":
        parts = [phrase.format(facts[key]) for key, phrase in FLAG_FACT_PHRASES if key in facts]
        return f"{entity.name} in brief: " + "; ".join(parts) + "."
    parts = [f"the {key} {facts[key]}" for key in LIVING_FACTS if key in facts]
    return f"{entity.name} belongs to " + ", ".join(parts) + "."


COPY_ENTITIES = ("all", "tail")


@dataclass(frozen=True)
class TeacherConfig:
    """How the teacher mixes and shapes its conversations."""

    weights: tuple[float, ...] = (0.15, 0.2, 0.15, 0.15, 0.15, 0.1, 0.1, 0.0, 0.0, 0.0, 0.0, 0.0)
    """Sampling weights of the kinds, in ``KINDS`` order."""
    head_direct: float = 0.5
    """Share of head train questions answered directly (the rest go the search path)."""
    copy_first: float = 0.6
    """Share of copy drills whose entity is the first image hit (real hits put it first most)."""
    image_k: int = 5
    """Image hits per result list (the rollout engine's default)."""
    text_k: int = 5
    """Text hits per result list (the rollout engine's default)."""
    same_kind: float = 0.6
    """Share of a drill's distractor hits drawn from the entity's own kind (as real hits are)."""
    copy_entities: str = "all"
    """Entities the copy drills picture: ``all``, or ``tail`` only. A copy drill opens with an
    image search on the entity's picture, so over a head entity it also teaches "search on a
    picture you know" — ``tail`` keeps the search decision on head pictures to the ``head``
    kind's ``head_direct`` share (the copying itself is the same over any entity)."""

    def __post_init__(self) -> None:
        if len(self.weights) != len(KINDS) or min(self.weights) < 0 or sum(self.weights) <= 0:
            raise ValueError(f"weights must be {len(KINDS)} non-negative numbers, not all 0")
        if self.copy_entities not in COPY_ENTITIES:
            raise ValueError(
                f"copy_entities must be one of {', '.join(COPY_ENTITIES)}, "
                f"not {self.copy_entities!r}"
            )


def parse_weights(text: str) -> tuple[float, ...]:
    """``"know=0.4,tail=0.2"`` (kinds not named get 0) or one number per kind in ``KINDS`` order."""
    parts = [p.strip() for p in text.split(",") if p.strip()]
    try:
        if all("=" in p for p in parts):
            named = {k.strip(): float(v) for k, v in (p.split("=", 1) for p in parts)}
            unknown = sorted(set(named) - set(KINDS))
            if unknown:
                raise ValueError(f"unknown teacher kinds {unknown}; known: {', '.join(KINDS)}")
            weights = tuple(named.get(k, 0.0) for k in KINDS)
        elif len(parts) == len(KINDS):
            weights = tuple(float(p) for p in parts)
        else:
            raise ValueError(f"give name=weight pairs or {len(KINDS)} numbers ({', '.join(KINDS)})")
    except ValueError as err:
        raise ValueError(f"teacher weights {text!r}: {err}") from None
    TeacherConfig(weights=weights)  # validates
    return weights


class Teacher:
    """Draws teacher conversations of each kind; deterministic in its seed and call order."""

    def __init__(
        self,
        kit: WorldKit,
        config: TeacherConfig = TeacherConfig(),
        *,
        seed: int = 0,
        prompts: PromptSet | None = None,
    ) -> None:
        self.kit, self.config = kit, config
        self.prompts = prompts or default_prompt_set()
        self.rng = random.Random(f"teacher:{seed}")
        self.head = [s for s in kit.train if s.extra.get("knowledge") == "head"]
        self.tail = [s for s in kit.train if s.extra.get("knowledge") == "tail"]
        self.by_id = kit.by_id
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
        self.pools: dict[str, list[str]] = {}
        for e in kit.entities:
            for key, value in e.facts.items():
                self.pools.setdefault(key, []).append(value)
        self.pools = {k: sorted(set(v)) for k, v in self.pools.items()}
        self.skipped = 0
        self._draws = 0

    def kind(self) -> str:
        return self.rng.choices(KINDS, weights=self.config.weights)[0]

    def primer_kind(self, progress: float) -> str:
        """``prime1`` over the first half of the primer steps (``progress`` < 0.5), then both.

        Copying sets in on the 1-hop primer alone after ≈ 250 steps of 32 and later when the
        longer 2-hop primer is mixed in from the start.
        """
        return "prime1" if progress < 0.5 else self.rng.choice(PRIMER_KINDS)

    def draw(self, kind: str) -> list[Turn]:
        """One conversation of ``kind`` (see ``KINDS``)."""
        self._draws += 1
        for _ in range(100):
            turns = getattr(self, f"_{kind}")()
            if turns is not None:
                return list(turns)
            self.skipped += 1
        raise RuntimeError(f"the teacher could not draw a {kind!r} conversation")

    # --- train questions ---

    def _sample_question(self, sample: Sample) -> Question:
        entity = self.by_id[str(sample.extra["entity"])]
        template = next(t for t in TEMPLATES if t.id == sample.extra["question_type"])
        assert sample.image is not None, f"{sample.id} has no image"
        return Question(
            entity, template.fact, template.named, sample.question, open_image(sample.image)
        )

    def _real_hits(self, sample: Sample, q: Question) -> list[ImageHit]:
        """The index's real image hits for a train question, with its entity among them."""
        real = self.kit.image_hits(sample, q.image, self.config.image_k)
        own = self.kit.thumbnail_hit(q.entity)
        seeded = random.Random(f"{sample.id}:place")  # the same placement every epoch
        return with_entity(real, own, seeded)

    def _readable_text_hits(self, q: Question, query: str) -> list[TextHit] | None:
        """Real text hits for ``query``; None when a fact question's value is not in them."""
        hits = self.kit.text_hits(query, q.text, self.config.text_k)
        if q.fact is not None and not any(q.value in h.summary for h in hits):
            return None
        return hits

    def _searched(self, sample: Sample, q: Question) -> list[Turn] | None:
        image_hits = [] if q.named else self._real_hits(sample, q)
        text_hits: list[TextHit] = []
        if q.fact is not None:
            found = self._readable_text_hits(q, text_query(q.entity, q.fact))
            if found is None:
                return None
            text_hits = found
        return search_path(q, image_hits, text_hits, self.prompts)

    def _head(self) -> list[Turn] | None:
        sample = self.rng.choice(self.head)
        q = self._sample_question(sample)
        if self.rng.random() < self.config.head_direct:
            return [render_first_turn(q.text, q.image, self.prompts), *direct(q)]
        return self._searched(sample, q)

    def _tail(self) -> list[Turn] | None:
        sample = self.rng.choice(self.tail)
        return self._searched(sample, self._sample_question(sample))

    # --- drills ---

    def _fresh_question(self, entity: Entity, templates: Sequence[Template]) -> Question:
        image = self.kit.query_image(entity, f"{self._draws}:{self.rng.randrange(10**9)}")
        return make_question(entity, self.rng.choice(list(templates)), image, self.rng)

    def _head_drill(self) -> list[Turn]:
        entity = self.rng.choice(self.head_entities)
        q = self._fresh_question(entity, applicable(entity))
        return [render_first_turn(q.text, q.image, self.prompts), *direct(q)]

    def _distractors(self, entity: Entity, n: int) -> list[Entity]:
        out: list[Entity] = []
        while len(out) < n:
            same = self.rng.random() < self.config.same_kind and len(self.by_kind[entity.kind]) > 1
            pool = self.by_kind[entity.kind] if same else self.kit.entities
            other = self.rng.choice(pool)
            if other.id != entity.id and other not in out:
                out.append(other)
        return out

    def _drill_hits(self, entity: Entity) -> list[ImageHit]:
        k = self.config.image_k
        entities = self._distractors(entity, k - 1)
        at = 0 if self.rng.random() < self.config.copy_first else self.rng.randrange(k)
        entities.insert(at, entity)
        return [self.kit.thumbnail_hit(e) for e in entities]

    def _copy1(self) -> list[Turn]:
        entity = self.rng.choice(self.copy_pool)
        naming = [t for t in applicable(entity) if t.fact is None]
        q = self._fresh_question(entity, naming)
        return search_path(q, self._drill_hits(entity), [], self.prompts)

    def _random_facts(self, entity: Entity) -> dict[str, str]:
        return {key: self.rng.choice(self.pools[key]) for key in entity.facts}

    def _text_hit(self, entity: Entity, facts: dict[str, str]) -> TextHit:
        summary = fact_sentence(entity, facts)
        return TextHit(entity.name, wiki_url(entity.name), summary)

    def _copy2(self) -> list[Turn]:
        entity = self.rng.choice(self.copy_fact_pool)
        facts = self._random_facts(entity)
        templates = [t for t in applicable(entity) if t.fact is not None]
        q = self._fresh_question(entity, templates)
        q = replace(q, entity=replace(entity, facts=facts))
        others = [e for e in self._distractors(entity, 2 * self.config.text_k) if e.facts]
        hits = [self._text_hit(e, self._random_facts(e)) for e in others[: self.config.text_k - 1]]
        hits.insert(self.rng.randrange(len(hits) + 1), self._text_hit(entity, facts))
        return search_path(q, self._drill_hits(entity), hits, self.prompts)

    # --- primers ---

    def _prime_question(self, entity: Entity, fact: bool) -> Question:
        templates = [t for t in applicable(entity) if (t.fact is not None) == fact]
        q = make_question(entity, self.rng.choice(templates), None, self.rng)
        return replace(q, named=False)  # a primer always shows the image results

    def _prime_image_hits(self, entity: Entity) -> list[ImageHit]:
        others = self._distractors(entity, self.rng.randrange(self.config.image_k))
        return [ImageHit(e.name, wiki_url(e.name)) for e in [entity, *others]]

    def _primed(self, q: Question, text_hits: Sequence[TextHit]) -> list[Turn]:
        turns = [
            render_image_results(self._prime_image_hits(q.entity), q.text, BARE_PROMPTS),
            after_image(q),
        ]
        if q.fact is not None:
            turns += [render_text_results(text_hits, q.text, BARE_PROMPTS), after_text(q)]
        return turns

    def _prime1(self) -> list[Turn]:
        entity = self.rng.choice(self.kit.entities)
        return self._primed(self._prime_question(entity, fact=False), [])

    def _prime2(self) -> list[Turn]:
        entity = self.rng.choice(self.fact_entities)
        facts = self._random_facts(entity)
        q = replace(self._prime_question(entity, fact=True), entity=replace(entity, facts=facts))
        n = self.rng.randrange(self.config.text_k)
        others = [e for e in self._distractors(entity, 2 * self.config.text_k) if e.facts][:n]
        hits = [self._text_hit(e, self._random_facts(e)) for e in others]
        at = 0 if self.rng.random() < self.config.copy_first else self.rng.randrange(len(hits) + 1)
        hits.insert(at, self._text_hit(entity, facts))
        return self._primed(q, hits)

    # --- the evaluation methods' formats ---

    def _rag(self) -> list[Turn] | None:
        sample = self.rng.choice(self.kit.train)
        q = self._sample_question(sample)
        query = q.entity.name if q.fact is None else text_query(q.entity, q.fact)
        text_hits = self._readable_text_hits(q, query)
        if text_hits is None:
            return None
        section, thumbs = image_section(self._real_hits(sample, q))
        first = prefetched_first_turn("rag", q.text, q.image, [section], thumbs)
        name = q.entity.name
        if q.fact is None:
            ask = say(f"The results show {name}. I search for it to be sure.", query_action(query))
            last = say(f"The results confirm {name}.", answer(name))
        else:
            ask, last = after_image(q), after_text(q)
        follow = render_text_results(text_hits, q.text, method_prompt_set("rag"))
        return [first, ask, follow, last]

    def _oracle(self) -> list[Turn] | None:
        sample = self.rng.choice(self.kit.train)
        q = self._sample_question(sample)
        need = str(sample.extra.get("search_need"))
        if need == "none":
            return [direct_first_turn(q.text, q.image), *direct(q)]
        sections: list[str] = []
        thumbs: list[Any] = []
        if need in ("image", "both"):
            section, thumbs = image_section(self._real_hits(sample, q))
            sections.append(section)
        if need in ("text", "both"):
            text_hits = self._readable_text_hits(q, q.entity.name)
            if text_hits is None:
                return None
            sections.append(text_section(q.entity.name, text_hits))
        first = prefetched_first_turn("oracle", q.text, q.image, sections, thumbs)
        if q.fact is None:
            return [first, say(f"The results show {q.entity.name}.", answer(q.entity.name))]
        return [first, after_text(q)]

    def _know(self) -> list[Turn]:
        """A head entity in a fresh query-style image, the bare question, the direct answer.

        The head drill without the protocol's instructions: ≈ 50 tokens instead of ≈ 300, so
        it is drawn in large batches and the recognition of the head entities (the vision
        tower learns it from scratch) gets many more images per minute.
        """
        entity = self.rng.choice(self.head_entities)
        q = self._fresh_question(entity, applicable(entity))
        return [render_first_turn(q.text, q.image, BARE_PROMPTS), *direct(q)]

    def _know_not(self) -> list[Turn]:
        """A tail entity in a fresh query-style image, the bare question, the first search.

        The conversation stops at the search: the drill teaches the decision on a picture the
        policy was never taught, not the results (the tail kind and the copy drills do that).
        """
        entity = self.rng.choice(self.tail_entities)
        q = self._fresh_question(entity, applicable(entity))
        return [render_first_turn(q.text, q.image, BARE_PROMPTS), first_search(q)]

    def _direct(self) -> list[Turn]:
        q = self._sample_question(self.rng.choice(self.head))
        return [direct_first_turn(q.text, q.image), *direct(q)]
