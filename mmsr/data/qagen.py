"""Question–answer generation from (concept, image, page text) with an LLM (paper §3).

The model gets our own prompt (``prompts/qa_generation.txt``) stating the paper's four rules,
the concept, the page (cut to ``max_page_chars``) and the image as a data URL, and replies with
``{"question", "answer"}``. Every reply is checked against the rules before it is kept:

* ``answer_lacks_concept``: the answer must contain the concept (rule 1);
* ``bad_opening``: the question must start with Who / What / Where (rule 2);
* ``names_concept`` / ``names_answer`` / ``leaks_page``: the question must not say the concept,
  any alias or the answer, nor copy a run of ``LEAK_NGRAM`` words from the page (rule 3);
* ``unnatural``: one sentence of 4–30 words ending in "?", no talk of pages or concepts (rule 4);
* ``unparseable``: the reply is not such a JSON object.

These checks are mechanical stand-ins for the rules: they catch clear breaches, not every one.
"""

from __future__ import annotations

import base64
import json
import logging
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from mmsr.chat_client import ChatClient, ChatError
from mmsr.data.readers import jsonl_rows
from mmsr.data.schema import DataError, FieldError, optional_str, require_str, string_list
from mmsr.rewards import normalize_answer
from mmsr.types import Sample

logger = logging.getLogger(__name__)

OPENINGS = frozenset({"who", "what", "where", "who's", "what's", "where's"})
LEAK_NGRAM = 5  # a question sharing this many consecutive words with the page leaks it
_META_WORDS = re.compile(
    r"\b((the|this|that) (concept|page|web page|article|passage|text)|according to)\b",
    re.IGNORECASE,
)
_JSON_OBJECT = re.compile(r"\{.*\}", re.DOTALL)


@dataclass(frozen=True)
class Concept:
    """One input of generation: a concept, its page text and its image."""

    id: str
    name: str
    page: str
    image: bytes | None = field(default=None, repr=False)
    image_path: str | None = None
    aliases: tuple[str, ...] = ()


@dataclass(frozen=True)
class GeneratedQA:
    question: str
    answer: str


@dataclass(frozen=True)
class QAResult:
    """The outcome for one concept: the accepted pair, or the problems of the last attempt."""

    concept: Concept
    qa: GeneratedQA | None
    problems: tuple[str, ...]
    attempts: int


def system_prompt() -> str:
    return resources.files("mmsr.data").joinpath("prompts/qa_generation.txt").read_text("utf-8")


def _mime(data: bytes) -> str:
    if data.startswith(b"\x89PNG"):
        return "image/png"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data[:3] == b"GIF":
        return "image/gif"
    return "image/jpeg"


def build_messages(concept: Concept, *, max_page_chars: int = 8000) -> list[dict[str, Any]]:
    """The chat messages asking for one question about ``concept``."""
    text = f"Concept: {concept.name}\n\nWeb page:\n{concept.page[:max_page_chars]}"
    content: list[dict[str, Any]] = [{"type": "text", "text": text}]
    if concept.image is not None:
        url = f"data:{_mime(concept.image)};base64,{base64.b64encode(concept.image).decode()}"
        content.append({"type": "image_url", "image_url": {"url": url}})
    return [
        {"role": "system", "content": system_prompt()},
        {"role": "user", "content": content},
    ]


def parse_reply(text: str) -> GeneratedQA | None:
    """The ``{"question", "answer"}`` object in a reply (code fences allowed), or ``None``."""
    match = _JSON_OBJECT.search(text)
    if match is None:
        return None
    try:
        data = json.loads(match.group(0))
    except json.JSONDecodeError:
        return None
    if not isinstance(data, dict):
        return None
    question, answer = data.get("question"), data.get("answer")
    if not isinstance(question, str) or not isinstance(answer, str):
        return None
    question, answer = " ".join(question.split()), " ".join(answer.split())
    return GeneratedQA(question, answer) if question and answer else None


def _contains(haystack: str, needle: str) -> bool:
    """Whether normalised ``needle`` occurs in normalised ``haystack`` on word boundaries."""
    n = normalize_answer(needle)
    return bool(n) and f" {n} " in f" {normalize_answer(haystack)} "


def _shares_ngram(question: str, page: str, n: int) -> bool:
    q = normalize_answer(question).split()
    if len(q) < n:
        return False
    page_norm = f" {normalize_answer(page)} "
    return any(f" {' '.join(q[i : i + n])} " in page_norm for i in range(len(q) - n + 1))


