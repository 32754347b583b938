"""Evaluation methods (DESIGN §8, paper §4): how a policy is allowed to use search.

* ``direct``: one turn, no tools; the model answers from what it knows.
* ``rag``: the paper's fixed two-search workflow. An image search with the question's image is
  made for the model and its results are shown in the first user turn; the model writes one
  text query, that one text search runs, and the model answers.
* ``on-demand``: the protocol as it is (DESIGN §1): the model decides whether and what to search.
* ``oracle``: for labelled data (``search_need``): the searches the question needs are made for
  the model — none, image, text or both — and it answers in one turn. It bounds what on-demand
  search could reach with perfect decisions. The text query is the labelled entity
  (``extra["entity"]``, ``_`` read as a space), i.e. a perfect query; without that label, the
  title of the top image hit; without either, the question.

Every method runs on the ``RolloutEngine``: a prompt set, limits, and (for ``rag``/``oracle``)
a first user turn that already holds the prefetched results (``RolloutTask.first_turn`` /
``prefetched``). Searches made for the model count in the search ratio like the model's own.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from mmsr.policy.base import Policy
from mmsr.protocol.prompts import (
    IMAGE_PLACEHOLDER,
    QUESTION_SLOT,
    PromptSet,
    default_prompt_set,
    read_prompt_file,
)
from mmsr.protocol.render import RenderLimits, image_hit_lines, neutralize, text_hit_lines
from mmsr.rollout.engine import RolloutEngine, RolloutLimits, RolloutTask, TurnEncoder
from mmsr.rollout.failures import ToolFailures, call_tool
from mmsr.rollout.trajectory import ToolCall, Trajectory, hit_record
from mmsr.search.base import SearchBackends, SearchError
from mmsr.types import ImageHit, Role, Sample, TextHit, Turn

PROMPT_DIR = Path(__file__).parent / "prompts"
INFORMATION_SLOT = "{information}"
NEEDS = ("none", "image", "text", "both")


@dataclass(frozen=True)
class EvalItem:
    """One question to evaluate: what the rollout needs plus the labels an oracle reads."""

    id: str
    question: str
    image: Any
    need: str | None = None
    """``search_need`` label: "none", "image", "text" or "both"; ``None`` when unlabelled."""
    entity: str | None = None
    """The entity the question is about, when labelled."""

    @classmethod
    def from_sample(cls, sample: Sample, image: Any) -> EvalItem:
        need, entity = sample.extra.get("search_need"), sample.extra.get("entity")
        return cls(
            sample.id,
            sample.question,
            image,
            str(need) if need is not None else None,
            str(entity) if entity is not None else None,
        )


@dataclass(frozen=True)
class MethodContext:
    """What every method runs with: the policy, the tools and the base limits."""

    policy: Policy
    search: SearchBackends = SearchBackends()
    encoder: TurnEncoder | None = None
    """Needed by token-level policies."""
    limits: RolloutLimits = RolloutLimits()
    """The protocol's limits; methods narrow them."""
    render_limits: RenderLimits = RenderLimits()
    prompts: PromptSet | None = None
    """The on-demand prompt set (default: mmsr's)."""
    tool_workers: int = 16
    """Threads for the searches of a batch."""
    tool_failures: ToolFailures = dataclasses.field(default_factory=ToolFailures)
    """Counts of unexpected tool exceptions over the whole run (each a failed call)."""


@functools.cache
def _prompt(method: str, role: str) -> str:
    return read_prompt_file(PROMPT_DIR / method / f"{role}.txt")


def _method_prompts(method: str, **roles: str) -> PromptSet:
    """The default prompt set with some roles replaced by ``prompts/<method>/<role>.txt``."""
    texts = {role: _prompt(method, name) for role, name in roles.items()}
    return dataclasses.replace(default_prompt_set(), name=f"mmsr-{method}", **texts)


# --- prefetched searches, rendered into the first user turn ---


@dataclass
class _Prefetch:
    """The searches made for one item: rendered sections, thumbnails, calls, top image title."""

    sections: list[str] = dataclasses.field(default_factory=list)
    images: list[Any] = dataclasses.field(default_factory=list)
    calls: list[ToolCall] = dataclasses.field(default_factory=list)
    top_title: str | None = None


def _timed(
    tool: Literal["image", "text"],
    query: str | None,
    run: Callable[[], list[Any]],
    failures: ToolFailures,
) -> tuple[list[Any], ToolCall]:
    start = time.perf_counter()
    hits, error = call_tool(tool, run, failures)
    latency = time.perf_counter() - start
    records = tuple(hit_record(hit) for hit in hits)
    return hits, ToolCall(-1, tool, query, len(hits), error, latency, records)


