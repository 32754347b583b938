"""LLM answer judges over any OpenAI-compatible chat API, and judge-scored rewards in batches.

Two judges share the ``AnswerJudge`` protocol of ``mmsr.rewards``:

* ``LLMJudge`` (mmsr's own): text only, a reply ending ``VERDICT: CORRECT|INCORRECT``.
* ``PaperJudge`` (the paper's protocol, §4): the question's image (when the judge model takes
  images), the question, the ground truth and the candidate answer as separate parts of the
  user turn, ``top_p`` 0.1, a verdict ``<judge>Yes</judge>`` or ``<judge>No</judge>``. Its
  system prompt is a file the user supplies, or ``PAPER_JUDGE_RULES`` (our own wording).

An unusable reply raises ``JudgeError``, never counts as correct. ``score_many`` scores a batch
of trajectories with one judge call per distinct (question, answer, golds) — failures are
recorded on the breakdown, scored 0 and counted on the judge, never raised. Verdicts may be
cached in SQLite (``VerdictCache``). Not here: the single-trajectory reward
(``mmsr.rewards.score_trajectory``) or where eval stores verdicts (``mmsr.eval.loop``).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import re
import sqlite3
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any

from mmsr.chat_client import ChatClient, image_data_url, split_endpoint
from mmsr.protocol.actions import extract_answer
from mmsr.rewards import AnswerJudge, RewardConfig, _gold_list, score_trajectory
from mmsr.types import RewardBreakdown

logger = logging.getLogger(__name__)

PROMPT_VERSION = "mmsr-judge-v1"
PAPER_PROMPT_VERSION = "paper-judge-v1"
JUDGE_STYLES = ("mmsr", "paper")
PAPER_TOP_P = 0.1
"""The paper's judge samples with ``top_p`` 0.1 (§4)."""

JUDGE_RULES = (
    "You grade answers to visual questions. You get the question, one or more reference "
    "answers (any of them may be matched) and a model's prediction. Decide whether the "
    "prediction is correct. Rules:\n"
    "1. It is correct if it means the same as any reference answer, even in other words.\n"
    "2. A more specific answer that still agrees with a reference is correct (a reference "
    '"bird", prediction "a sparrow" for the same thing).\n'
    "3. Extra details are fine as long as they are true and do not change the answer.\n"
    "4. It is wrong if it contradicts a reference or adds a claim that conflicts with it.\n"
    "5. It is wrong if it leaves out something the question explicitly asks for.\n"
    "6. Numbers must agree, in the same or an equivalent unit; a different unit without "
    "conversion is wrong.\n"
    "7. Names must refer to the same person, place or thing; a partial name is correct only "
    "when it is unambiguous.\n"
    "8. Yes/no questions need the same yes or no.\n"
    "9. Hedging between several candidates, or refusing to answer, is wrong.\n"
    "10. Judge only the prediction; ignore spelling, case and punctuation differences.\n"
    "Explain briefly, then end with exactly one last line: VERDICT: CORRECT or VERDICT: "
    "INCORRECT."
)
PAPER_JUDGE_RULES = (
    "You check whether a candidate answer to a question about an image is correct. You are "
    "given the image (when it can be shown), the question, the ground-truth answer and the "
    "candidate answer.\n"
    "\n"
    "Count the candidate as correct when it states the same fact as the ground truth, even in"
    " other words, more or less detail, another spelling or another language. A more precise "
    "answer that agrees with the ground truth is correct. Count it as wrong when it names "
    "something else, gives a different number or date, contradicts the ground truth, lists "
    "several alternatives without choosing one, or declines to answer.\n"
    "\n"
    "Reply with <judge>Yes</judge> when the candidate is correct and <judge>No</judge> when "
    "it is not. Write nothing else."
)

_VERDICT = re.compile(r"^\s*VERDICT:\s*(CORRECT|INCORRECT)\s*\.?\s*$", re.IGNORECASE | re.MULTILINE)
_JUDGE_TAG = re.compile(r"<judge>\s*(yes|no)\s*</judge>", re.IGNORECASE)


class JudgeError(RuntimeError):
    """The judge's reply had no single, clear verdict."""


def parse_verdict(reply: str) -> bool:
    """The verdict of the reply's verdict line; ``JudgeError`` unless there is exactly one."""
    verdicts = {m.upper() for m in _VERDICT.findall(reply or "")}
    if len(verdicts) != 1:
        found = "no verdict line" if not verdicts else "conflicting verdicts"
        raise JudgeError(f"unparseable judge reply ({found})")
    return verdicts == {"CORRECT"}


