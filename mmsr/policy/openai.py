"""A text-level policy behind any OpenAI-compatible chat API.

For vLLM serving Qwen2.5-VL or the released MMSearch-R1-7B, or a hosted model. Images go as
PNG data URLs at their placeholders; the requests of a batch run concurrently. Retries and key
handling live in ``mmsr.chat_client.ChatClient``. Greedy (temperature 0) by default, as evaluation
needs. A request the API refuses (a non-retryable ``ChatError``, e.g. a prompt too long for the
model) becomes a ``Generation`` with an ``error``: that question fails, the batch goes on. An
API that stays unreachable still raises (the run stops and can be resumed).
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from mmsr.chat_client import ChatClient, ChatError, image_data_url
from mmsr.policy.base import FinishReason, Generation, GenerationRequest
from mmsr.protocol.prompts import IMAGE_PLACEHOLDER
from mmsr.types import Turn


def to_messages(turns: Sequence[Turn], system: str | None = None) -> list[dict[str, Any]]:
    """Chat messages with text and image parts, images at their placeholders."""
    messages: list[dict[str, Any]] = [{"role": "system", "content": system}] if system else []
    for turn in turns:
        pieces = turn.text.split(IMAGE_PLACEHOLDER)
        if len(pieces) - 1 != len(turn.images):
            raise ValueError(
                f"turn has {len(pieces) - 1} placeholders for {len(turn.images)} images"
            )
        if not turn.images:
            messages.append({"role": turn.role.value, "content": turn.text})
            continue
        parts: list[dict[str, Any]] = []
        for i, piece in enumerate(pieces):
            if i:
                parts.append(
                    {"type": "image_url", "image_url": {"url": image_data_url(turn.images[i - 1])}}
                )
            if piece:
                parts.append({"type": "text", "text": piece})
        messages.append({"role": turn.role.value, "content": parts})
    return messages


class OpenAIPolicy:
    """Continues conversations through an OpenAI-compatible chat API (see ``mmsr.chat_client``)."""

    token_level = False

    def __init__(
        self,
        client: ChatClient,
        *,
        temperature: float = 0.0,
        system: str | None = None,
        concurrency: int = 8,
    ) -> None:
        self.client, self.temperature, self.system = client, temperature, system
        self.concurrency = concurrency

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        with ThreadPoolExecutor(max_workers=max(1, self.concurrency)) as pool:
            return list(pool.map(self._one, requests))

    def _one(self, request: GenerationRequest) -> Generation:
        params: dict[str, Any] = {
            "temperature": self.temperature,
            "max_tokens": request.max_new_tokens,
        }
        if request.seed is not None:
            params["seed"] = request.seed
        try:
            reply = self.client.complete(to_messages(request.turns, self.system), **params)
        except ChatError as err:
            if err.retryable:
                raise
            return Generation(text="", error=str(err))
        reason: FinishReason = "length" if reply.finish_reason == "length" else "stop"
        return Generation(text=reply.text, finish_reason=reason)
