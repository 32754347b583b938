"""The tiny model: sizes of the presets, forward with images, M-RoPE positions, seeding."""

from __future__ import annotations

import functools

import pytest
import torch
from tiny_models import conversation, image_processor, tokenizer

from mmsr.models import (
    PRESETS,
    ChatEncoder,
    TinyVLConfig,
    build_tiny_model,
    count_parameters,
    mm_token_type_ids,
    rope_position_ids,
    special_token_ids,
)


@functools.cache
def _micro():  # type: ignore[no-untyped-def]
    return build_tiny_model("micro", tokenizer(), seed=0)


def _encoded(preset: str = "micro") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    encoder = ChatEncoder(tokenizer(), image_processor(preset))
    ids, pixel_values, grid = encoder.encode_conversation(conversation())
    assert pixel_values is not None and grid is not None
    return ids[None], pixel_values, grid


def _logits(model, ids, pixel_values, grid, **kwargs) -> torch.Tensor:  # type: ignore[no-untyped-def]
    with torch.no_grad():
        return model(input_ids=ids, pixel_values=pixel_values, image_grid_thw=grid, **kwargs).logits


def test_tiny_preset_is_about_four_million_parameters_with_a_6k_vocabulary() -> None:
    model = build_tiny_model("tiny", tokenizer(), seed=0)
    hidden = PRESETS["tiny"].hidden_size
    # tied embeddings: the vocabulary costs hidden parameters per token, once
    with_6k = count_parameters(model) - len(tokenizer()) * hidden + 6000 * hidden
    assert 3_500_000 < with_6k < 5_000_000
    assert model.lm_head.weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()
    assert count_parameters(_micro()) < 250_000


def test_config_takes_vocabulary_and_special_ids_from_the_tokenizer() -> None:
    config = _micro().config
    ids = special_token_ids(tokenizer())
    assert config.get_text_config().vocab_size == len(tokenizer())
    assert config.image_token_id == ids["<|image_pad|>"]
    assert config.video_token_id == ids["<|video_pad|>"]
    assert config.vision_start_token_id == ids["<|vision_start|>"]
    assert config.vision_end_token_id == ids["<|vision_end|>"]
    assert config.get_text_config().eos_token_id == ids["<|im_end|>"]
    assert PRESETS["tiny"].tokens_per_image == 16 and PRESETS["micro"].tokens_per_image == 4


def test_forward_with_images_gives_one_feature_per_image_pad() -> None:
    model = _micro()
    ids, pixel_values, grid = _encoded()
    with torch.no_grad():
        features = model.model.get_image_features(pixel_values, grid).pooler_output
    n_pads = int((ids == model.config.image_token_id).sum())
    assert n_pads == sum(f.shape[0] for f in features) == 3 * 4
    logits = _logits(model, ids, pixel_values, grid)
    assert logits.shape == (1, ids.shape[1], len(tokenizer()))
    assert torch.isfinite(logits).all()


def test_a_missing_image_pad_is_an_error() -> None:
    ids, pixel_values, grid = _encoded()
    pads = (ids == _micro().config.image_token_id).nonzero()
    broken = ids.clone()
    broken[0, pads[0, 1]] = 100
    with pytest.raises(ValueError, match="do not match"):
        _logits(_micro(), broken, pixel_values, grid)


def test_positions_are_3d_over_all_images() -> None:
    model = _micro()
    ids, _, grid = _encoded()
    positions = rope_position_ids(model, ids, grid)
    assert positions.shape == (3, 1, ids.shape[1])
    first = int((ids[0] == model.config.image_token_id).nonzero()[0])
    # a 2x2-token image: time constant, height and width walk the grid
    block = positions[:, 0, first : first + 4]
    assert block[0].tolist() == [first] * 4
    assert block[1].tolist() == [first, first, first + 1, first + 1]
    assert block[2].tolist() == [first, first + 1, first, first + 1]
    # text after the image resumes at start + max(h, w) / merge, not at start + 4 tokens
    assert positions[0, 0, first + 4] == first + 2
    assert int(positions.max()) < ids.shape[1] - 1


def test_explicit_positions_match_the_model_and_differ_from_1d_fallback() -> None:
    model = _micro()
    ids, pixel_values, grid = _encoded()
    positions = rope_position_ids(model, ids, grid)
    explicit = _logits(model, ids, pixel_values, grid, position_ids=positions)
    types = (ids == model.config.image_token_id).int()
    with_types = _logits(model, ids, pixel_values, grid, mm_token_type_ids=types)
    assert torch.allclose(explicit, with_types, atol=1e-5)
    # the trap: without positions or token types transformers silently uses 1-D positions
    model.model.rope_deltas = None
    fallback = _logits(model, ids, pixel_values, grid)
    assert not torch.allclose(explicit, fallback, atol=1e-3)


