"""The policy interface: turn conversations into the model's next assistant turn.

A policy either works on text (``scripted``, ``openai``: the rollout gives it the conversation
as turns) or on tokens (``hf``: the rollout also gives it the exact token ids of the
conversation so far, and it returns the ids it sampled with their log-probs, so that training
uses exactly what was generated — no decode → re-encode drift).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

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


class Policy(Protocol):
    """Anything that continues a batch of conversations."""

    token_level: bool
    """Whether the policy needs ``prompt_ids``/``images`` and returns ``token_ids``."""

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]: ...
