"""One small client for OpenAI-compatible chat-completions APIs, shared by every LLM caller.

Policies, the answer judge, summarisers and question generators all talk to such servers
(vLLM, hosted models). 429/5xx replies and transport errors are retried with exponential
back-off and jitter; ``Retry-After`` is honoured. The API key comes from an environment
variable and never appears in logs, errors or return values. ``split_endpoint`` reads the
``BASE_URL#MODEL`` spec that names a server and its model (``--policy openai:``, ``--judge``);
``image_data_url`` puts a picture into a message.
Not here: the policy that talks through it (``mmsr.policy.openai``).
"""

from __future__ import annotations

import base64
import io
import logging
import os
import random
import threading
import time
from dataclasses import dataclass
from typing import Any

import httpx

logger = logging.getLogger(__name__)

RETRY_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504})
MAX_RETRY_AFTER_S = 60.0


class ChatError(RuntimeError):
    """The chat API gave no usable reply (after retries). The message holds no secret.

    ``retryable`` is True when the API was unreachable or overloaded (retries ran out: a later
    run may succeed), False when it refused this request (4xx) or answered nonsense to it.
    """

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable


@dataclass(frozen=True)
class ChatReply:
    text: str
    finish_reason: str


class ChatClient:
    """Posts to ``{base_url}/chat/completions``; thread-safe, counts calls and retries."""

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key_env: str = "OPENAI_API_KEY",
        timeout_s: float = 120.0,
        max_retries: int = 4,
        backoff_s: float = 1.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        key = os.environ.get(api_key_env, "")
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        try:
            self._client = httpx.Client(
                base_url=base_url.rstrip("/"),
                headers=headers,
                timeout=timeout_s,
                transport=transport,
            )
        except httpx.InvalidURL as err:  # its message quotes the bad part, never a password
            raise ValueError(f"chat API url is not a url ({err})") from None
        self.model, self.max_retries, self.backoff_s = model, max_retries, backoff_s
        # where the API is, for messages: without a user:password the url may carry
        self.endpoint = str(self._client.base_url.copy_with(userinfo=b""))
        self._lock = threading.Lock()
        self.calls = 0
        self.retries = 0

    def __enter__(self) -> ChatClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._client.close()

    def complete(self, messages: list[dict[str, Any]], **params: Any) -> ChatReply:
        """One chat completion; ``params`` go into the body (temperature, max_tokens, seed…)."""
        data = self._post({"model": self.model, "messages": messages, **params})
        try:
            choice = data["choices"][0]
            text = choice["message"]["content"]
        except (KeyError, IndexError, TypeError) as err:
            raise ChatError(f"malformed chat reply: missing {err}") from err
        if text is None:
            text = ""
        if not isinstance(text, str):
            raise ChatError("malformed chat reply: content is not text")
        return ChatReply(text, str(choice.get("finish_reason") or "stop"))

    def _count(self, retry: bool) -> None:
        with self._lock:
            self.calls += 1
            self.retries += retry

    def _post(self, body: dict[str, Any]) -> dict[str, Any]:
        for attempt in range(self.max_retries + 1):
            self._count(retry=attempt > 0)
            try:
                response = self._client.post("/chat/completions", json=body)
            except httpx.TransportError as err:
                problem, wait = type(err).__name__, None
            else:
                if response.status_code == 200:
                    return _json_object(response)
                if response.status_code not in RETRY_STATUS:
                    raise ChatError(f"chat API answered HTTP {response.status_code}")
                problem, wait = f"HTTP {response.status_code}", _retry_after(response)
            if attempt == self.max_retries:
                raise ChatError(
                    f"chat API at {self.endpoint} failed after {attempt + 1} attempts: {problem}",
                    retryable=True,
                )
            delay = (
                wait if wait is not None else self.backoff_s * 2**attempt * (0.5 + random.random())
            )
            logger.warning("chat API %s; retrying in %.2f s", problem, delay)
            time.sleep(delay)
        raise AssertionError("unreachable")


def _json_object(response: httpx.Response) -> dict[str, Any]:
    try:
        data = response.json()
    except (ValueError, RecursionError) as err:
        raise ChatError("malformed chat reply: not JSON") from err
    if not isinstance(data, dict):
        raise ChatError("malformed chat reply: not a JSON object")
    return data


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    try:
        return min(max(float(value), 0.0), MAX_RETRY_AFTER_S) if value is not None else None
    except ValueError:
        return None


def split_endpoint(spec: str, model: str | None, what: str) -> tuple[str, str]:
    """``BASE_URL#MODEL`` → (base url, model); ``model`` fills in a missing ``#MODEL``."""
    base, sep, name = spec.rpartition("#")
    if not sep:
        base, name = spec, model or ""
    if not base.startswith(("http://", "https://")) or not name:
        raise ValueError(f"{what}: expected BASE_URL#MODEL (http[s]://…#name), got {spec!r}")
    return base, name


def image_data_url(image: Any) -> str:
    """A PNG data URL of a PIL image, for an ``image_url`` part of a chat message."""
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
