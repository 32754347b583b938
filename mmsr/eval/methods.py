"""Evaluation methods (paper §4): how a policy is allowed to use search.

* ``direct``: one turn, no tools; the model answers from what it knows.
* ``rag``: the paper's fixed two-search workflow. An image search with the question's image is
  made for the model and its results are shown in the first user turn; the model writes one
  text query, that one text search runs, and the model answers.
* ``on-demand``: the protocol as it is: the model decides whether and what to search.
* ``oracle``: for labelled data (``search_need``): the search *decision* is made from the label
  and the rest is the model's — a question that needs no search runs as ``direct``, one that
  needs any search runs as ``rag`` (the image search made for it, its own text query). It
  bounds what on-demand search reaches with perfect decisions and this model's own queries and
  reading; a question that needs only a text search gets ``rag``'s image search too.

Every method runs on the ``RolloutEngine`` (``oracle`` through the two methods it routes to):
a prompt set, limits, and (for ``rag``) a first user turn that already holds the prefetched
results (``RolloutTask.first_turn`` / ``prefetched``). Searches made for the model count in
the search ratio like the model's own. This module is the table of methods: their first turns
and prompt texts are the protocol's (``mmsr.protocol.method_turns``), and every search runs
through ``mmsr.rollout.call_tool``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from mmsr.policy.base import Policy
from mmsr.protocol.method_turns import (
    image_error_section,
    image_section,
    method_prompt_set,
    prefetched_first_turn,
)
from mmsr.protocol.prompts import PromptSet, default_prompt_set
from mmsr.protocol.render import RenderLimits
from mmsr.rollout.engine import RolloutEngine, RolloutLimits, RolloutTask, TurnEncoder
from mmsr.rollout.failures import ToolFailures, call_tool
from mmsr.rollout.trajectory import ToolCall, Trajectory
from mmsr.search.base import SearchBackends
from mmsr.types import Sample

NEEDS = ("none", "image", "text", "both")


@dataclass(frozen=True)
class EvalItem:
    """One question to evaluate: what the rollout needs plus the label the oracle reads."""

    id: str
    question: str
    image: Any
    need: str | None = None
    """``search_need`` label: "none", "image", "text" or "both"; ``None`` when unlabelled."""

    @classmethod
    def from_sample(cls, sample: Sample, image: Any) -> EvalItem:
        need = sample.extra.get("search_need")
        return cls(sample.id, sample.question, image, str(need) if need is not None else None)


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
    untagged: bool = False
    """The paper's baselines: ``direct``/``rag`` ask for an untagged short answer."""


# --- prefetched searches, rendered into the first user turn ---


@dataclass
class _Prefetch:
    """The searches made for one item: rendered sections, thumbnails, calls."""

    sections: list[str] = dataclasses.field(default_factory=list)
    images: list[Any] = dataclasses.field(default_factory=list)
    calls: list[ToolCall] = dataclasses.field(default_factory=list)


def _image_search(item: EvalItem, ctx: MethodContext, out: _Prefetch) -> None:
    hits, call = call_tool(
        ctx.search,
        "image",
        image=item.image,
        query=None,
        question=item.question,
        k=ctx.limits.image_k,
        failures=ctx.tool_failures,
    )
    out.calls.append(call)
    if call.error is not None:
        out.sections.append(image_error_section(call.error))
        return
    section, thumbs = image_section(hits, ctx.render_limits)
    out.sections.append(section)
    out.images.extend(thumbs)


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
    route: Callable[[EvalItem], str] | None = None
    """Runs each item with the method this names instead (``oracle``: by the need label)."""
    uses_tools: bool = True
    may_answer_untagged: bool = False
    """Under ``MethodContext.untagged`` its last reply is the answer, tags or not."""

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
        if self.route is not None:
            return self._run_routed(self.route, items, ctx, seeds)
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

    def _run_routed(
        self,
        route: Callable[[EvalItem], str],
        items: Sequence[EvalItem],
        ctx: MethodContext,
        seeds: Sequence[int | None] | None,
    ) -> list[Trajectory]:
        """Each item rolled out by the method ``route`` names, in the items' order."""
        groups: dict[str, list[int]] = {}
        for i, item in enumerate(items):
            groups.setdefault(route(item), []).append(i)
        out: list[Trajectory | None] = [None] * len(items)
        for name, where in groups.items():
            got = METHODS[name].run(
                [items[i] for i in where],
                ctx,
                None if seeds is None else [seeds[i] for i in where],
            )
            for i, trajectory in zip(where, got, strict=True):
                out[i] = trajectory
        return [t for t in out if t is not None]


def _plain_task(item: EvalItem, ctx: MethodContext) -> RolloutTask:
    return RolloutTask(item.id, item.question, item.image)


def _prepare_rag(item: EvalItem, ctx: MethodContext) -> RolloutTask:
    got = _Prefetch()
    _image_search(item, ctx, got)
    first = prefetched_first_turn(
        "rag", item.question, item.image, got.sections, got.images, ctx.render_limits
    )
    return RolloutTask(item.id, item.question, item.image, first, tuple(got.calls))


def _oracle_route(item: EvalItem) -> str:
    return "direct" if item.need == "none" else "rag"


def _answer_only(limits: RolloutLimits) -> RolloutLimits:
    return dataclasses.replace(limits, max_turns=1, max_image_searches=0, max_text_searches=0)


METHODS: dict[str, Method] = {
    "direct": Method(
        "direct",
        "answer in one turn from own knowledge, no tools",
        prompts=lambda ctx: method_prompt_set("direct", ctx.untagged),
        limits=_answer_only,
        prepare=_plain_task,
        uses_tools=False,
        may_answer_untagged=True,
    ),
    "rag": Method(
        "rag",
        "image search made first, then one text query by the model, then the answer",
        prompts=lambda ctx: method_prompt_set("rag", ctx.untagged),
        # the prefetched image search uses up the one image search; one text search is left
        limits=lambda lim: dataclasses.replace(
            lim, max_turns=2, max_image_searches=1, max_text_searches=1
        ),
        prepare=_prepare_rag,
        may_answer_untagged=True,
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
        "the search decision from the search_need label: direct when none is needed, else rag",
        prompts=lambda ctx: method_prompt_set("direct", ctx.untagged),
        limits=_answer_only,
        prepare=_plain_task,
        needs_labels=True,
        route=_oracle_route,
        may_answer_untagged=True,
    ),
}


def get_method(name: str) -> Method:
    """The method registered under ``name``; ``ValueError`` naming the known ones."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; known: {', '.join(METHODS)}")
    return METHODS[name]