def parse_judge_tag(reply: str) -> bool:
    """The verdict of ``<judge>Yes</judge>`` / ``<judge>No</judge>``; ``JudgeError`` unless
    the reply holds exactly one kind.

    >>> parse_judge_tag("<judge>Yes</judge>"), parse_judge_tag("<judge> no </judge>")
    (True, False)
    """
    verdicts = {m.lower() for m in _JUDGE_TAG.findall(reply or "")}
    if len(verdicts) != 1:
        found = "no <judge> tag" if not verdicts else "conflicting <judge> tags"
        raise JudgeError(f"unparseable judge reply ({found})")
    return verdicts == {"yes"}


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
    """``AnswerJudge`` through a chat model; greedy, cached, strict about its verdicts.

    ``image`` is accepted for the protocol's sake and not shown: mmsr's judge reads text."""

    version = PROMPT_VERSION

    def __init__(self, client: ChatClient, cache: VerdictCache | None = None) -> None:
        self.client, self.cache = client, cache
        self.hits = 0
        self.misses = 0

    def _key(self, question: str, prediction: str, golds: Sequence[str]) -> str:
        payload = [self.client.model, self.version, question, prediction, sorted(golds)]
        return hashlib.sha256(json.dumps(payload, ensure_ascii=False).encode()).hexdigest()

    def judge(
        self, question: str, prediction: str, golds: Sequence[str], image: Any = None
    ) -> bool:
        key = self._key(question, prediction, golds)
        if self.cache is not None and (cached := self.cache.get(key)) is not None:
            self.hits += 1
            return cached
        self.misses += 1
        verdict = self._ask(question, prediction, golds, image)
        if self.cache is not None:
            self.cache.put(key, verdict)
        return verdict

    def _ask(self, question: str, prediction: str, golds: Sequence[str], image: Any) -> bool:
        references = json.dumps(list(golds), ensure_ascii=False)
        user = f"Question: {question}\nReference answers: {references}\nPrediction: {prediction}"
        messages = [{"role": "system", "content": JUDGE_RULES}, {"role": "user", "content": user}]
        reply = self.client.complete(messages, temperature=0.0, max_tokens=256)
        return parse_verdict(reply.text)


class PaperJudge(LLMJudge):
    """The paper's judge: image, question, ground truth and candidate as separate parts of the
    user turn, ``top_p`` 0.1, a ``<judge>Yes|No</judge>`` verdict. ``send_image=False`` for
    judge models that take text only. The cache key holds the system prompt's digest, so a
    supplied prompt never reuses the verdicts of another."""

    def __init__(
        self,
        client: ChatClient,
        cache: VerdictCache | None = None,
        *,
        system_prompt: str = "",
        send_image: bool = True,
    ) -> None:
        super().__init__(client, cache)
        self.system_prompt = system_prompt or PAPER_JUDGE_RULES
        self.send_image = send_image
        digest = hashlib.sha256(self.system_prompt.encode()).hexdigest()[:16]
        self.version = f"{PAPER_PROMPT_VERSION}:{digest}:{int(send_image)}"

    def _ask(self, question: str, prediction: str, golds: Sequence[str], image: Any) -> bool:
        parts: list[dict[str, Any]] = []
        if self.send_image and image is not None:
            parts.append({"type": "image_url", "image_url": {"url": image_data_url(image)}})
        truth = golds[0] if len(golds) == 1 else json.dumps(list(golds), ensure_ascii=False)
        parts += [
            {"type": "text", "text": f"Question: {question}"},
            {"type": "text", "text": f"Ground truth: {truth}"},
            {"type": "text", "text": f"Candidate answer: {prediction}"},
        ]
        messages: list[dict[str, Any]] = [
            {"role": "system", "content": self.system_prompt},
            {"role": "user", "content": parts},
        ]
        reply = self.client.complete(messages, temperature=0.0, top_p=PAPER_TOP_P, max_tokens=64)
        return parse_judge_tag(reply.text)


def build_judge(
    endpoint: str,
    *,
    style: str = "mmsr",
    api_key_env: str = "OPENAI_API_KEY",
    cache_path: Path | None = None,
    prompt_file: Path | None = None,
    send_image: bool = True,
) -> LLMJudge:
    """The judge at ``endpoint`` (``BASE_URL#MODEL``) in ``style`` (one of ``JUDGE_STYLES``)."""
    if style not in JUDGE_STYLES:
        raise ValueError(f"unknown judge style {style!r}; expected one of {JUDGE_STYLES}")
    base, model = split_endpoint(endpoint, None, "judge")
    client = ChatClient(base, model, api_key_env=api_key_env)
    cache = VerdictCache(cache_path) if cache_path is not None else None
    if style == "mmsr":
        return LLMJudge(client, cache)
    prompt = prompt_file.read_text(encoding="utf-8") if prompt_file is not None else ""
    return PaperJudge(client, cache, system_prompt=prompt, send_image=send_image)


