"""The pinned environment has what later parts of the project rely on."""

from __future__ import annotations

from importlib.metadata import version


def test_pinned_torch_and_transformers() -> None:
    assert version("torch").split("+")[0] == "2.13.0"
    assert version("transformers") == "5.10.4"


def test_transformers_builds_a_tiny_qwen2_5_vl_config() -> None:
    from transformers import Qwen2_5_VLConfig, Qwen2VLImageProcessorPil

    config = Qwen2_5_VLConfig(text_config={"hidden_size": 64, "num_hidden_layers": 1})
    assert config.text_config.hidden_size == 64
    assert Qwen2VLImageProcessorPil.__name__ == "Qwen2VLImageProcessorPil"