def test_left_padded_batch_gives_the_same_logits_as_alone() -> None:
    model = _micro()
    ids, pixel_values, grid = _encoded()
    pad = model.config.get_text_config().pad_token_id
    batch = torch.cat([torch.full((1, 5), pad), ids], dim=1)
    mask = torch.cat([torch.zeros(1, 5, dtype=torch.long), torch.ones_like(ids)], dim=1)
    positions = rope_position_ids(model, batch, grid, attention_mask=mask)
    padded = _logits(model, batch, pixel_values, grid, position_ids=positions, attention_mask=mask)
    alone = _logits(
        model, ids, pixel_values, grid, position_ids=rope_position_ids(model, ids, grid)
    )
    assert torch.allclose(padded[:, 5:], alone, atol=1e-4)


def test_same_seed_same_weights_other_seed_other_weights() -> None:
    torch.manual_seed(123)
    before = torch.rand(1)
    a = build_tiny_model("micro", tokenizer(), seed=7).state_dict()
    b = build_tiny_model("micro", tokenizer(), seed=7).state_dict()
    c = build_tiny_model("micro", tokenizer(), seed=8).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)
    torch.manual_seed(123)
    assert torch.equal(torch.rand(1), before)  # the global RNG was not consumed


def test_generate_continues_a_prompt_with_an_image() -> None:
    encoder = ChatEncoder(tokenizer(), image_processor("micro"))
    turn = conversation()[0]
    segment = encoder.encode_turn(turn, first=True, add_generation_prompt=True)
    ids = torch.tensor([segment.input_ids])
    pixel_values = torch.cat([im.pixel_values for im in segment.images])
    grid = torch.tensor([im.grid_thw for im in segment.images])
    types = (ids == _micro().config.image_token_id).int()
    with torch.no_grad():
        out = _micro().generate(
            input_ids=ids,
            pixel_values=pixel_values,
            image_grid_thw=grid,
            mm_token_type_ids=types,
            max_new_tokens=4,
            do_sample=False,
        )
    assert out.shape[1] > ids.shape[1] and torch.equal(out[:, : ids.shape[1]], ids)


@pytest.mark.parametrize(
    "kwargs",
    [{"mrope_section": (8, 8, 8)}, {"hidden_size": 250}, {"image_size": 100}],
)
def test_inconsistent_configs_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        TinyVLConfig(**kwargs)  # type: ignore[arg-type]


def test_unknown_preset_is_an_error() -> None:
    with pytest.raises(KeyError, match="unknown model preset"):
        build_tiny_model("huge", tokenizer())


def test_batched_generation_log_probs_match_a_forward_pass_on_the_full_sequence() -> None:
    # the invariant the rollout engine relies on: left-padded, cached generation with images
    # (given mm_token_type_ids) scores each sampled token as one forward pass on the whole
    # unpadded sequence with rope_position_ids does
    model = _micro()
    encoder = ChatEncoder(tokenizer(), image_processor("micro"))
    prompts = [
        encoder.encode_conversation(conversation()[:3], add_generation_prompt=True),
        encoder.encode_conversation(conversation()[:1], add_generation_prompt=True),
    ]
    pad = model.config.get_text_config().pad_token_id
    width = max(len(ids) for ids, _, _ in prompts)
    batch = torch.stack([torch.cat([torch.full((width - len(i),), pad), i]) for i, _, _ in prompts])
    mask = (
        torch.arange(width)[None] >= torch.tensor([[width - len(i)] for i, _, _ in prompts])
    ).long()
    with torch.no_grad():
        out = model.generate(
            input_ids=batch,
            attention_mask=mask,
            pixel_values=torch.cat([p for _, p, _ in prompts]),
            image_grid_thw=torch.cat([g for _, _, g in prompts]),
            mm_token_type_ids=mm_token_type_ids(batch, model),
            max_new_tokens=5,
            do_sample=False,
            output_logits=True,
            return_dict_in_generate=True,
        )
    sampled = torch.stack(out.logits, dim=1).log_softmax(-1)  # (B, N, V)
    for row, (ids, pixel_values, grid) in enumerate(prompts):
        full = torch.cat([ids, out.sequences[row, width:]])[None]
        positions = rope_position_ids(model, full, grid)
        logits = _logits(model, full, pixel_values, grid, position_ids=positions)[0]
        recomputed = logits[len(ids) - 1 : -1].log_softmax(-1)
        assert torch.allclose(recomputed, sampled[row], atol=1e-4)
