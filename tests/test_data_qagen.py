"""Question generation: the rule checks, and the whole loop against a real HTTP server on
127.0.0.1 that answers like an OpenAI chat-completions endpoint (good, rule-breaking and
malformed replies, 500s)."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from _data_builders import image_bytes, write_jsonl

from mmsr.chat_client import ChatClient, ChatError
from mmsr.data import load_samples
from mmsr.data.qagen import (
    Concept,
    GeneratedQA,
    build_messages,
    generate_qa,
    iter_concepts,
    parse_reply,
    rule_violations,
)

PAGE = (
    "The Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars in Paris. "
    "It was designed by the company of the engineer Gustave Eiffel and built for the 1889 fair."
)
TOWER = Concept(id="c1", name="Eiffel Tower", page=PAGE, aliases=("Tour Eiffel",))
KEY = "sk-test-secret-123"


@pytest.mark.parametrize(
    ("question", "answer", "problems"),
    [
        ("What is this tall iron landmark called?", "The Eiffel Tower", []),  # all rules kept
        ("Which landmark is this?", "The Eiffel Tower", ["bad_opening"]),  # rule 2
        ("Where can I see this tower?", "In Paris", ["answer_lacks_concept"]),  # rule 1
        ("What is the Eiffel Tower made of?", "Eiffel Tower iron", ["names_concept"]),  # rule 3
        ("Who built the tour Eiffel?", "Eiffel Tower team", ["names_concept"]),  # an alias
        ("What is the wrought-iron lattice tower on the Champ de Mars?", "Eiffel Tower",
         ["leaks_page"]),  # rule 3: copies the page's description
        ("What is this", "Eiffel Tower", ["unnatural"]),  # rule 4: no question mark
        ("What does the page say this is?", "Eiffel Tower", ["unnatural"]),  # talks of the page
        ("What? Is this a tower?", "Eiffel Tower", ["unnatural"]),  # two sentences
        ("Who", "Eiffel Tower", ["unnatural"]),  # too short, no question mark
    ],
)  # fmt: skip
def test_rule_violations(question: str, answer: str, problems: list[str]) -> None:
    assert rule_violations(GeneratedQA(question, answer), TOWER) == problems


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ('{"question": "What is this?", "answer": "X"}', GeneratedQA("What is this?", "X")),
        ('```json\n{"question": " What is\\nthis? ", "answer": "X"}\n```',
         GeneratedQA("What is this?", "X")),  # code fence and stray white space
        ("Sure! Here it is.", None),  # no JSON
        ('{"question": "What?"}', None),  # no answer
        ('{"question": 3, "answer": "X"}', None),  # not text
        ('{"question": "What?", "answer": "X"', None),  # truncated
    ],
)  # fmt: skip
def test_parse_reply(reply: str, expected: GeneratedQA | None) -> None:
    assert parse_reply(reply) == expected


# ---- a loopback chat-completions server ------------------------------------------------------


class FakeChatServer:
    """Serves scripted responses in order: ``(status, body)``; records every request."""

    def __init__(self) -> None:
        self.script: list[tuple[int, str]] = []
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                server.requests.append({"path": self.path, **json.loads(self.rfile.read(length))})
                server.headers.append(dict(self.headers))
                status, body = server.script.pop(0) if server.script else (500, "empty script")
                data = body.encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def reply(self, content: str, status: int = 200) -> None:
        body = {"choices": [{"index": 0, "message": {"role": "assistant", "content": content}}]}
        self.script.append((status, json.dumps(body)))

    def raw(self, status: int, body: str) -> None:
        self.script.append((status, body))


@pytest.fixture
def chat_server() -> Iterator[FakeChatServer]:
    server = FakeChatServer()
    server.thread.start()
    yield server
    server.httpd.shutdown()
    server.httpd.server_close()


def _client(server: FakeChatServer, retries: int = 1) -> ChatClient:
    return ChatClient(server.url, "qa-model", max_retries=retries, backoff_s=0.01)


GOOD = json.dumps({"question": "What is this iron landmark called?", "answer": "Eiffel Tower"})
BAD = json.dumps({"question": "What is the Eiffel Tower?", "answer": "Eiffel Tower"})


def test_good_reply_is_accepted_and_request_is_well_formed(
    chat_server: FakeChatServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    chat_server.reply(GOOD)
    concept = Concept(id="c1", name="Eiffel Tower", page=PAGE, image=image_bytes())
    with _client(chat_server) as client:
        result = generate_qa(concept, client)
    assert result.qa == GeneratedQA("What is this iron landmark called?", "Eiffel Tower")
    assert result.attempts == 1 and result.problems == ()
    request = chat_server.requests[0]
    assert request["path"] == "/v1/chat/completions" and request["model"] == "qa-model"
    system, user = request["messages"]
    assert "Who" in system["content"] and system["role"] == "system"
    assert user["content"][1]["image_url"]["url"].startswith("data:image/png;base64,")
    assert chat_server.headers[0]["Authorization"] == f"Bearer {KEY}"


def test_rule_breaking_reply_is_retried_then_rejected(chat_server: FakeChatServer) -> None:
    chat_server.reply(BAD)
    chat_server.reply(GOOD)
    with _client(chat_server) as client:
        assert generate_qa(TOWER, client, attempts=2).attempts == 2  # second try accepted
        chat_server.reply(BAD)
        chat_server.reply("no json here")
        result = generate_qa(TOWER, client, attempts=2)
    assert result.qa is None and result.problems == ("unparseable",)  # the last attempt's


def test_malformed_body_and_server_errors(
    chat_server: FakeChatServer, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    with _client(chat_server, retries=1) as client:
        chat_server.raw(200, "{not json")  # malformed body: no retry, an observation
        result = generate_qa(TOWER, client, attempts=3)
        assert result.qa is None and result.problems[0].startswith("api_error: malformed")
        assert result.attempts == 1
        chat_server.raw(500, "boom")  # a 500 is retried …
        chat_server.reply(GOOD)
        assert generate_qa(TOWER, client).qa is not None
        chat_server.raw(503, "down")  # … but not for ever
        chat_server.raw(500, "still down")
        with caplog.at_level(logging.DEBUG), pytest.raises(ChatError, match="HTTP 500"):
            client.complete([{"role": "user", "content": "hi"}])
        chat_server.raw(401, '{"error": "bad key"}')  # a client error fails at once
        with pytest.raises(ChatError, match="HTTP 401"):
            client.complete([{"role": "user", "content": "hi"}])
    assert KEY not in caplog.text  # the key is never logged


def test_unreachable_server_is_an_error_not_a_hang() -> None:
    with ChatClient("http://127.0.0.1:9/v1", "m", max_retries=0, timeout_s=2) as client:
        result = generate_qa(TOWER, client)
    assert result.qa is None and "ConnectError" in result.problems[0]


def test_build_messages_cuts_the_page() -> None:
    concept = Concept(id="x", name="X", page="word " * 10_000)
    (_, user) = build_messages(concept, max_page_chars=100)
    assert len(user["content"]) == 1  # no image part without an image
    assert len(user["content"][0]["text"]) < 200


def test_iter_concepts_reads_files_and_reports_bad_lines(tmp_path: Path) -> None:
    (tmp_path / "p.txt").write_text(PAGE)
    (tmp_path / "t.png").write_bytes(image_bytes())
    path = write_jsonl(
        tmp_path / "c.jsonl",
        [
            {"concept": "Eiffel Tower", "page_file": "p.txt", "image": "t.png"},
            {"concept": "Big Ben", "page": "A clock tower."},
            {"concept": "Louvre"},
        ],
    )
    concepts = iter_concepts(path)
    first = next(concepts)
    assert first.page == PAGE and first.image == image_bytes() and first.id == "c-0"
    assert next(concepts).page == "A clock tower."
    with pytest.raises(ValueError, match=r"row 2: field 'page_file': missing"):
        next(concepts)


def test_cli_generate_qa(chat_server: FakeChatServer, tmp_path: Path) -> None:
    for content in (GOOD, BAD, BAD):  # concept 1 accepted; concept 2 rejected twice
        chat_server.reply(content)
    concepts = write_jsonl(
        tmp_path / "c.jsonl",
        [
            {"id": "a", "concept": "Eiffel Tower", "page": PAGE},
            {"id": "b", "concept": "Eiffel Tower", "page": PAGE},
        ],
    )
    out, rejected = tmp_path / "qa.parquet", tmp_path / "rejected.jsonl"
    args = ["data", "generate-qa", str(concepts), str(out), "--base-url", chat_server.url,
            "--model", "m", "--rejected", str(rejected),
            "--api-key-env", "MMSR_TEST_KEY"]  # fmt: skip
    env = {"MMSR_TEST_KEY": KEY, "PATH": "/usr/bin:/bin"}
    proc = subprocess.run(
        [sys.executable, "-m", "mmsr.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == {"accepted": 1, "rejected": 1}
    (sample,) = load_samples(out)
    assert (sample.id, sample.answer, sample.extra["concept"]) == (
        "a",
        "Eiffel Tower",
        "Eiffel Tower",
    )
    assert json.loads(rejected.read_text())["problems"] == ["names_concept"]
    assert KEY not in proc.stderr + proc.stdout
    assert chat_server.headers[0]["Authorization"] == f"Bearer {KEY}"


def test_cli_generate_qa_fails_when_all_rejected(
    chat_server: FakeChatServer, tmp_path: Path
) -> None:
    chat_server.raw(401, '{"error": "bad key"}')  # a client error: no retry, concept rejected
    concepts = write_jsonl(tmp_path / "c.jsonl", [{"concept": "Eiffel Tower", "page": PAGE}])
    args = ["data", "generate-qa", str(concepts), str(tmp_path / "o.parquet"),
            "--base-url", chat_server.url, "--model", "m"]  # fmt: skip
    proc = subprocess.run(
        [sys.executable, "-m", "mmsr.cli", *args], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 1
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == {"accepted": 0, "rejected": 1}
    assert len(chat_server.requests) == 1
