"""Page summaries by an LLM behind any OpenAI-compatible chat API (paper §2.2: the first
30,000 characters of the page, at most five sentences, focused on the user's question).

The prompt is our own wording; ``load_template`` reads a replacement the user supplies. A
reasoning model's ``<think>`` block is dropped, and the summary is cut to the allowed number of
sentences even when the model writes more. Failures (HTTP, malformed or empty answers) are
``SearchError``.
"""

from __future__ import annotations

import hashlib
import re
import string
from dataclasses import dataclass
from pathlib import Path

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
_THINKING = re.compile(r"<think>.*?</think>", re.DOTALL)
FIELDS = frozenset({"query", "question", "title", "text", "sentences"})


@dataclass(frozen=True)
class Template:
    """The instruction a summary is asked with, and what names its version in the cache."""

    text: str
    version: str


DEFAULT_TEMPLATE = Template(USER_TEMPLATE, PROMPT_VERSION)


def load_template(path: str | Path) -> Template:
    """A user's summary instruction from ``path``; ``ValueError`` when it names an unknown
    field, has a stray brace or never places the page ``{text}``."""
    text = Path(path).read_text(encoding="utf-8")
    try:
        names = {name for _, name, _, _ in string.Formatter().parse(text) if name is not None}
    except ValueError as err:
        raise ValueError(f"{path}: not a usable prompt template ({err})") from None
    if names - FIELDS or "text" not in names:
        raise ValueError(
            f"{path}: a summary prompt may use only {{{'}, {'.join(sorted(FIELDS))}}} "
            f"and must use {{text}}; found {sorted(names)}"
        )
    return Template(text, "file:" + hashlib.sha256(text.encode("utf-8")).hexdigest()[:16])


def strip_thinking(text: str) -> str:
    """``text`` without a reasoning model's ``<think>…</think>`` (or what precedes a lone
    ``</think>``, when the server dropped the opening tag)."""
    text = _THINKING.sub("", text)
    return text.rsplit("</think>", 1)[-1].strip()


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
        template: Template = DEFAULT_TEMPLATE,
        thinking: bool = True,
    ) -> None:
        self.caller, self.url, self.model, self.key = (
            caller,
            base_url.rstrip("/") + "/chat/completions",
            model,
            key,
        )
        self.page_chars, self.sentences, self.max_tokens = page_chars, sentences, max_tokens
        self.cost_per_mtok_usd = cost_per_mtok_usd
        self.template, self.thinking = template, thinking

    @property
    def fingerprint(self) -> str:
        """Changes whenever a summary for the same page and question could change."""
        thinking = "" if self.thinking else "|no-thinking"
        return f"{self.model}|{self.template.version}|{self.page_chars}|{self.sentences}{thinking}"

    def summarize(self, request: SummaryRequest) -> str:
        prompt = self.template.text.format(
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
        if not self.thinking:  # vLLM and SGLang pass this to the chat template
            payload["chat_template_kwargs"] = {"enable_thinking": False}
        headers = {} if self.key is None else {"Authorization": f"Bearer {self.key.reveal()}"}
        body = self.caller.json("POST", self.url, json=payload, headers=headers)
        self._count_tokens(body)
        try:
            content = body["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            raise SearchError("llm returned a body without a message") from None
        if not isinstance(content, str) or not strip_thinking(content):
            raise SearchError("llm returned an empty summary")
        return cut_sentences(strip_thinking(content), self.sentences)

    def _count_tokens(self, body: object) -> None:
        usage = body.get("usage") if isinstance(body, dict) else None
        if not isinstance(usage, dict):
            return
        tokens = sum(
            v for k in ("prompt_tokens", "completion_tokens") if isinstance(v := usage.get(k), int)
        )
        self.caller.stats.add(tokens=tokens, cost_usd=tokens * self.cost_per_mtok_usd / 1e6)