def rule_violations(qa: GeneratedQA, concept: Concept) -> list[str]:
    """The rules ``qa`` breaks for ``concept`` (empty when it is acceptable)."""
    problems: list[str] = []
    if not _contains(qa.answer, concept.name):
        problems.append("answer_lacks_concept")
    words = qa.question.split()
    first = words[0].strip("\"'“‘(,?.!:;").lower() if words else ""
    if first not in OPENINGS:
        problems.append("bad_opening")
    if any(_contains(qa.question, name) for name in (concept.name, *concept.aliases)):
        problems.append("names_concept")
    elif _contains(qa.question, qa.answer):
        problems.append("names_answer")
    if _shares_ngram(qa.question, concept.page, LEAK_NGRAM):
        problems.append("leaks_page")
    if (
        not qa.question.endswith("?")
        or qa.question.count("?") != 1
        or not 4 <= len(words) <= 30
        or _META_WORDS.search(qa.question)
    ):
        problems.append("unnatural")
    return problems


def generate_qa(
    concept: Concept, client: ChatClient, *, attempts: int = 2, temperature: float = 0.7
) -> QAResult:
    """Ask ``client`` for a pair for ``concept`` until one passes the checks or attempts run
    out. An API failure (after the client's own retries) ends the attempts for this concept."""
    problems: tuple[str, ...] = ()
    messages = build_messages(concept)
    for attempt in range(1, attempts + 1):
        try:
            reply = client.complete(messages, temperature=temperature).text
        except ChatError as err:
            return QAResult(concept, None, (f"api_error: {err}",), attempt)
        qa = parse_reply(reply)
        if qa is None:
            problems = ("unparseable",)
            continue
        problems = tuple(rule_violations(qa, concept))
        if not problems:
            return QAResult(concept, qa, (), attempt)
        logger.debug("rejected for %s: %s (%s)", concept.id, qa, ", ".join(problems))
    return QAResult(concept, None, problems, attempts)


def qa_sample(result: QAResult) -> Sample:
    """An accepted result as a ``Sample`` (the concept's name and aliases as extra golds)."""
    if result.qa is None:
        raise ValueError(f"{result.concept.id}: no accepted question")
    golds = [a for a in (result.concept.name, *result.concept.aliases) if a != result.qa.answer]
    return Sample(
        id=result.concept.id,
        question=result.qa.question,
        answer=result.qa.answer,
        aliases=tuple(dict.fromkeys(golds)),
        image=result.concept.image,
        image_path=result.concept.image_path,
        source="mmsr_generated",
        extra={"concept": result.concept.name},
    )


def iter_concepts(path: Path | str) -> Iterator[Concept]:
    """Concepts from JSONL: ``{"concept", "page" | "page_file", "image"?, "id"?, "aliases"?}``;
    file names are relative to the JSONL's folder. Bad lines raise ``DataError``."""
    path = Path(path)
    for raw in jsonl_rows(path):
        if raw.record is None:
            raise DataError(path, raw.index, None, raw.error or "unreadable")
        try:
            yield _concept(raw.record, path.parent, f"{path.stem}-{raw.index}")
        except FieldError as err:
            raise DataError(path, raw.index, err.field, err.message) from None


def _concept(record: dict[str, Any], base: Path, default_id: str) -> Concept:
    name = require_str(record, "concept")
    page = optional_str(record, "page")
    if page is None:
        page_file = require_str(record, "page_file")
        try:
            page = (base / page_file).read_text(encoding="utf-8")
        except OSError as err:
            raise FieldError("page_file", f"cannot read ({err.strerror})") from None
    image_name = optional_str(record, "image")
    image = None
    if image_name is not None:
        try:
            image = (base / image_name).read_bytes()
        except OSError as err:
            raise FieldError("image", f"cannot read ({err.strerror})") from None
    return Concept(
        id=optional_str(record, "id") or default_id,
        name=name,
        page=page,
        image=image,
        image_path=str(base / image_name) if image_name else None,
        aliases=tuple(string_list(record.get("aliases"), "aliases")),
    )


def rejected_record(result: QAResult) -> dict[str, Any]:
    return {
        "id": result.concept.id,
        "concept": result.concept.name,
        "problems": list(result.problems),
        "attempts": result.attempts,
    }


def accepted(results: Sequence[QAResult]) -> list[Sample]:
    return [qa_sample(r) for r in results if r.qa is not None]
