"""The batched multi-turn rollout engine.

One explicit state machine per trajectory: GENERATE → parse → (ANSWER: done) | (SEARCH: run the
tool, render the results as the next user turn, GENERATE again) | (anything else: done). The
generations of all live trajectories are batched into one policy call per turn; a tool call
starts in a thread pool as soon as its trajectory's turn is complete (a policy that reports
turns as they finish, ``GenerationRequest.on_done``, lets it start while the other rows still
decode), so the waits of a turn overlap with each other and with generation. Each ``run`` is
one session (``GenerationRequest.session``): a policy may keep a conversation's state (a KV
cache) between its turns, and is told when the run is over. A tool failure of
any kind is an observation (``mmsr.rollout.failures.call_tool``); a policy ``Generation`` with an
``error`` (a chat API that refused this prompt) ends that rollout alone as ``policy_error``.

Each transition — record a turn, decide the search or the end, add the tool's turn within the
token budget — is the pure step of ``mmsr.rollout.step``, which the veRL agent loop
(``mmsr.integrations.verl``) runs too; the engine keeps only the batching and the tool threads.
For token-level policies each trajectory also keeps its token ids: the ids of the injected user
turns come from a ``TurnEncoder`` (mask 0) and the ids the policy sampled are appended as they
are (mask 1) — never re-tokenised.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol, TypeAlias

from mmsr.policy.base import Generation, GenerationRequest, KeepsSessions, Policy
from mmsr.protocol.prompts import PromptSet, default_prompt_set
from mmsr.protocol.render import RenderLimits, render_first_turn
from mmsr.rollout import step
from mmsr.rollout.failures import ToolFailures, call_tool
from mmsr.rollout.rules import RolloutLimits as RolloutLimits  # re-exported: it lived here
from mmsr.rollout.trajectory import ToolCall, Trajectory
from mmsr.search.base import ImageSearchBackend, SearchBackends, TextSearchBackend
from mmsr.types import Turn

_SESSIONS = itertools.count()  # one id per run, unique in the process
# a search's record, its observation turn and the turn's ids (token-level policies)
_ToolTurn: TypeAlias = tuple[ToolCall, Turn, list[int] | None]


@dataclass(frozen=True)
class RolloutTask:
    """One question to roll out: its id, text and image (a PIL image)."""

    id: str
    question: str
    image: Any
    first_turn: Turn | None = None
    """A ready first user turn (e.g. with results of searches made for the model by an
    evaluation method); ``None``: rendered from the prompt set."""
    prefetched: tuple[ToolCall, ...] = ()
    """Searches already made for the model before its first turn (``turn == -1``); they are
    recorded in the trajectory and count against the search limits."""


class TurnEncoder(Protocol):
    """Token ids of injected user turns, for token-level policies."""

    forbidden_ids: frozenset[int]
    """Ids a generated turn must never hold (vision and image placeholder tokens)."""

    def user_turn_ids(self, turn: Turn, *, first: bool) -> list[int]:
        """Ids of ``turn`` as the template writes it, ending with the assistant prompt.

        For a later turn the ids start right after the previous assistant turn's own ids (so
        they include the separator that follows its end-of-turn token).
        """
        ...


@dataclass
class _Live:
    """A task with its sampling seed and the state of its rollout."""

    task: RolloutTask
    seed: int | None
    state: step.RolloutState


class RolloutEngine:
    """Runs batches of rollouts of one policy against one pair of search tools."""

    def __init__(
        self,
        policy: Policy,
        *,
        image_search: ImageSearchBackend | None = None,
        text_search: TextSearchBackend | None = None,
        prompts: PromptSet | None = None,
        limits: RolloutLimits = RolloutLimits(),
        render_limits: RenderLimits = RenderLimits(),
        encoder: TurnEncoder | None = None,
        tool_workers: int = 16,
        tool_failures: ToolFailures | None = None,
    ) -> None:
        if policy.token_level and encoder is None:
            raise ValueError("a token-level policy needs a TurnEncoder")
        self.policy = policy
        self.tools = SearchBackends(image_search, text_search)
        self.prompts = prompts or default_prompt_set()
        self.limits = limits
        self.render_limits = render_limits
        self.encoder = encoder if policy.token_level else None
        self.tool_workers = tool_workers
        self.tool_failures = tool_failures or ToolFailures()
        """Unexpected exceptions of the tools (each became a failed tool call)."""

    def run(
        self, tasks: Sequence[RolloutTask], seeds: Sequence[int | None] | None = None
    ) -> list[Trajectory]:
        """Roll out every task once; ``seeds[i]`` seeds task i's sampling."""
        seeds = list(seeds) if seeds is not None else [None] * len(tasks)
        if len(seeds) != len(tasks):
            raise ValueError(f"{len(seeds)} seeds for {len(tasks)} tasks")
        runs = [self._start(task, seed) for task, seed in zip(tasks, seeds, strict=True)]
        live = [r for r in runs if r.state.end_reason is None]
        session = next(_SESSIONS)
        try:
            with ThreadPoolExecutor(max_workers=self.tool_workers) as pool:
                while live:
                    self._turn(live, session, pool)
                    live = [r for r in live if r.state.end_reason is None]
        finally:
            if isinstance(self.policy, KeepsSessions):
                self.policy.end_session(session)
        return [step.finish(r.state, r.task.id, r.task.question) for r in runs]

    def _turn(self, live: list[_Live], session: int, pool: ThreadPoolExecutor) -> None:
        """One generation for every live trajectory, its searches started as turns finish."""
        searches: dict[int, Future[_ToolTurn]] = {}
        advanced: set[int] = set()

        def finished(i: int) -> Callable[[Generation], None]:
            def record(gen: Generation) -> None:
                advanced.add(i)
                request = self._advance(live[i].state, gen)
                if request is not None:
                    searches[i] = pool.submit(self._tool_turn, live[i].task, request)

            return record

        requests = [self._request(r, session, finished(i)) for i, r in enumerate(live)]
        generations = self.policy.generate(requests)
        if len(generations) != len(live):
            raise RuntimeError(f"policy returned {len(generations)} turns for {len(live)} requests")
        for i, gen in enumerate(generations):
            if i not in advanced:  # a policy that does not call on_done
                finished(i)(gen)
        for i in sorted(searches):
            step.add_tool_turn(live[i].state, *searches[i].result())

    # --- the I/O around the pure step (mmsr.rollout.step) ---

    def _start(self, task: RolloutTask, seed: int | None) -> _Live:
        first = task.first_turn or render_first_turn(
            task.question, task.image, self.prompts, self.render_limits
        )
        if self.encoder is None:
            return _Live(task, seed, step.start(first, prefetched=task.prefetched))
        ids = self.encoder.user_turn_ids(first, first=True)
        budget = self.limits.max_total_tokens
        return _Live(task, seed, step.start(first, ids, budget=budget, prefetched=task.prefetched))

    def _request(
        self, run: _Live, session: int, on_done: Callable[[Generation], None]
    ) -> GenerationRequest:
        state = run.state
        n_assistant = len(state.actions)
        seed = None if run.seed is None else run.seed * 1_000_003 + n_assistant
        return GenerationRequest(
            turns=tuple(state.turns),
            prompt_ids=tuple(state.token_ids),
            images=tuple(state.images) if self.encoder else (),
            max_new_tokens=step.turn_budget(state, self.limits),
            seed=seed,
            session=session,
            on_done=on_done,
        )

    def _advance(self, state: step.RolloutState, gen: Generation) -> step.SearchRequest | None:
        """Record a generated turn; the search it asks for, if the rollout goes on."""
        if gen.error is not None:  # no turn was generated: the rollout ends, nothing recorded
            step.fail_turn(state, gen.error)
            return None
        return step.take_turn(
            state,
            gen.text,
            gen.token_ids,
            gen.logprobs,
            truncated=gen.finish_reason == "length",
            limits=self.limits,
            forbidden_ids=self.encoder.forbidden_ids if self.encoder is not None else (),
        )

    def _tool_turn(self, task: RolloutTask, request: step.SearchRequest) -> _ToolTurn:
        """Run a search (in a tool thread); a failure becomes the observation. The observation
        is rendered and encoded here too, so that it overlaps like the search."""
        hits, call = call_tool(
            self.tools,
            request.tool,
            image=task.image,
            query=request.query,
            question=task.question,
            k=request.k,
            failures=self.tool_failures,
            turn=request.turn,
        )
        turn = step.tool_turn(request, hits, call, task.question, self.prompts, self.render_limits)
        ids = self.encoder.user_turn_ids(turn, first=False) if self.encoder is not None else None
        return call, turn, ids
