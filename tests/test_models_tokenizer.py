"""The tiny tokenizer: Qwen special tokens, atomic entity tokens, determinism, chat template."""

from __future__ import annotations

import pytest
from tiny_models import ENTITIES, corpus, tokenizer

from mmsr.models import (
    SPECIAL_TOKENS,
    atomic_token_ids,
    special_token_ids,
    suppressed_token_ids,
    text_decoder,
    train_tokenizer,
)


def _tokens(text: str) -> list[str]:
    tok = tokenizer()
    return list(tok.convert_ids_to_tokens(tok.encode(text, add_special_tokens=False)))


def test_special_tokens_take_the_first_ids_in_qwen_order() -> None:
    ids = special_token_ids(tokenizer())
    assert list(ids) == list(SPECIAL_TOKENS)
    assert list(ids.values()) == list(range(len(SPECIAL_TOKENS)))
    tok = tokenizer()
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>"


def test_special_tokens_are_single_ids_in_text() -> None:
    tok = tokenizer()
    ids = tok.encode("<|im_start|>user\nhi<|im_end|>", add_special_tokens=False)
    assert ids[0] == 1 and ids[-1] == 2


def test_answer_tag_around_an_entity_gives_its_atomic_id() -> None:
    tok = tokenizer()
    (paris,) = atomic_token_ids(tok, ["Paris"])
    ids = tok.encode("<answer>Paris</answer>", add_special_tokens=False)
    assert paris in ids
    assert tok.decode(ids) == "<answer>Paris</answer>"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # after a space: the space is its own token, the name keeps its one id
        ("capital is Paris.", ["Ġ", "Paris", "."]),
        # names with spaces, apostrophes, hyphens, digits and accents are still one token
        ("1. New York\n2. Côte d'Ivoire", ["Ġ", "New York", "Ċ", "2", ".", "Ġ", "Côte d'Ivoire"]),
        ("see R2-D2!", ["Ġ", "R2-D2", "!"]),
        ("in São Tomé", ["Ġ", "São Tomé"]),
    ],
)
def test_atomic_tokens_in_context(text: str, expected: list[str]) -> None:
    tokens = _tokens(text)
    joined = "|".join(tokens)
    assert "|".join(expected) in joined, tokens


def test_atomic_tokens_only_match_whole_words() -> None:
    # "Zorblax" is atomic, "Zorblaxian" and "aZorblax" are other words
    assert "Zorblax" not in _tokens("Zorblaxian")
    assert "Zorblax" not in _tokens("aZorblax")
    assert "Zorblax" in _tokens("Zorblax's")


def test_every_atomic_token_is_one_non_special_id_that_decodes_to_itself() -> None:
    tok = tokenizer()
    ids = atomic_token_ids(tok, ENTITIES)
    assert len(set(ids)) == len(ENTITIES)
    assert all(i >= len(SPECIAL_TOKENS) for i in ids)
    for name, token_id in zip(ENTITIES, ids, strict=True):
        # skip_special_tokens must keep it: the model generates entity names as text
        assert tok.decode([token_id], skip_special_tokens=True) == name


def test_a_name_that_is_not_atomic_is_reported() -> None:
    with pytest.raises(ValueError, match="not an atomic token"):
        atomic_token_ids(tokenizer(), ["Atlantis"])


def test_atomic_text_is_not_learnt_by_the_bpe() -> None:
    # "Zorblax" appears 20 times in the corpus but is cut out before training
    vocab = tokenizer().backend_tokenizer.get_vocab(with_added_tokens=False)
    assert not [t for t in vocab if "Zorbl" in t]


def test_training_is_deterministic_and_independent_of_atomic_order() -> None:
    a = train_tokenizer(corpus(), vocab_size=500, atomic_tokens=ENTITIES)
    b = train_tokenizer(list(corpus()), vocab_size=500, atomic_tokens=reversed(ENTITIES))
    assert a.backend_tokenizer.to_str() == b.backend_tokenizer.to_str()
    c = train_tokenizer(corpus()[:3], vocab_size=500, atomic_tokens=ENTITIES)
    assert a.backend_tokenizer.to_str() != c.backend_tokenizer.to_str()


def test_vocab_size_bounds_the_bpe_and_atomic_tokens_come_on_top() -> None:
    tok = train_tokenizer(corpus(), vocab_size=400, atomic_tokens=ENTITIES)
    assert tok.backend_tokenizer.get_vocab_size(with_added_tokens=False) <= 400
    assert len(tok) == tok.backend_tokenizer.get_vocab_size(with_added_tokens=False) + len(ENTITIES)


@pytest.mark.parametrize(
    "bad",
    [" Paris", "Paris ", "", "a<|im_end|>b", "answer", "img"],
    ids=["lead", "trail", "empty", "special", "tag_word", "tag_word2"],
)
def test_bad_atomic_tokens_are_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        train_tokenizer(corpus(), vocab_size=400, atomic_tokens=[bad])


def test_chat_template_renders_qwen2_vl_format() -> None:
    messages = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Q?"}]},
        {"role": "assistant", "content": "A."},
    ]
    text = tokenizer().apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert text == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>Q?<|im_end|>\n"
        "<|im_start|>assistant\nA.<|im_end|>\n<|im_start|>assistant\n"
    )
    system_first = [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}]
    text = tokenizer().apply_chat_template(system_first, tokenize=False)
    assert text == "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n"


def test_suppressed_ids_are_the_specials_a_turn_may_not_emit() -> None:
    ids = special_token_ids(tokenizer())
    suppressed = suppressed_token_ids(tokenizer())
    assert ids["<|image_pad|>"] in suppressed and ids["<|im_start|>"] in suppressed
    assert ids["<|im_end|>"] not in suppressed and ids["<|endoftext|>"] not in suppressed
    assert len(suppressed) == len(SPECIAL_TOKENS) - 2


def test_text_decoder_writes_atomic_tokens_outside_ascii_as_themselves() -> None:
    """The byte-level decoder garbles a one-word atomic token with an accent ("Asunción"); the
    policies decode with ``text_decoder``, which writes every added token as its content."""
    values = ["Asunción", "Bogotá", "Tórshavn", "Hagåtña", "Paris"]
    tok = train_tokenizer(corpus(), vocab_size=400, atomic_tokens=[*ENTITIES, *values])
    decode = text_decoder(tok)
    for value in values:
        text = f"<reason>The results say X capital: {value}.</reason><answer>{value}</answer>"
        ids = tok.encode(text, add_special_tokens=False)
        assert atomic_token_ids(tok, [value])[0] in ids
        assert decode(ids) == text
    # anything else decodes exactly as the tokenizer's own decode
    for text in [*corpus(), "<|im_start|>assistant\nCôte d'Ivoire, São Tomé<|im_end|>"]:
        ids = tok.encode(text, add_special_tokens=False)
        assert decode(ids) == tok.decode(ids, skip_special_tokens=False)