@functools.cache
def shared_judge(endpoint: str) -> LLMJudge:
    """One paper-style judge per endpoint for a training process (the reward's ``judge``
    mode): its in-memory verdicts serve every step."""
    return MemoJudge(build_judge(endpoint, style="paper"))


class MemoJudge(LLMJudge):
    """A judge whose verdicts are remembered in memory, with failures counted: one call per
    distinct (question, answer, golds), however often training samples the same answer."""

    def __init__(self, inner: LLMJudge) -> None:
        super().__init__(inner.client, None)
        self.inner = inner
        self._seen: dict[tuple[str, str, tuple[str, ...]], bool] = {}
        self._lock = threading.Lock()
        self.failures = 0

    def judge(
        self, question: str, prediction: str, golds: Sequence[str], image: Any = None
    ) -> bool:
        key = (question, prediction, tuple(golds))
        with self._lock:
            if key in self._seen:
                self.hits += 1
                return self._seen[key]
        try:
            verdict = self.inner.judge(question, prediction, golds, image)
        except Exception:
            with self._lock:
                self.failures += 1
            raise
        with self._lock:
            self.misses += 1
            self._seen[key] = verdict
        return verdict


def score_many(
    turns: Sequence[Sequence[str]],
    golds: Sequence[Sequence[str]],
    questions: Sequence[str],
    reward: RewardConfig,
    *,
    judge: AnswerJudge | None = None,
    images: Sequence[Any] | None = None,
    workers: int = 8,
) -> list[RewardBreakdown]:
    """``score_trajectory`` of every trajectory; in ``judge`` mode the distinct (question,
    answer, golds) are judged first, concurrently, each once (``judge``, else the shared
    judge of ``reward.judge_endpoint``). A failed verdict is scored 0 with its error."""
    settings = asdict(reward)
    if reward.mode != "judge":
        return [score_trajectory(t, g, **settings) for t, g in zip(turns, golds, strict=True)]
    if judge is None:
        if not reward.judge_endpoint:
            raise ValueError("reward mode 'judge' needs reward.judge_endpoint (BASE_URL#MODEL)")
        judge = shared_judge(reward.judge_endpoint)
    pictures = list(images) if images is not None else [None] * len(turns)
    verdicts = _prejudge(turns, golds, questions, pictures, judge, workers)
    replay = _Replay(verdicts)
    return [
        score_trajectory(t, g, **settings, judge=replay, question=q)
        for t, g, q in zip(turns, golds, questions, strict=True)
    ]


_Key = tuple[str, str, tuple[str, ...]]


def _prejudge(
    turns: Sequence[Sequence[str]],
    golds: Sequence[Sequence[str]],
    questions: Sequence[str],
    images: Sequence[Any],
    judge: AnswerJudge,
    workers: int,
) -> dict[_Key, bool | Exception]:
    """Each distinct (question, answer, golds) judged once: its verdict or its error."""
    wanted: dict[_Key, Any] = {}
    for texts, gold, question, image in zip(turns, golds, questions, images, strict=True):
        last = texts[-1] if texts else None
        answer = extract_answer(last) if isinstance(last, str) else None
        gold_list = _gold_list(gold)
        if answer is not None and gold_list:
            wanted.setdefault((question, answer, tuple(gold_list)), image)

    def ask(item: tuple[_Key, Any]) -> bool | Exception:
        (question, answer, gold), image = item
        try:
            return bool(judge.judge(question, answer, gold, image=image))
        except Exception as err:  # the judge is the outside world: recorded, scored 0
            return err

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        results = list(pool.map(ask, wanted.items()))
    return dict(zip(wanted, results, strict=True))


class _Replay:
    """An ``AnswerJudge`` answering from verdicts already fetched (raising a fetched error)."""

    def __init__(self, verdicts: dict[_Key, bool | Exception]) -> None:
        self.verdicts = verdicts

    def judge(
        self, question: str, prediction: str, golds: Sequence[str], image: Any = None
    ) -> bool:
        found = self.verdicts[(question, prediction, tuple(golds))]
        if isinstance(found, Exception):
            raise found
        return found
