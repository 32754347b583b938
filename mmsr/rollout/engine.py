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

What a turn means and when a rollout ends (limits, end reasons, the token budget) are the pure
rules of ``mmsr.rollout.rules``, which the veRL agent loop (``mmsr.integrations.verl``) calls
too. For token-level policies the engine also keeps each trajectory's token ids: the ids of the
injected user turns come from a ``TurnEncoder`` (mask 0) and the ids the policy sampled are
appended as they are (mask 1) — never re-tokenised.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

from mmsr.policy.base import Generation, GenerationRequest, KeepsSessions, Policy
from mmsr.protocol.prompts import PromptSet, default_prompt_set
from mmsr.protocol.render import (
    RenderLimits,
    render_first_turn,
    render_search_outcome,
)
from mmsr.rollout.failures import ToolFailures, call_tool
from mmsr.rollout.rules import RolloutLimits as RolloutLimits  # re-exported: it lived here
from mmsr.rollout.rules import end_reason, fits, search_request, turn_action
from mmsr.rollout.trajectory import EndReason, ToolCall, Trajectory
from mmsr.search.base import ImageSearchBackend, SearchBackends, TextSearchBackend
from mmsr.types import Action, Role, Turn

_SESSIONS = itertools.count()  # one id per run, unique in the process


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
class _State:
    """The mutable state of one trajectory while it runs."""

    task: RolloutTask
    seed: int | None
    turns: list[Turn]
    actions: list[Action] = field(default_factory=list)
    tool_calls: list[ToolCall] = field(default_factory=list)
    image_searches: int = 0
    text_searches: int = 0
    end_reason: EndReason | None = None
    error: str | None = None
    token_ids: list[int] = field(default_factory=list)
    loss_mask: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)

    def add_tokens(
        self, ids: Sequence[int], *, generated: bool, logprobs: Sequence[float] = ()
    ) -> None:
        self.token_ids.extend(ids)
        self.loss_mask.extend([1 if generated else 0] * len(ids))
        self.logprobs.extend(logprobs if generated and logprobs else [0.0] * len(ids))

    def finish(self) -> Trajectory:
        assert self.end_reason is not None
        return Trajectory(
            id=self.task.id,
            question=self.task.question,
            turns=tuple(self.turns),
            actions=tuple(self.actions),
            tool_calls=tuple(self.tool_calls),
            end_reason=self.end_reason,
            token_ids=tuple(self.token_ids),
            loss_mask=tuple(self.loss_mask),
            logprobs=tuple(self.logprobs),
            error=self.error,
        )


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
        states = [self._start(task, seed) for task, seed in zip(tasks, seeds, strict=True)]
        live = [s for s in states if s.end_reason is None]
        session = next(_SESSIONS)
        try:
            with ThreadPoolExecutor(max_workers=self.tool_workers) as pool:
                while live:
                    self._turn(live, session, pool)
                    live = [s for s in live if s.end_reason is None]
        finally:
            if isinstance(self.policy, KeepsSessions):
                self.policy.end_session(session)
        return [s.finish() for s in states]

    def _turn(self, live: list[_State], session: int, pool: ThreadPoolExecutor) -> None:
        """One generation for every live trajectory, its searches started as turns finish."""
        searches: dict[int, Future[tuple[Turn, list[int]]]] = {}
        advanced: set[int] = set()

        def finished(i: int) -> Callable[[Generation], None]:
            def record(gen: Generation) -> None:
                advanced.add(i)
                if self._advance(live[i], gen):
                    searches[i] = pool.submit(self._tool_turn, live[i])

            return record

        requests = [self._request(s, session, finished(i)) for i, s in enumerate(live)]
        generations = self.policy.generate(requests)
        if len(generations) != len(live):
            raise RuntimeError(f"policy returned {len(generations)} turns for {len(live)} requests")
        for i, gen in enumerate(generations):
            if i not in advanced:  # a policy that does not call on_done
                finished(i)(gen)
        for i in sorted(searches):
            self._add_user_turn(live[i], *searches[i].result())

    # --- the steps of the state machine ---

    def _start(self, task: RolloutTask, seed: int | None) -> _State:
        first = task.first_turn or render_first_turn(
            task.question, task.image, self.prompts, self.render_limits
        )
        state = _State(task=task, seed=seed, turns=[first], tool_calls=list(task.prefetched))
        state.image_searches = sum(call.tool == "image" for call in task.prefetched)
        state.text_searches = sum(call.tool == "text" for call in task.prefetched)
        if self.encoder is not None:
            state.add_tokens(self.encoder.user_turn_ids(first, first=True), generated=False)
            if not fits(len(state.token_ids), 0, self.limits.max_total_tokens):
                state.end_reason = EndReason.CONTEXT_FULL
        return state

    def _request(
        self, state: _State, session: int, on_done: Callable[[Generation], None]
    ) -> GenerationRequest:
        n_assistant = len(state.actions)
        seed = None if state.seed is None else state.seed * 1_000_003 + n_assistant
        budget = self.limits.max_new_tokens
        if self.encoder is not None:
            budget = min(budget, self.limits.max_total_tokens - len(state.token_ids))
        return GenerationRequest(
            turns=tuple(state.turns),
            prompt_ids=tuple(state.token_ids),
            images=tuple(i for t in state.turns for i in t.images) if self.encoder else (),
            max_new_tokens=budget,
            seed=seed,
            session=session,
            on_done=on_done,
        )

    def _advance(self, state: _State, gen: Generation) -> bool:
        """Record a generated turn and decide what follows; True when a search must run."""
        if gen.error is not None:  # no turn was generated: the rollout ends, nothing recorded
            state.error, state.end_reason = gen.error, EndReason.POLICY_ERROR
            return False
        state.turns.append(Turn(Role.ASSISTANT, gen.text))
        if self.encoder is not None:
            state.add_tokens(gen.token_ids, generated=True, logprobs=gen.logprobs)
        ids = gen.token_ids if self.encoder is not None else ()
        forbidden = self.encoder.forbidden_ids if self.encoder is not None else frozenset()
        action = turn_action(gen.text, ids, forbidden)
        state.actions.append(action)
        state.end_reason = end_reason(
            action,
            truncated=gen.finish_reason == "length",
            n_turns=len(state.actions),
            image_searches=state.image_searches,
            text_searches=state.text_searches,
            limits=self.limits,
        )
        return state.end_reason is None

    def _search(self, state: _State) -> Turn:
        """Run the search the last action asked for; a failure becomes the observation."""
        question = state.task.question
        tool, query, k = search_request(state.actions[-1], self.limits)
        if tool == "image":
            state.image_searches += 1
        else:
            state.text_searches += 1
        hits, call = call_tool(
            self.tools,
            tool,
            image=state.task.image,
            query=query,
            question=question,
            k=k,
            failures=self.tool_failures,
            turn=len(state.actions) - 1,
        )
        state.tool_calls.append(call)
        return render_search_outcome(
            tool, hits, call.error, question, self.prompts, self.render_limits
        )

    def _tool_turn(self, state: _State) -> tuple[Turn, list[int]]:
        """The search's observation as the next user turn, and its ids (token-level policies;
        encoded here, in the tool's worker thread, so that it overlaps like the search)."""
        turn = self._search(state)
        ids = self.encoder.user_turn_ids(turn, first=False) if self.encoder is not None else []
        return turn, ids

    def _add_user_turn(self, state: _State, turn: Turn, ids: list[int]) -> None:
        if self.encoder is not None:
            if not fits(len(state.token_ids), len(ids), self.limits.max_total_tokens):
                state.end_reason = EndReason.CONTEXT_FULL
                return
            state.add_tokens(ids, generated=False)
        state.turns.append(turn)
