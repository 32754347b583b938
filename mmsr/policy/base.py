"""The policy interface: turn conversations into the model's next assistant turn.

A policy either works on text (``scripted``, ``openai``: the rollout gives it the conversation
as turns) or on tokens (``hf``: the rollout also gives it the exact token ids of the
conversation so far, and it returns the ids it sampled with their log-probs, so that training
uses exactly what was generated — no decode → re-encode drift).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

from mmsr.types import Turn

FinishReason = Literal["stop", "length"]


@dataclass(frozen=True)
class GenerationRequest:
    """One conversation to continue with an assistant turn."""

    turns: tuple[Turn, ...]
    """The conversation so far; the last turn is a user turn."""
    prompt_ids: tuple[int, ...] = ()
    """Token ids of the conversation so far, ending with the assistant generation prompt
    (token-level policies only; empty otherwise)."""
    images: tuple[Any, ...] = ()
    """All images of the conversation, in placeholder order (token-level policies only)."""
    max_new_tokens: int = 256
    """Upper bound on the length of the generated turn, in tokens."""
    seed: int | None = None
    """Seed for this sample's sampling; the same seed gives the same turn."""
    session: Hashable | None = None
    """The rollout run this request belongs to. Within one session the weights do not change,
    so a policy may keep state for a conversation from one turn to the next (the hf policy's
    KV cache); ``None``: nothing is kept."""
    on_done: Callable[[Generation], None] | None = field(default=None, compare=False)
    """Called with this request's turn as soon as it is complete, before ``generate`` returns
    (by policies that can: the hf policy); lets the caller start a tool call early."""


@dataclass(frozen=True)
class Generation:
    """What a policy produced for one request."""

    text: str
    """The assistant turn, without the end-of-turn token."""
    token_ids: tuple[int, ...] = ()
    """The ids exactly as sampled, the end-of-turn token included when generated."""
    logprobs: tuple[float, ...] = ()
    """Log-probability of each sampled id under the sampling distribution."""
    finish_reason: FinishReason = "stop"
    """``length`` when the turn was cut at ``max_new_tokens``."""
    error: str | None = None
    """Set (with an empty text) when the policy could not continue this conversation for a
    reason of its own (e.g. a chat API refused the prompt); the rollout records it and ends."""


@runtime_checkable
class KeepsSessions(Protocol):
    """A policy that keeps state between the turns of a session (``GenerationRequest.session``)."""

    def end_session(self, session: Hashable) -> None:
        """The session's rollouts are over: drop what was kept for it."""


class Policy(Protocol):
    """Anything that continues a batch of conversations."""

    token_level: bool
    """Whether the policy needs ``prompt_ids``/``images`` and returns ``token_ids``."""

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]: ...
