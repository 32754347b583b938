"""A text-level policy behind any OpenAI-compatible chat API.

For vLLM serving Qwen2.5-VL or the released MMSearch-R1-7B, or a hosted model. Images go as
PNG data URLs at their placeholders; requests of a batch run concurrently; 429 and 5xx replies
and transport errors are retried with exponential back-off and jitter (``Retry-After`` is
honoured). The API key comes from an environment variable and is never logged or returned.
Greedy (temperature 0) by default, as evaluation needs.
"""

from __future__ import annotations

import base64
import io
import logging
import os
import random
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from mmsr.policy.base import FinishReason, Generation, GenerationRequest
from mmsr.protocol.prompts import IMAGE_PLACEHOLDER
from mmsr.types import Turn

logger = logging.getLogger(__name__)

RETRY_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504})


class PolicyError(RuntimeError):
    """The chat API could not produce a turn (after retries); the message holds no secret."""


def image_data_url(image: Any) -> str:
    """A PNG data URL of a PIL image."""
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


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
    """Continues conversations through ``{base_url}/chat/completions``."""

    token_level = False

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key_env: str = "OPENAI_API_KEY",
        temperature: float = 0.0,
        system: str | None = None,
        concurrency: int = 8,
        timeout_s: float = 120.0,
        max_retries: int = 4,
        backoff_s: float = 1.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        key = os.environ.get(api_key_env, "")
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._client = httpx.Client(
            base_url=base_url.rstrip("/"), headers=headers, timeout=timeout_s, transport=transport
        )
        self.model, self.temperature, self.system = model, temperature, system
        self.concurrency, self.max_retries, self.backoff_s = concurrency, max_retries, backoff_s
        self.calls = 0
        self.retries = 0

    def close(self) -> None:
        self._client.close()

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        with ThreadPoolExecutor(max_workers=max(1, self.concurrency)) as pool:
            return list(pool.map(self._one, requests))

    def _one(self, request: GenerationRequest) -> Generation:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": to_messages(request.turns, self.system),
            "temperature": self.temperature,
            "max_tokens": request.max_new_tokens,
        }
        if request.seed is not None:
            body["seed"] = request.seed
        reply = self._post(body)
        try:
            choice = reply["choices"][0]
            text = choice["message"]["content"] or ""
            reason: FinishReason = "length" if choice.get("finish_reason") == "length" else "stop"
        except (KeyError, IndexError, TypeError) as err:
            raise PolicyError(f"malformed chat reply: missing {err}") from err
        if not isinstance(text, str):
            raise PolicyError("malformed chat reply: content is not text")
        return Generation(text=text, finish_reason=reason)

    def _post(self, body: dict[str, Any]) -> dict[str, Any]:
        for attempt in range(self.max_retries + 1):
            self.calls += 1
            try:
                response = self._client.post("/chat/completions", json=body)
            except httpx.TransportError as err:
                problem, wait = f"{type(err).__name__}", None
            else:
                if response.status_code == 200:
                    try:
                        data = response.json()
                    except ValueError as err:
                        raise PolicyError("chat reply is not JSON") from err
                    if not isinstance(data, dict):
                        raise PolicyError("chat reply is not a JSON object")
                    return data
                if response.status_code not in RETRY_STATUS:
                    raise PolicyError(f"chat API answered HTTP {response.status_code}")
                problem, wait = f"HTTP {response.status_code}", _retry_after(response)
            if attempt == self.max_retries:
                raise PolicyError(f"chat API failed after {attempt + 1} attempts: {problem}")
            self.retries += 1
            delay = (
                wait if wait is not None else self.backoff_s * 2**attempt * (0.5 + random.random())
            )
            logger.warning("chat API %s; retrying in %.2f s", problem, delay)
            time.sleep(delay)
        raise AssertionError("unreachable")


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    try:
        return min(float(value), 60.0) if value is not None else None
    except ValueError:
        return None
