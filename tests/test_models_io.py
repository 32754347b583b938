"""Save and load: an ordinary Hugging Face folder that round-trips exactly, offline."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from tiny_models import conversation, image_processor, tokenizer

from mmsr.models import (
    PRESETS,
    ChatEncoder,
    build_tiny_model,
    load_model,
    rope_position_ids,
    save_pretrained,
)


def _logits(model, encoder: ChatEncoder) -> torch.Tensor:  # type: ignore[no-untyped-def]
    ids, pixel_values, grid = encoder.encode_conversation(conversation())
    ids = ids[None]
    positions = rope_position_ids(model, ids, grid)
    with torch.no_grad():
        return model(
            input_ids=ids, pixel_values=pixel_values, image_grid_thw=grid, position_ids=positions
        ).logits


def test_round_trip_gives_identical_logits_tokens_and_images(tmp_path: Path) -> None:
    model = build_tiny_model("micro", tokenizer(), seed=3)
    processor = image_processor("micro")
    save_pretrained(model, tokenizer(), PRESETS["micro"].image_processor_config(), tmp_path)
    names = {p.name for p in tmp_path.iterdir()}
    assert {"config.json", "model.safetensors", "preprocessor_config.json"} <= names
    assert {"tokenizer.json", "tokenizer_config.json"} <= names

    loaded, loaded_tok, loaded_proc = load_model(tmp_path)
    assert not loaded.training
    assert loaded_proc.config == processor.config
    encoder = ChatEncoder(tokenizer(), processor)
    loaded_encoder = ChatEncoder(loaded_tok, loaded_proc)
    ids, pixels, _ = encoder.encode_conversation(conversation())
    loaded_ids, loaded_pixels, _ = loaded_encoder.encode_conversation(conversation())
    assert torch.equal(ids, loaded_ids) and torch.equal(pixels, loaded_pixels)
    assert torch.equal(_logits(model, encoder), _logits(loaded, loaded_encoder))
    assert loaded_tok.eos_token == "<|im_end|>" and loaded_tok.pad_token == "<|endoftext|>"
    assert loaded_tok.encode("<answer>Paris</answer>") == tokenizer().encode(
        "<answer>Paris</answer>"
    )
    messages = [{"role": "user", "content": "hi"}]
    assert loaded_tok.apply_chat_template(
        messages, tokenize=False
    ) == tokenizer().apply_chat_template(messages, tokenize=False)
    assert loaded.generation_config.eos_token_id == model.generation_config.eos_token_id


def test_a_folder_without_chat_template_gets_ours(tmp_path: Path) -> None:
    # like a real checkpoint whose template lives in another file we do not read
    save_pretrained(
        build_tiny_model("micro", tokenizer()), tokenizer(), image_processor("micro"), tmp_path
    )
    (tmp_path / "chat_template.jinja").unlink(missing_ok=True)
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    _, loaded_tok, _ = load_model(tmp_path)
    assert loaded_tok.chat_template == tokenizer().chat_template


@pytest.mark.parametrize("missing", ["config.json", "preprocessor_config.json"])
def test_incomplete_folders_are_refused(tmp_path: Path, missing: str) -> None:
    save_pretrained(
        build_tiny_model("micro", tokenizer()), tokenizer(), image_processor("micro"), tmp_path
    )
    (tmp_path / missing).unlink()
    with pytest.raises(FileNotFoundError, match=missing):
        load_model(tmp_path)


def test_a_missing_folder_is_refused_without_reaching_a_hub(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_model(tmp_path / "Qwen" / "Qwen2.5-VL-3B-Instruct")
