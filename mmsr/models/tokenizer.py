"""The tiny model's vocabulary: a byte-level BPE trained on given text, Qwen2-VL style.

What it is: ``train_tokenizer(texts, ...)`` returns a ``PreTrainedTokenizerFast`` that works
like Qwen2's tokenizer — NFC normalisation, Qwen's pre-tokenisation regex (digits split one by
one), byte-level BPE, the Qwen2-VL special tokens and a chat template that renders exactly as
Qwen2-VL's. The special tokens take the first ids (0..13, in Qwen's order), so their ids do
not depend on the training text. Protocol tags (``<reason>``, ``<answer>`` …) are normal text.

Atomic tokens: every entity name and answer value of the offline world must be ONE
token, so that the tiny model can copy it out of a result list. They are added tokens that are
not special (they decode as text and the model may generate them), matched before BPE and only
as whole words (``single_word``): "Paris" in "<answer>Paris</answer>" is one token, "Parisian"
is not touched. Choice on spaces: an atomic token never holds a leading space; " Paris" is
encoded as " " + "Paris". So an entity has one id in every context (after a space, after a
tag, at the start of a line) — the copy drills then teach one id per entity, not two.
Atomic strings are cut out of the training text before BPE training, so that no merges are
spent on words the BPE will never see. Refused as atomic: strings with surrounding white space,
special tokens, or a word of a protocol tag ("answer", "img" …: it would split every tag).

What it is not: the real Qwen vocabulary (see ``tests/test_qwen_ids.py`` for id compatibility
with it), nor a place for chat rendering logic (``mmsr.models.chat_encoder``).
"""

from __future__ import annotations

import logging
import re
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Sequence

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers
from tokenizers import trainers as bpe_trainers
from transformers import PreTrainedTokenizerBase, PreTrainedTokenizerFast

from mmsr.protocol.actions import (
    ANSWER_OPEN,
    IMAGE_SEARCH_TAG,
    INFORMATION_OPEN,
    REASON_OPEN,
    TEXT_SEARCH_OPEN,
)

logger = logging.getLogger(__name__)

ENDOFTEXT = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
VISION_START = "<|vision_start|>"
VISION_END = "<|vision_end|>"
VISION_PAD = "<|vision_pad|>"
IMAGE_PAD = "<|image_pad|>"
VIDEO_PAD = "<|video_pad|>"

# Qwen2-VL's special tokens in Qwen's order (151643 … 151656 in the real vocabulary).
SPECIAL_TOKENS: tuple[str, ...] = (
    ENDOFTEXT,
    IM_START,
    IM_END,
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    VISION_START,
    VISION_END,
    VISION_PAD,
    IMAGE_PAD,
    VIDEO_PAD,
)

# Qwen2's pre-tokenisation pattern (as in its tokenizer.json): single digits, words with one
# optional leading non-letter, punctuation runs, newlines, spaces.
QWEN_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)

DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant."

_PROTOCOL_TAGS = (REASON_OPEN, ANSWER_OPEN, TEXT_SEARCH_OPEN, IMAGE_SEARCH_TAG, INFORMATION_OPEN)
_TAG_WORDS = frozenset(re.findall(r"[A-Za-z0-9]+", "".join(_PROTOCOL_TAGS)))

# Renders like Qwen2-VL's template: a default system turn when the first message is not one,
# ``<|im_start|>role\n…<|im_end|>\n`` per message, images as vision_start/image_pad/vision_end
# (content given as a string, or as a list of {"type": "text"|"image"} items), and the
# generation prompt ``<|im_start|>assistant\n``. No whitespace control: every newline is data.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\n" + DEFAULT_SYSTEM_PROMPT + "<|im_end|>\n"
    "{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for item in message['content'] %}"
    "{% if item['type'] == 'image' or 'image' in item or 'image_url' in item %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif 'text' in item %}{{ item['text'] }}"
    "{% endif %}"
    "{% endfor %}{% endif %}"
    "<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _base_tokenizer() -> Tokenizer:
    """An untrained byte-level BPE with Qwen2's normaliser, pre-tokeniser and decoder."""
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    return tok


def _atomic_added_tokens(atomic_tokens: Iterable[str]) -> list[AddedToken]:
    """Validated, NFC-normalised, deduplicated and sorted (so that ids do not depend on order)."""
    names: set[str] = set()
    for raw in atomic_tokens:
        name = unicodedata.normalize("NFC", raw)
        if not name or name != name.strip():
            raise ValueError(f"atomic token {raw!r} is empty or has surrounding white space")
        if any(special in name for special in SPECIAL_TOKENS):
            raise ValueError(f"atomic token {raw!r} contains a special token")
        if name in _TAG_WORDS:
            # it would match inside "<answer>" etc. and change how every tag is tokenised
            raise ValueError(f"atomic token {raw!r} is a word of a protocol tag")
        names.add(name)
    return [
        AddedToken(name, single_word=True, normalized=True, special=False) for name in sorted(names)
    ]


