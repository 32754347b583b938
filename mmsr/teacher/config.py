"""The SFT teacher's knobs: its mixture of conversation kinds, by name, and how it shapes them.

Light on purpose (no torch, no images): the CLI reads the kind names for its help text, and a
saved ``sft_config.json`` is read back here. Adding a kind means adding a field to
``KindWeights`` and a drawer to ``mmsr.teacher.draw.DRAWERS`` (a test checks they match), so
no mixture can shift silently. Not here: the conversations (``mmsr.teacher.draw``,
``mmsr.teacher.drills``).

``decision`` says what picks a picture question's path. ``need`` (the default): the picture's
knowledge class — head pictures are answered directly (``head_direct`` of the ``head`` kind,
``know``, ``head_drill``, ``direct``), tail pictures searched — so the warm start's decision is
taught by labels. ``blind``: a coin of ``search_share``, the same for every picture, and a tail
picture answered directly gets a guess (a head entity's name and value), as an untrained model
would give. Then only RL can teach the decision, from reward alone: a guessed answer is wrong,
so reward teaches searching on tail pictures; a searched head answer is right but pays the
search penalty, so reward teaches answering head pictures directly. Blind mode refuses the
kinds whose path is their knowledge class (``BLIND_REFUSED``) and tail-only copy drills.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class KindWeights:
    """Sampling weight of each teacher kind (see ``mmsr.teacher.draw`` for what each draws)."""

    head: float = 0.15
    """A train question about a head entity: directly (``head_direct``) or by the search path."""
    tail: float = 0.2
    """A train question about a tail entity, by the search path with the index's real hits."""
    head_drill: float = 0.15
    """A head entity in a fresh picture under the protocol's prompt, answered directly."""
    copy1: float = 0.15
    """Image results over random entities; the answer is copied from them."""
    copy2: float = 0.15
    """Image results, then text results with random fact values; the value is copied."""
    prime1: float = 0.1
    """``copy1`` stripped to the copying (short: drawn in large batches)."""
    prime2: float = 0.1
    """``copy2`` stripped to the copying (short: drawn in large batches)."""
    rag: float = 0.0
    """A train question in the ``rag`` method's format (prefetched results)."""
    oracle: float = 0.0
    """A train question with the searches its need label asks for prefetched into one turn (a
    reading drill; the ``oracle`` evaluation method runs ``direct`` or ``rag`` instead)."""
    direct: float = 0.0
    """A head train question in the ``direct`` method's format."""
    know: float = 0.0
    """A head entity in a fresh picture under the bare question, answered (short)."""
    know_not: float = 0.0
    """A tail entity in a fresh picture under the bare question, only the first search (short)."""
    decide: float = 0.0
    """``know`` and ``know_not`` mixed in one batch (short)."""
    decide_full: float = 0.0
    """``decide`` under the protocol's prompt instead of the bare question."""

    def __post_init__(self) -> None:
        values = dataclasses.astuple(self)
        if min(values) < 0 or sum(values) <= 0:
            raise ValueError("teacher weights must be non-negative and not all 0")

    def as_tuple(self) -> tuple[float, ...]:
        """The weights in ``KINDS`` order (what ``random.choices`` takes)."""
        return tuple(float(v) for v in dataclasses.astuple(self))


KINDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(KindWeights))
"""Every teacher kind, in a fixed order (the order seeds the mixture's draws)."""
PRIMER_KINDS: tuple[str, ...] = ("prime1", "prime2")
SHORT_KINDS: tuple[str, ...] = (*PRIMER_KINDS, "know", "know_not", "decide")
"""Kinds short enough to be drawn in batches of ``SFTConfig.primer_batch_size``."""
COPY_ENTITIES: tuple[str, ...] = ("all", "tail")
DECISIONS: tuple[str, ...] = ("need", "blind")
BLIND_REFUSED: tuple[str, ...] = ("know", "know_not", "head_drill", "direct")
"""Kinds defined by their path following the knowledge class (head answered, tail searched):
no weight in blind mode."""
HEAD_ANSWERS: tuple[str, ...] = ("copy", "recall")
VALUE_REASONS: tuple[str, ...] = ("say", "quote")


