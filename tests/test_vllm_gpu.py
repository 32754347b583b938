"""The vLLM policy on a real engine (``pytest -m gpu``; needs CUDA and the ``gpu`` extra).

A randomly initialised Qwen2.5-VL with the 3B model's widths and vocabulary but two text and
two vision layers is saved to a temporary folder (nothing is downloaded) and served by one
in-process ``vllm.LLM`` for the module. Checked: vLLM's expansion of a 448-px image equals our
prompt ids (no length error), a seed gives the same turn twice, the sampled log-probs agree
with the trainer's forward pass over the finished sequence, and weights pushed into the engine
(after a sleep, as the GRPO loop does) change its output and bring it back. Two GRPO steps with
vLLM rollouts run in ``bench/gpu_smoke.py``.
"""

from __future__ import annotations

import io
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from mmsr.models.image_processor import ImageProcessor, ImageProcessorConfig
from mmsr.models.io import save_pretrained
from mmsr.models.shapes import SHAPES
from mmsr.policy import GenerationRequest
from mmsr.protocol import default_prompt_set, render_first_turn
from mmsr.train.batch import TokenSequence, collate, token_logprobs

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

import gpu_smoke  # noqa: E402

pytestmark = pytest.mark.gpu
SIDE = 448  # a multiple of 28: both image processors keep it as it is (256 visual tokens)


def _shape() -> dict[str, Any]:
    base = SHAPES["qwen2.5-vl-3b"]
    vision = {**base["vision_config"], "depth": 2, "fullatt_block_indexes": [1]}
    return {**base, "num_hidden_layers": 2, "vision_config": vision}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Any, Any]]:
    """(policy, turn encoder, the trainer-side model in bf16) on one engine."""
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    pytest.importorskip("vllm")
    from mmsr.models import train_tokenizer
    from mmsr.policy.local_model import build_vllm_policy

    texts = [default_prompt_set().first_turn, "Which country's flag is this? France Paris"] * 20
    tokenizer = train_tokenizer(texts, vocab_size=800)
    model = gpu_smoke.build_model(_shape(), tokenizer, "cuda").to(torch.bfloat16)
    pixels = SIDE * SIDE
    processor = ImageProcessor(
        ImageProcessorConfig(fixed_size=SIDE, min_pixels=pixels, max_pixels=pixels)
    )
    folder = save_pretrained(model, tokenizer, processor, tmp_path_factory.mktemp("m"))
    policy, encoder = build_vllm_policy(
        folder,
        temperature=1.0,
        gpu_memory_utilization=0.3,
        max_model_len=2048,
        sleep_mode=True,
        seed=0,
    )
    yield policy, encoder, model


def _request(encoder: Any, seed: int, max_new_tokens: int = 24) -> GenerationRequest:
    from PIL import Image

    image = Image.open(io.BytesIO(gpu_smoke._png(SIDE, seed=7))).convert("RGB")
    turn = render_first_turn("Which country's flag is this?", image, default_prompt_set())
    ids = tuple(encoder.user_turn_ids(turn, first=True))
    return GenerationRequest((turn,), ids, turn.images, max_new_tokens, seed)


def test_expansion_seeds_and_logprobs_agree_with_the_trainer(served: tuple[Any, Any, Any]) -> None:
    policy, encoder, model = served
    requests = [_request(encoder, 1), _request(encoder, 1), _request(encoder, 2)]
    a, b, c = policy.generate(requests)  # raises if vLLM expanded the image otherwise
    assert a.token_ids == b.token_ids and a.logprobs == b.logprobs  # same seed, same turn
    assert a.token_ids != c.token_ids
    request = requests[0]
    ids = (*request.prompt_ids, *a.token_ids)
    mask = (0,) * len(request.prompt_ids) + (1,) * len(a.token_ids)
    sequence = TokenSequence(ids, mask, (0.0,) * len(ids), request.images)
    batch = collate([sequence], model, encoder.encoder.image_processor, 0).to("cuda")
    with torch.no_grad():
        ours = token_logprobs(model, batch, suppressed_ids=sorted(policy.suppressed))
    ours = ours[batch.loss_mask.bool()].float().cpu()
    theirs = torch.tensor(a.logprobs)
    # bf16 numerics differ between the engines; misaligned positions would differ by far more
    assert (ours - theirs).abs().mean() < 0.1, (ours[:8], theirs[:8])


def test_pushed_weights_change_the_engine_and_bring_it_back(
    served: tuple[Any, Any, Any],
) -> None:
    policy, encoder, model = served
    policy.temperature = 0.0
    try:
        request = [_request(encoder, 3, max_new_tokens=12)]
        (before,) = policy.generate(request)
        state = {k: v.detach() for k, v in model.state_dict().items()}
        noisy = {k: v + 0.05 * torch.randn_like(v) if v.dim() == 2 else v for k, v in state.items()}
        policy.sleep()
        policy.load_weights(noisy.items())
        (changed,) = policy.generate(request)
        assert changed.token_ids != before.token_ids
        policy.sleep()
        policy.load_weights(state.items())
        (back,) = policy.generate(request)
        assert back.token_ids == before.token_ids
    finally:
        policy.temperature = 1.0