def _without_atomic(texts: Iterable[str], atomic: list[AddedToken]) -> Iterator[str]:
    """Yield the pieces of each text between atomic-token matches.

    The matching is the tokenizer's own (a word-level splitter holding the same added tokens),
    so what is cut here is exactly what the final tokenizer will never hand to the BPE.
    """
    splitter = Tokenizer(models.WordLevel({"[UNK]": 0}, unk_token="[UNK]"))
    splitter.normalizer = normalizers.NFC()
    splitter.add_tokens(atomic)
    for text in texts:
        if not atomic:
            yield text
            continue
        normalized = unicodedata.normalize("NFC", text)
        encoding = splitter.encode(normalized, add_special_tokens=False)
        for token_id, (start, end) in zip(encoding.ids, encoding.offsets, strict=True):
            if token_id == 0 and end > start:
                yield normalized[start:end]


def train_tokenizer(
    texts: Iterable[str],
    vocab_size: int = 6000,
    atomic_tokens: Iterable[str] = (),
    *,
    min_frequency: int = 2,
) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE on ``texts`` and add ``atomic_tokens`` as single tokens.

    ``vocab_size`` counts the special tokens, the 256 byte symbols and the learnt merges; the
    atomic tokens come on top (``len(tokenizer)`` is the model's vocabulary size). Training is
    deterministic: the same texts and atomic tokens give the same ids.
    """
    if vocab_size < len(SPECIAL_TOKENS) + 256:
        raise ValueError(f"vocab_size {vocab_size} is below the {len(SPECIAL_TOKENS) + 256} base")
    atomic = _atomic_added_tokens(atomic_tokens)
    tok = _base_tokenizer()
    trainer = bpe_trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_without_atomic(texts, atomic), trainer=trainer)
    tok.add_tokens(atomic)
    logger.info(
        "trained tokenizer: %d BPE tokens, %d atomic tokens",
        tok.get_vocab_size(with_added_tokens=False),
        len(atomic),
    )
    return wrap_tokenizer(tok)


def wrap_tokenizer(tok: Tokenizer) -> PreTrainedTokenizerFast:
    """A ``transformers`` tokenizer around ``tok`` with Qwen's roles for the special tokens."""
    wrapped = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=tok,
        eos_token=IM_END,
        pad_token=ENDOFTEXT,
        unk_token=None,
        bos_token=None,
        clean_up_tokenization_spaces=False,
        model_max_length=32768,
    )
    wrapped.chat_template = CHAT_TEMPLATE
    return wrapped


def token_id(tokenizer: PreTrainedTokenizerBase, token: str) -> int:
    """The id of one token of ``tokenizer``'s vocabulary; raises when it has none."""
    found = tokenizer.convert_tokens_to_ids(token)
    if not isinstance(found, int) or found == tokenizer.unk_token_id:
        raise ValueError(f"tokenizer has no {token} token")
    return found


def special_token_ids(tokenizer: PreTrainedTokenizerBase) -> dict[str, int]:
    """Ids of the Qwen2-VL special tokens in ``tokenizer``; raises if one is missing."""
    return {token: token_id(tokenizer, token) for token in SPECIAL_TOKENS}


def suppressed_token_ids(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """Special ids a policy must never sample: all but ``<|im_end|>`` and ``<|endoftext|>``.

    A sampled ``<|image_pad|>`` would ask for image features that do not exist, a sampled
    ``<|im_start|>`` would open a turn the engine did not render.
    """
    ids = special_token_ids(tokenizer)
    return [i for token, i in ids.items() if token not in (IM_END, ENDOFTEXT)]


def atomic_token_ids(tokenizer: PreTrainedTokenizerBase, names: Sequence[str]) -> list[int]:
    """The single id of each atomic token; raises when a name does not encode to one token."""
    ids = []
    for name in names:
        encoded = tokenizer.encode(name, add_special_tokens=False)
        if len(encoded) != 1:
            raise ValueError(f"{name!r} is not an atomic token (encodes to {len(encoded)} ids)")
        ids.append(int(encoded[0]))
    return ids


def added_atomic_ids(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """Sorted ids of every atomic token ``train_tokenizer`` added (the non-special added ones)."""
    return sorted(int(i) for i, t in tokenizer.added_tokens_decoder.items() if not t.special)


def text_decoder(tokenizer: PreTrainedTokenizerBase) -> Callable[[Sequence[int]], str]:
    """``decode(ids)``: the text of ``ids``, every added token (atomic or special) written as
    its own content and the pieces between them through the tokenizer's decoder.

    The byte-level decoder reads an added token's characters as byte symbols, so an atomic token
    with a character outside ASCII comes back garbled (``"Asunción"`` → ``"Asunci\\ufffdn"``): an
    answer the policy copied right would be scored wrong. Cutting at added tokens changes nothing
    else: byte-level decoding maps each token to its own bytes, so the pieces join exactly.
    """
    added = {int(i): str(t.content) for i, t in tokenizer.added_tokens_decoder.items()}

    def decode(ids: Sequence[int]) -> str:
        out: list[str] = []
        run: list[int] = []
        for raw in ids:
            token = int(raw)
            if token in added:
                if run:
                    out.append(str(tokenizer.decode(run, skip_special_tokens=False)))
                    run = []
                out.append(added[token])
            else:
                run.append(token)
        if run:
            out.append(str(tokenizer.decode(run, skip_special_tokens=False)))
        return "".join(out)

    return decode
