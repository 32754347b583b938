"""An LLM answer judge over any OpenAI-compatible chat API, with a persistent verdict cache.

The prompt (``judge_prompt.txt``) is our own statement of the paper's judging rules. The reply
must end with a line ``VERDICT: CORRECT`` or ``VERDICT: INCORRECT``; anything else raises
``JudgeError`` so that an unusable reply is recorded as such and never counted correct.
Verdicts are cached in SQLite, keyed by the judge model, the prompt version, the question, the
prediction and the golds.
"""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path

from mmsr.chat_client import ChatClient

PROMPT_VERSION = "mmsr-judge-v1"
JUDGE_RULES = (Path(__file__).parent / "judge_prompt.txt").read_text(encoding="utf-8")

_VERDICT = re.compile(r"^\s*VERDICT:\s*(CORRECT|INCORRECT)\s*\.?\s*$", re.IGNORECASE | re.MULTILINE)


class JudgeError(RuntimeError):
    """The judge's reply had no single, clear verdict."""


def parse_verdict(reply: str) -> bool:
    """The verdict of the reply's verdict line; ``JudgeError`` unless there is exactly one."""
    verdicts = {m.upper() for m in _VERDICT.findall(reply or "")}
    if len(verdicts) != 1:
        found = "no verdict line" if not verdicts else "conflicting verdicts"
        raise JudgeError(f"unparseable judge reply ({found})")
    return verdicts == {"CORRECT"}


class VerdictCache:
    """Verdicts in a SQLite file (WAL: safe for several processes)."""

    def __init__(self, path: str | Path) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), check_same_thread=False, timeout=30)
        self._lock = threading.Lock()
        with self._lock, self._db:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS verdicts (key TEXT PRIMARY KEY, correct INTEGER)"
            )

    def get(self, key: str) -> bool | None:
        with self._lock:
            row = self._db.execute("SELECT correct FROM verdicts WHERE key = ?", (key,)).fetchone()
        return None if row is None else bool(row[0])

    def put(self, key: str, correct: bool) -> None:
        with self._lock, self._db:
            self._db.execute("INSERT OR REPLACE INTO verdicts VALUES (?, ?)", (key, int(correct)))


class LLMJudge:
    """``AnswerJudge`` through a chat model; greedy, cached, strict about its verdicts."""

    def __init__(self, client: ChatClient, cache: VerdictCache | None = None) -> None:
        self.client, self.cache = client, cache
        self.hits = 0
        self.misses = 0

    def _key(self, question: str, prediction: str, golds: Sequence[str]) -> str:
        payload = [self.client.model, PROMPT_VERSION, question, prediction, sorted(golds)]
        return hashlib.sha256(json.dumps(payload, ensure_ascii=False).encode()).hexdigest()

    def judge(self, question: str, prediction: str, golds: Sequence[str]) -> bool:
        key = self._key(question, prediction, golds)
        if self.cache is not None and (cached := self.cache.get(key)) is not None:
            self.hits += 1
            return cached
        self.misses += 1
        references = json.dumps(list(golds), ensure_ascii=False)
        user = f"Question: {question}\nReference answers: {references}\nPrediction: {prediction}"
        messages = [{"role": "system", "content": JUDGE_RULES}, {"role": "user", "content": user}]
        verdict = parse_verdict(
            self.client.complete(messages, temperature=0.0, max_tokens=256).text
        )
        if self.cache is not None:
            self.cache.put(key, verdict)
        return verdict