def _image_search(item: EvalItem, ctx: MethodContext, out: _Prefetch) -> None:
    def run() -> list[Any]:
        if ctx.search.image is None:
            raise SearchError("image search is not available", tool="image")
        return ctx.search.image.search(item.image, ctx.limits.image_k)

    hits, call = _timed("image", None, run, ctx.tool_failures)
    out.calls.append(call)
    if call.error is not None:
        out.sections.append(f"The image search failed: {neutralize(call.error, 300)}")
        return
    section, thumbs = image_section(hits, ctx.render_limits)
    out.sections.append(section)
    out.images.extend(thumbs)
    out.top_title = hits[0].title if hits else None


def _text_search(item: EvalItem, query: str, ctx: MethodContext, out: _Prefetch) -> None:
    def run() -> list[Any]:
        if ctx.search.text is None:
            raise SearchError("text search is not available", tool="text")
        return ctx.search.text.search(query, ctx.limits.text_k, question=item.question)

    hits, call = _timed("text", query, run, ctx.tool_failures)
    out.calls.append(call)
    shown = neutralize(query, ctx.render_limits.max_question_chars)
    if call.error is not None:
        out.sections.append(f"The web search for {shown!r} failed: {neutralize(call.error, 300)}")
        return
    out.sections.append(text_section(query, hits, ctx.render_limits))


def image_section(
    hits: Sequence[ImageHit], limits: RenderLimits = RenderLimits()
) -> tuple[str, list[Any]]:
    """A prefetched image search as a section of the first turn, and its thumbnails."""
    lines, thumbs = image_hit_lines(hits, limits)
    return "Image search results:\n" + "\n".join(lines), thumbs


def text_section(query: str, hits: Sequence[TextHit], limits: RenderLimits = RenderLimits()) -> str:
    """A prefetched text search as a section of the first turn."""
    shown = neutralize(query, limits.max_question_chars)
    return f"Web search results for {shown!r}:\n" + "\n".join(text_hit_lines(hits, limits))


def prefetched_first_turn(
    method: Literal["rag", "oracle"],
    question: str,
    image: Any,
    sections: Sequence[str],
    thumbnails: Sequence[Any],
    limits: RenderLimits = RenderLimits(),
) -> Turn:
    """The first user turn of ``rag`` / ``oracle`` with already rendered result sections.

    The SFT teacher writes its ``rag`` and ``oracle`` conversations with this, so the warm start
    sees those methods' prompts exactly as the evaluation renders them.
    """
    got = _Prefetch(list(sections), list(thumbnails))
    item = EvalItem("teacher", question, image, None, None)
    return _first_turn(_prompt(method, "first_turn"), item, got, limits)


def direct_first_turn(question: str, image: Any, limits: RenderLimits = RenderLimits()) -> Turn:
    """The first user turn of ``direct`` (and of ``oracle`` for a question that needs nothing)."""
    item = EvalItem("teacher", question, image, None, None)
    return _direct_first_turn(item, limits)


def method_prompt_set(method: Literal["direct", "rag", "oracle"]) -> PromptSet:
    """The prompt set a method's rollouts run with (its follow-up turns)."""
    if method == "rag":
        return _method_prompts("rag", after_text_search="after_text_search")
    if method == "direct":
        return _method_prompts("direct", first_turn="first_turn")
    return default_prompt_set()


def _first_turn(template: str, item: EvalItem, got: _Prefetch, limits: RenderLimits) -> Turn:
    """``template`` with the question, the question's image and the prefetched results."""
    if template.index(IMAGE_PLACEHOLDER) > template.index(INFORMATION_SLOT):
        raise ValueError("the question's image must come before the information in the prompt")
    body = "\n\n".join(got.sections) or "No searches were needed."
    text = template.replace(INFORMATION_SLOT, body)
    text = text.replace(QUESTION_SLOT, neutralize(item.question, limits.max_question_chars))
    return Turn(Role.USER, text, (item.image, *got.images))


def oracle_query(item: EvalItem, top_title: str | None) -> str:
    """The oracle's text query: the labelled entity, else the top image hit, else the question."""
    if item.entity:
        return item.entity.replace("_", " ").strip()
    return top_title or item.question


# --- the methods ---


