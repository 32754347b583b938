"""Shared by the veRL integration tests: the tiny tokenizer's chat encoder, search tools with
thumbnails, and scripted assistant turns as the token ids a rollout server would return."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import tiny_models

from mmsr.models import ImageProcessor, ImageProcessorConfig
from mmsr.models.chat_encoder import ChatEncoder
from mmsr.models.tokenizer import ENDOFTEXT, IM_END, suppressed_token_ids, token_id
from mmsr.policy import Generation, GenerationRequest
from mmsr.policy.local_model import ChatTurnEncoder
from mmsr.types import ImageHit, Role, TextHit

R = "<reason>r</reason>"
IMG = R + "<search><img></search>"
TXT = R + "<text_search>capital of France</text_search>"
ANSWER = R + "<answer>Paris</answer>"
QUESTION = "What is the capital of the country whose flag is shown?"
# Qwen's smart_resize between these bounds, as a real checkpoint's processor does
IMAGE_CONFIG = ImageProcessorConfig(fixed_size=None, min_pixels=56 * 56, max_pixels=112 * 112)


class Thumbs:
    """Image search: two hits with thumbnails of different sizes, one without."""

    def search(self, image: Any, k: int) -> list[ImageHit]:
        return [
            ImageHit("Flag of France", "u1", tiny_models.image((0, 0, 200), (60, 40))),
            ImageHit("no thumbnail", "u2", None),
            ImageHit("Paris", "u3", tiny_models.image((0, 200, 0), (30, 90))),
        ]


class Pages:
    def search(self, query: str, k: int, question: str | None = None) -> list[TextHit]:
        return [TextHit("Paris", "https://w.org/paris", "Paris is the capital of France.")]


def turn_encoder() -> ChatTurnEncoder:
    tok = tiny_models.tokenizer()
    encoder = ChatEncoder(tok, ImageProcessor(IMAGE_CONFIG))
    return ChatTurnEncoder(encoder, frozenset(suppressed_token_ids(tok)))


def end_ids() -> frozenset[int]:
    tok = tiny_models.tokenizer()
    return frozenset({token_id(tok, IM_END), token_id(tok, ENDOFTEXT)})


def decode(ids: Sequence[int]) -> str:
    return str(tiny_models.tokenizer().decode(list(ids), skip_special_tokens=False))


def reply_ids(encoder: ChatTurnEncoder, text: str, *, closed: bool = True) -> list[int]:
    """The ids a server returns for ``text``: the text, then ``<|im_end|>`` unless cut."""
    ids = encoder.encoder.encode_text(text)
    return [*ids, encoder.encoder.im_end_id] if closed else ids


def segments(mask: Sequence[int]) -> list[tuple[int, int]]:
    """Runs of a mask as (value, length)."""
    runs: list[tuple[int, int]] = []
    for m in mask:
        if runs and runs[-1][0] == m:
            runs[-1] = (m, runs[-1][1] + 1)
        else:
            runs.append((m, 1))
    return runs


class TokenScriptPolicy:
    """mmsr's side of a script: a token-level policy returning turn n's scripted ids, with
    ``logprob(i)`` as the log-prob of the i-th id of a turn."""

    token_level = True

    def __init__(
        self, replies: Sequence[list[int]], logprob: Callable[[int], float] = lambda i: -0.25
    ) -> None:
        self.replies, self.logprob = list(replies), logprob

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        out = []
        for request in requests:
            n = sum(t.role is Role.ASSISTANT for t in request.turns)
            ids = self.replies[n][: request.max_new_tokens]
            closed = bool(ids) and ids[-1] in end_ids()
            text = decode(ids[:-1] if closed else ids)
            logprobs = tuple(self.logprob(i) for i in range(len(ids)))
            out.append(Generation(text, tuple(ids), logprobs, "stop" if closed else "length"))
        return out
