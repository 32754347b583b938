"""The chat client and the openai policy against a real loopback chat-completions server."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest
from loopback import json_reply, loopback_server
from PIL import Image

from mmsr.chat_client import ChatClient, ChatError
from mmsr.policy import GenerationRequest
from mmsr.policy.openai import OpenAIPolicy, to_messages
from mmsr.protocol import default_prompt_set, render_first_turn
from mmsr.types import Role, Turn

SECRET = "sk-test-secret-value"


def _reply(content: str, finish: str = "stop") -> dict[str, Any]:
    return {
        "choices": [{"message": {"role": "assistant", "content": content}, "finish_reason": finish}]
    }


def _request(question: str = "What is this?", **kwargs: Any) -> GenerationRequest:
    turn = render_first_turn(question, Image.new("RGB", (4, 4), "red"), default_prompt_set())
    return GenerationRequest(turns=(turn,), **kwargs)


@pytest.fixture
def api_key(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("MMSR_TEST_KEY", SECRET)
    return SECRET


def test_request_shape_images_and_key(api_key: str) -> None:
    seen: list[tuple[dict[str, str], dict[str, Any]]] = []

    def handler(method: str, path: str, headers: dict[str, str], body: bytes) -> Any:
        seen.append((headers, json.loads(body)))
        assert (method, path) == ("POST", "/v1/chat/completions")
        return json_reply(200, _reply("<reason>r</reason><answer>France</answer>"))

    with loopback_server(handler) as url:
        policy = OpenAIPolicy(ChatClient(url + "/v1", "qwen", api_key_env="MMSR_TEST_KEY"))
        (gen,) = policy.generate([_request(max_new_tokens=64, seed=3)])
    assert gen.text == "<reason>r</reason><answer>France</answer>" and gen.finish_reason == "stop"
    headers, body = seen[0]
    assert headers["Authorization"] == f"Bearer {api_key}"
    assert (body["model"], body["temperature"], body["max_tokens"], body["seed"]) == (
        "qwen",
        0.0,
        64,
        3,
    )
    parts = body["messages"][0]["content"]
    kinds = [p["type"] for p in parts]
    assert kinds.count("image_url") == 1 and kinds[0] == "text"
    assert parts[kinds.index("image_url")]["image_url"]["url"].startswith("data:image/png;base64,")


def test_retries_honour_retry_after_then_succeed() -> None:
    attempts: list[float] = []

    def handler(method: str, path: str, headers: dict[str, str], body: bytes) -> Any:
        attempts.append(time.perf_counter())
        if len(attempts) == 1:
            return json_reply(429, {"error": "slow down"}, {"Retry-After": "0.3"})
        if len(attempts) == 2:
            return json_reply(503, {"error": "busy"})
        return json_reply(200, _reply("ok", "length"))

    with loopback_server(handler) as url:
        client = ChatClient(url, "m", backoff_s=0.01)
        (gen,) = OpenAIPolicy(client).generate([_request()])
    assert gen.finish_reason == "length" and len(attempts) == 3
    assert attempts[1] - attempts[0] >= 0.3  # waited as told
    assert (client.calls, client.retries) == (3, 2)


@pytest.mark.parametrize(
    ("status", "payload", "message", "retryable"),
    [
        (500, b'{"error": "boom"}', "failed after 3 attempts: HTTP 500", True),  # retried
        (400, b'{"error": "bad"}', "HTTP 400", False),  # not retried
        (200, b"not json", "not JSON", False),  # malformed body
        (200, b'{"choices": []}', "malformed chat reply", False),  # no choice
        (200, b'{"choices": [{"message": {"content": 5}}]}', "content is not text", False),
        # JSON nested deeper than the decoder goes (a RecursionError inside)
        (200, b"[" * 100_000 + b"]" * 100_000, "not JSON", False),
    ],
)
def test_failures_raise_without_the_key(
    api_key: str, status: int, payload: bytes, message: str, retryable: bool
) -> None:
    def handler(*_: Any) -> Any:
        return status, {"Content-Type": "application/json"}, payload

    with loopback_server(handler) as url:
        client = ChatClient(url, "m", api_key_env="MMSR_TEST_KEY", max_retries=2, backoff_s=0.01)
        with pytest.raises(ChatError, match=message) as info:
            client.complete([{"role": "user", "content": "hi"}])
        assert info.value.retryable is retryable
        assert api_key not in str(info.value)
        if retryable:  # the API is away: the run stops (and resumes later)
            with pytest.raises(ChatError, match=message):
                OpenAIPolicy(client).generate([_request()])
        else:  # the API refused this prompt: only this question fails
            (gen,) = OpenAIPolicy(client).generate([_request()])
            assert gen.text == "" and gen.error is not None and message in gen.error
            assert api_key not in gen.error


def test_timeout_is_retried_then_fails() -> None:
    def handler(*_: Any) -> Any:
        time.sleep(0.5)
        return json_reply(200, _reply("late"))

    with loopback_server(handler) as url:
        client = ChatClient(url, "m", timeout_s=0.1, max_retries=1, backoff_s=0.01)
        with pytest.raises(ChatError, match="ReadTimeout"):
            OpenAIPolicy(client).generate([_request()])


def test_batch_requests_run_concurrently() -> None:
    active, peak = [0], [0]
    lock = threading.Lock()

    def handler(*_: Any) -> Any:
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        time.sleep(0.2)
        with lock:
            active[0] -= 1
        return json_reply(200, _reply("x"))

    with loopback_server(handler) as url:
        start = time.perf_counter()
        gens = OpenAIPolicy(ChatClient(url, "m"), concurrency=8).generate(
            [_request() for _ in range(8)]
        )
        elapsed = time.perf_counter() - start
    assert len(gens) == 8 and peak[0] >= 4 and elapsed < 1.0


def test_messages_keep_roles_and_placeholder_order() -> None:
    red, blue = Image.new("RGB", (2, 2), "red"), Image.new("RGB", (2, 2), "blue")
    turns = (
        Turn(Role.USER, "look <image> and <image> now", (red, blue)),
        Turn(Role.ASSISTANT, "<reason>r</reason><search><img></search>"),
    )
    messages = to_messages(turns, system="be brief")
    assert [m["role"] for m in messages] == ["system", "user", "assistant"]
    assert [p["type"] for p in messages[1]["content"]] == [
        "text",
        "image_url",
        "text",
        "image_url",
        "text",
    ]
    with pytest.raises(ValueError, match="1 placeholders for 2 images"):
        to_messages((Turn(Role.USER, "<image>", (red, blue)),))