@dataclass(frozen=True)
class Method:
    """One evaluation method: its prompt set, its limits, and how it prepares each rollout."""

    name: str
    description: str
    prompts: Callable[[MethodContext], PromptSet]
    limits: Callable[[RolloutLimits], RolloutLimits]
    prepare: Callable[[EvalItem, MethodContext], RolloutTask]
    needs_labels: bool = False
    uses_tools: bool = True

    def run(
        self,
        items: Sequence[EvalItem],
        ctx: MethodContext,
        seeds: Sequence[int | None] | None = None,
    ) -> list[Trajectory]:
        """Roll out every item once with this method."""
        if self.needs_labels:
            unlabelled = [i.id for i in items if i.need not in NEEDS]
            if unlabelled:
                raise ValueError(
                    f"method {self.name!r} needs search_need labels; missing for {unlabelled[:3]}"
                )
        with ThreadPoolExecutor(max_workers=max(1, ctx.tool_workers)) as pool:
            tasks = list(pool.map(lambda item: self.prepare(item, ctx), items))
        engine = RolloutEngine(
            ctx.policy,
            image_search=ctx.search.image if self.uses_tools else None,
            text_search=ctx.search.text if self.uses_tools else None,
            prompts=self.prompts(ctx),
            limits=self.limits(ctx.limits),
            render_limits=ctx.render_limits,
            encoder=ctx.encoder,
            tool_workers=ctx.tool_workers,
            tool_failures=ctx.tool_failures,
        )
        return engine.run(tasks, seeds)


def _plain_task(item: EvalItem, ctx: MethodContext) -> RolloutTask:
    return RolloutTask(item.id, item.question, item.image)


def _direct_first_turn(item: EvalItem, limits: RenderLimits) -> Turn:
    safe = neutralize(item.question, limits.max_question_chars)
    return Turn(
        Role.USER, _prompt("direct", "first_turn").replace(QUESTION_SLOT, safe), (item.image,)
    )


def _prepare_rag(item: EvalItem, ctx: MethodContext) -> RolloutTask:
    got = _Prefetch()
    _image_search(item, ctx, got)
    first = _first_turn(_prompt("rag", "first_turn"), item, got, ctx.render_limits)
    return RolloutTask(item.id, item.question, item.image, first, tuple(got.calls))


def _prepare_oracle(item: EvalItem, ctx: MethodContext) -> RolloutTask:
    if item.need == "none":
        first = _direct_first_turn(item, ctx.render_limits)
        return RolloutTask(item.id, item.question, item.image, first)
    got = _Prefetch()
    if item.need in ("image", "both"):
        _image_search(item, ctx, got)
    if item.need in ("text", "both"):
        _text_search(item, oracle_query(item, got.top_title), ctx, got)
    first = _first_turn(_prompt("oracle", "first_turn"), item, got, ctx.render_limits)
    return RolloutTask(item.id, item.question, item.image, first, tuple(got.calls))


def _answer_only(limits: RolloutLimits) -> RolloutLimits:
    return dataclasses.replace(limits, max_turns=1, max_image_searches=0, max_text_searches=0)


METHODS: dict[str, Method] = {
    "direct": Method(
        "direct",
        "answer in one turn from own knowledge, no tools",
        prompts=lambda ctx: method_prompt_set("direct"),
        limits=_answer_only,
        prepare=_plain_task,
        uses_tools=False,
    ),
    "rag": Method(
        "rag",
        "image search made first, then one text query by the model, then the answer",
        prompts=lambda ctx: method_prompt_set("rag"),
        # the prefetched image search uses up the one image search; one text search is left
        limits=lambda lim: dataclasses.replace(
            lim, max_turns=2, max_image_searches=1, max_text_searches=1
        ),
        prepare=_prepare_rag,
    ),
    "on-demand": Method(
        "on-demand",
        "the protocol: the model decides whether and what to search",
        prompts=lambda ctx: ctx.prompts or default_prompt_set(),
        limits=lambda lim: lim,
        prepare=_plain_task,
    ),
    "oracle": Method(
        "oracle",
        "the searches the question needs (search_need label) made for the model; one turn",
        prompts=lambda ctx: method_prompt_set("oracle"),
        limits=_answer_only,
        prepare=_prepare_oracle,
        needs_labels=True,
        uses_tools=False,
    ),
}


def get_method(name: str) -> Method:
    """The method registered under ``name``; ``ValueError`` naming the known ones."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; known: {', '.join(METHODS)}")
    return METHODS[name]