@dataclass(frozen=True)
class TeacherConfig:
    """How the teacher mixes and shapes its conversations."""

    weights: KindWeights = field(default_factory=KindWeights)
    """Sampling weights of the kinds, by name."""
    head_direct: float = 0.5
    """Need mode: share of head train questions answered directly (the rest go the search
    path). Unused in blind mode (``search_share``)."""
    copy_first: float = 0.6
    """Share of copy drills whose entity is the first image hit (real hits put it first most)."""
    fact_first: float = 1.0
    """Share of the copy drills' text hits (``copy2``, ``prime2``) whose asked fact opens the
    entity's hit, as the index summarises a page for a query naming that fact (``lines``
    layout, ``relevance`` order); the rest are summarised for the entity's bare name, so the
    asked fact stands among the others: a reader that copies the first line fails them, one
    that finds the line by its key ("X capital:") does not."""
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
    head_answers: str = "copy"
    """How a head question that searched is answered after the results: ``copy`` (the value
    read from the text hits, as for a tail question) or ``recall`` (the direct answer's own
    words, from what the policy knows: search results never change a known answer)."""
    value_reason: str = "say"
    """How an answer read from text results is reasoned: ``say`` ("The results say the
    capital of X is Y.") or ``quote`` ("The results say X: capital city Y." — the page's own key
    right before the value, where the same key stands in the hits)."""
    decision: str = "need"
    """What picks a picture question's path: ``need`` (its knowledge class: head answered
    directly by ``head_direct``, tail searched) or ``blind`` (``search_share``, whatever the
    picture; a tail picture answered directly gets a guess) — see the module docstring."""
    search_share: float = 0.5
    """Blind mode: the probability that a picture question (``head``, ``tail``, ``decide``,
    ``decide_full``) takes the search path, head or tail alike. Unused in need mode."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.head_direct <= 1.0:
            raise ValueError(f"head_direct is a share between 0 and 1, not {self.head_direct}")
        if not 0.0 <= self.fact_first <= 1.0:
            raise ValueError(f"fact_first is a share between 0 and 1, not {self.fact_first}")
        if self.copy_entities not in COPY_ENTITIES:
            raise ValueError(
                f"copy_entities must be one of {', '.join(COPY_ENTITIES)}, "
                f"not {self.copy_entities!r}"
            )
        if self.value_reason not in VALUE_REASONS:
            raise ValueError(
                f"value_reason must be one of {', '.join(VALUE_REASONS)}, not {self.value_reason!r}"
            )
        if self.head_answers not in HEAD_ANSWERS:
            raise ValueError(
                f"head_answers must be one of {', '.join(HEAD_ANSWERS)}, not {self.head_answers!r}"
            )
        if self.decision not in DECISIONS:
            raise ValueError(
                f"decision must be one of {', '.join(DECISIONS)}, not {self.decision!r}"
            )
        if not 0.0 <= self.search_share <= 1.0:
            raise ValueError(f"search_share is a share between 0 and 1, not {self.search_share}")
        if self.decision == "blind":
            self._check_blind()

    def _check_blind(self) -> None:
        """Blind mode takes no kind, and no copy-drill pool, that ties the path to the class."""
        tied = [k for k in BLIND_REFUSED if getattr(self.weights, k) > 0]
        if tied:
            raise ValueError(
                f"decision 'blind' refuses the kinds {', '.join(tied)} (their path is the "
                "picture's knowledge class); set their weights to 0"
            )
        if self.copy_entities != "all":
            raise ValueError(
                f"decision 'blind' needs copy_entities 'all', not {self.copy_entities!r} (copy "
                "drills open with an image search: over tail pictures only they teach searching "
                "on tail)"
            )


def parse_weights(text: str) -> KindWeights:
    """``"know=0.4,tail=0.2"``: the named kinds' weights, every other kind 0."""
    parts = [p.strip() for p in text.split(",") if p.strip()]
    try:
        if not parts or not all("=" in p for p in parts):
            raise ValueError(f"give kind=weight pairs; kinds: {', '.join(KINDS)}")
        named = {k.strip(): float(v) for k, v in (p.split("=", 1) for p in parts)}
        return weights_from_names(named)
    except ValueError as err:
        raise ValueError(f"teacher weights {text!r}: {err}") from None


def weights_from_names(named: Mapping[str, float]) -> KindWeights:
    """``KindWeights`` with the named kinds set and every other kind 0."""
    unknown = sorted(set(named) - set(KINDS))
    if unknown:
        raise ValueError(f"unknown teacher kinds {unknown}; known: {', '.join(KINDS)}")
    return KindWeights(**{k: float(named.get(k, 0.0)) for k in KINDS})


def saved_weights(value: Mapping[str, Any] | Sequence[Any]) -> KindWeights:
    """The mixture of a saved ``sft_config.json``: a name → weight mapping, or (saved before
    weights had names) a list in ``KINDS`` order, shorter when kinds were added since (new
    kinds are appended at the end, so a prefix names the kinds of its time)."""
    if isinstance(value, Mapping):
        return weights_from_names({str(k): float(v) for k, v in value.items()})
    if not 0 < len(value) <= len(KINDS):
        raise ValueError(f"a saved mixture lists 1 to {len(KINDS)} weights, not {len(value)}")
    return weights_from_names(dict(zip(KINDS, map(float, value), strict=False)))


def weights_text(weights: KindWeights) -> str:
    """The ``--weights`` text of ``weights`` (kinds at 0 left out)."""
    return ",".join(f"{k}={w:g}" for k, w in zip(KINDS, weights.as_tuple(), strict=True) if w)
