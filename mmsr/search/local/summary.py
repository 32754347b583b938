"""Extractive summaries: the sentences of a page most relevant to a query and a question.

Pure functions on strings. A sentence scores one point per distinct query word it contains and
half a point per distinct question word (stop words ignored); the best sentences are kept until
``max_chars``, shown in page order (``order="page"``) or best first (``order="relevance"``: the
sentences with the most query words lead, the shortest first among them, so a line that states
the asked thing comes before prose that mentions the same words — as in a search engine's
answer snippet or an LLM summary written for the query). A page with no matching sentence is
summarised by its lead.
Not here: LLM summaries (the web backends).

>>> summarize("Paris is big. The Eiffel Tower is in Paris. It rains.", "eiffel tower", max_chars=60)
'The Eiffel Tower is in Paris.'
>>> summarize("Peru capital: Lima. Peru region: Americas.", "peru region", order="relevance")
'Peru region: Americas. Peru capital: Lima.'
"""

from __future__ import annotations

import re

# Split after . ! ? (and closing quotes/brackets) when white space and a capital, digit or
# quote follow; crude on abbreviations, which is fine for a summary.
_SENTENCE_END = re.compile(r"(?:(?<=[.!?])|(?<=[.!?][\"')\]]))\s+(?=[\"'(\[]?[A-Z0-9])")
# A piece that ends in one of these abbreviations did not end a sentence: "St. George's" is
# one place, not two sentences.
_ABBREVIATION_END = re.compile(
    r"\b(?:St|Mt|Ft|Dr|Mr|Mrs|Ms|Jr|Sr|No|Co|Inc|Ltd|vs|Gen|Gov|Rev|Prof|Ste)\.$"
)
_WORD = re.compile(r"\w+", re.UNICODE)
STOP_WORDS = frozenset(
    [
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "by",
        "for",
        "from",
        "has",
        "have",
        "how",
        "in",
        "is",
        "it",
        "its",
        "of",
        "on",
        "or",
        "that",
        "the",
        "this",
        "to",
        "was",
        "were",
        "what",
        "when",
        "where",
        "which",
        "who",
        "whom",
        "whose",
        "why",
        "will",
        "with",
        "does",
        "did",
        "do",
        "shown",
        "image",
        "picture",
        "name",
        "called",
    ]
)
QUESTION_WEIGHT = 0.5
SUMMARY_ORDERS = ("page", "relevance")


def split_sentences(text: str) -> list[str]:
    """``text`` cut into sentences, white space collapsed, empty pieces dropped."""
    flat = " ".join(text.split())
    out: list[str] = []
    for piece in _SENTENCE_END.split(flat):
        piece = piece.strip()
        if not piece:
            continue
        if out and _ABBREVIATION_END.search(out[-1]):
            out[-1] = f"{out[-1]} {piece}"
        else:
            out.append(piece)
    return out


def content_words(text: str) -> set[str]:
    """Lower-cased words of ``text`` without stop words."""
    return {w for w in _WORD.findall(text.lower()) if w not in STOP_WORDS}


def summarize(
    text: str,
    query: str,
    question: str | None = None,
    *,
    max_chars: int = 500,
    order: str = "page",
) -> str:
    """At most ``max_chars`` characters of ``text``'s sentences that best match the query, in
    page order or (``order="relevance"``) by query words, then length, then page order."""
    if order not in SUMMARY_ORDERS:
        raise ValueError(f"summary order must be one of {SUMMARY_ORDERS}, got {order!r}")
    sentences = split_sentences(text)
    if not sentences:
        return ""
    query_words = content_words(query)
    question_words = content_words(question or "") - query_words
    scores, query_hits = [], []
    for index, sentence in enumerate(sentences):
        words = content_words(sentence)
        query_hits.append(len(words & query_words))
        score = query_hits[-1] + QUESTION_WEIGHT * len(words & question_words)
        scores.append((-score, index))
    if all(score == 0 for score, _ in scores):
        ranked = list(range(len(sentences)))  # nothing matches: the lead of the page
    else:
        ranked = [index for score, index in sorted(scores) if score < 0]
    chosen: list[int] = []
    used = 0
    for index in ranked:
        cost = len(sentences[index]) + (1 if chosen else 0)
        if used + cost <= max_chars:
            chosen.append(index)
            used += cost
    if not chosen:  # even the best sentence is too long: cut it
        return _cut(sentences[ranked[0]], max_chars)
    if order == "relevance":
        shown = sorted(chosen, key=lambda i: (-query_hits[i], len(sentences[i]), i))
    else:
        shown = sorted(chosen)
    return " ".join(sentences[i] for i in shown)


def _cut(sentence: str, max_chars: int) -> str:
    if len(sentence) <= max_chars:
        return sentence
    head = sentence[: max(max_chars - 1, 0)].rsplit(" ", 1)[0]
    return head + "…"
