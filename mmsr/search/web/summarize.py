"""Page summaries by an LLM behind any OpenAI-compatible chat API (paper §2.2: the first
30,000 characters of the page, at most five sentences, focused on the user's question).

The prompt is our own wording. The summary is cut to the allowed number of sentences even
when the model writes more. Failures (HTTP, malformed or empty answers) are ``SearchError``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from mmsr.search.base import SearchError
from mmsr.search.transport import ApiCaller, Secret

PROMPT_VERSION = "v1"
SYSTEM_PROMPT = (
    "You condense web pages for a research assistant. Write plain prose, no lists, no "
    "headings, no preamble. Use only facts stated on the page."
)
USER_TEMPLATE = (
    "The assistant searched the web for: {query}\n"
    "The question it is trying to answer: {question}\n\n"
    "Page title: {title}\n"
    "Page text (possibly cut short):\n<<<\n{text}\n>>>\n\n"
    "In at most {sentences} sentences, give the information on this page that helps answer "
    "the question: names, dates, numbers and other specifics. If the page does not help, "
    "say in one sentence what the page is about."
)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


@dataclass(frozen=True)
class SummaryRequest:
    """What a summary is made from."""

    query: str
    question: str
    title: str
    text: str


def cut_sentences(text: str, limit: int) -> str:
    """The first ``limit`` sentences of ``text`` (sentence ends: . ! ? then white space)."""
    parts = _SENTENCE_END.split(text.strip())
    return " ".join(parts[:limit]).strip()


class ChatSummarizer:
    """Summaries through ``POST {base_url}/chat/completions``."""

    def __init__(
        self,
        caller: ApiCaller,
        *,
        base_url: str,
        model: str,
        key: Secret | None,
        page_chars: int,
        sentences: int,
        max_tokens: int,
        cost_per_mtok_usd: float = 0.0,
    ) -> None:
        self.caller, self.url, self.model, self.key = (
            caller,
            base_url.rstrip("/") + "/chat/completions",
            model,
            key,
        )
        self.page_chars, self.sentences, self.max_tokens = page_chars, sentences, max_tokens
        self.cost_per_mtok_usd = cost_per_mtok_usd

    @property
    def fingerprint(self) -> str:
        """Changes whenever a summary for the same page and question could change."""
        return f"{self.model}|{PROMPT_VERSION}|{self.page_chars}|{self.sentences}"

    def summarize(self, request: SummaryRequest) -> str:
        prompt = USER_TEMPLATE.format(
            query=request.query,
            question=request.question or request.query,
            title=request.title or "(none)",
            text=request.text[: self.page_chars],
            sentences=self.sentences,
        )
        payload = {
            "model": self.model,
            "messages": [
                {"role": "system", "content": SYSTEM_PROMPT},
                {"role": "user", "content": prompt},
            ],
            "temperature": 0,
            "max_tokens": self.max_tokens,
        }
        headers = {} if self.key is None else {"Authorization": f"Bearer {self.key.reveal()}"}
        body = self.caller.json("POST", self.url, json=payload, headers=headers)
        self._count_tokens(body)
        try:
            content = body["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            raise SearchError("llm returned a body without a message") from None
        if not isinstance(content, str) or not content.strip():
            raise SearchError("llm returned an empty summary")
        return cut_sentences(content, self.sentences)

    def _count_tokens(self, body: object) -> None:
        usage = body.get("usage") if isinstance(body, dict) else None
        if not isinstance(usage, dict):
            return
        tokens = sum(
            v for k in ("prompt_tokens", "completion_tokens") if isinstance(v := usage.get(k), int)
        )
        self.caller.stats.add(tokens=tokens, cost_usd=tokens * self.cost_per_mtok_usd / 1e6)
