"""A minimal client for OpenAI-compatible chat-completions APIs (httpx), for data generation.

``POST {base_url}/chat/completions`` with ``{"model", "messages", "temperature"}``; the reply
text is ``choices[0].message.content``. 429, 5xx, timeouts and connection errors are retried
with exponential back-off and jitter; other 4xx (bad key, unknown model) fail at once. The API
key is read from an environment variable and is never logged or put in an error message.
Not here: what to ask (``qagen``).
"""

from __future__ import annotations

import logging
import os
import random
import time
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

logger = logging.getLogger(__name__)


class ChatError(RuntimeError):
    """The chat API gave no usable reply (after retries, where retrying made sense)."""


class ChatClient(Protocol):
    def complete(self, messages: list[dict[str, Any]]) -> str:
        """The assistant's reply to ``messages`` (OpenAI message format)."""
        ...


@dataclass(frozen=True)
class ChatConfig:
    """Where and how to call the chat API."""

    base_url: str
    """e.g. ``http://127.0.0.1:8000/v1`` (``/chat/completions`` is appended)."""
    model: str
    """The model name the server expects."""
    api_key_env: str = "OPENAI_API_KEY"
    """Environment variable holding the key; unset means no ``Authorization`` header."""
    timeout_s: float = 60.0
    """Per-request timeout."""
    temperature: float = 0.7
    """Sampling temperature sent with each request."""
    max_retries: int = 2
    """Retries after a 429/5xx/timeout before giving up."""
    backoff_s: float = 1.0
    """First back-off delay; doubled on each retry, plus up to 10 % jitter."""


class OpenAIChatClient:
    """``ChatClient`` over HTTP; use as a context manager or call ``close()``."""

    def __init__(self, config: ChatConfig, transport: httpx.BaseTransport | None = None) -> None:
        self.config = config
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(config.api_key_env, "")
        if key:
            headers["Authorization"] = f"Bearer {key}"
        self._http = httpx.Client(
            base_url=config.base_url.rstrip("/"),
            headers=headers,
            timeout=config.timeout_s,
            transport=transport,
        )

    def __enter__(self) -> OpenAIChatClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def complete(self, messages: list[dict[str, Any]]) -> str:
        body = {
            "model": self.config.model,
            "messages": messages,
            "temperature": self.config.temperature,
        }
        last = "no attempt"
        for attempt in range(self.config.max_retries + 1):
            if attempt:
                delay = self.config.backoff_s * 2 ** (attempt - 1)
                time.sleep(delay * (1 + 0.1 * random.random()))
            try:
                response = self._http.post("/chat/completions", json=body)
            except httpx.TransportError as err:  # timeouts, refused connections
                last = f"{type(err).__name__}"
                logger.warning("chat API: %s (attempt %d)", last, attempt + 1)
                continue
            if response.status_code == 429 or response.status_code >= 500:
                last = f"HTTP {response.status_code}"
                logger.warning("chat API: %s (attempt %d)", last, attempt + 1)
                continue
            if response.status_code != 200:
                raise ChatError(f"HTTP {response.status_code}: {response.text[:200]}")
            return _reply_text(response)
        raise ChatError(f"gave up after {self.config.max_retries + 1} attempts: {last}")


def _reply_text(response: httpx.Response) -> str:
    try:
        content = response.json()["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError):
        raise ChatError(f"malformed response body: {response.text[:200]!r}") from None
    if not isinstance(content, str):
        raise ChatError("malformed response body: content is not text")
    return content
