"""The hf policy on a micro Qwen2.5-VL: sampling, and the tensors that training will see.

The central check: a forward pass over a finished trajectory's token ids, with all its images
and the M-RoPE positions of the whole sequence, reproduces the log-probs recorded while
sampling. It catches position, mask, padding and tokenisation bugs at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
import torch
from PIL import Image

from mmsr.models import rope_position_ids
from mmsr.policy import GenerationRequest
from mmsr.policy.hf import HFPolicy, SpecialIds
from mmsr.rollout import EndReason, RolloutEngine, RolloutTask
from mmsr.types import ImageHit, Turn

transformers = pytest.importorskip("transformers")

VOCAB, PAD, IM_END, NL = 64, 0, 1, 2
IMAGE, VIDEO, V_START, V_END = 60, 61, 62, 63
SPECIAL = SpecialIds(
    pad=PAD,
    end_of_turn=frozenset({IM_END}),
    suppressed=frozenset({IMAGE, VIDEO, V_START, V_END}),
)
SIDE = 56  # 56 px → 4×4 patches → 4 visual tokens after the 2×2 merge
TOKENS_PER_IMAGE = 4


@pytest.fixture(scope="module")
def model() -> Any:
    return micro_model()


def micro_model() -> Any:
    """The micro model of these tests (seeded), in eval mode."""
    config = transformers.Qwen2_5_VLConfig(
        text_config={
            "vocab_size": VOCAB,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "rope_scaling": {"type": "mrope", "mrope_section": [1, 1, 2]},
            "max_position_embeddings": 1024,
            "bos_token_id": PAD,
            "eos_token_id": IM_END,
            "pad_token_id": PAD,
            # sharp attention, so that a wrong position or mask changes the log-probs
            # (at the default 0.02 a 1-D position bug stays under the tolerance)
            "initializer_range": 0.2,
        },
        vision_config={
            "depth": 1,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_heads": 2,
            "out_hidden_size": 32,
            "fullatt_block_indexes": [0],
            "window_size": SIDE,
        },
        image_token_id=IMAGE,
        video_token_id=VIDEO,
        vision_start_token_id=V_START,
        vision_end_token_id=V_END,
    )
    torch.manual_seed(0)
    return transformers.Qwen2_5_VLForConditionalGeneration(config).eval()


class Vision:
    def __init__(self) -> None:
        self.processor = transformers.Qwen2VLImageProcessorPil(
            min_pixels=SIDE * SIDE, max_pixels=SIDE * SIDE
        )

    def __call__(self, images: Sequence[Any]) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.processor(images=list(images), return_tensors="pt")
        return out["pixel_values"], out["image_grid_thw"]


def _image(color: str) -> Image.Image:
    return Image.new("RGB", (SIDE, SIDE), color)


def _text_ids(text: str) -> list[int]:
    """A toy tokenizer: one id in 5..54 per character."""
    return [5 + ord(c) % 50 for c in text]


class ToyEncoder:
    """A user turn as the chat template would lay it out, with toy ids for the text."""

    forbidden_ids = frozenset({IMAGE, VIDEO, V_START, V_END})

    def user_turn_ids(self, turn: Turn, *, first: bool) -> list[int]:
        ids = [] if first else [NL]
        for i, piece in enumerate(turn.text.split("<image>")):
            if i:
                ids += [V_START, *[IMAGE] * TOKENS_PER_IMAGE, V_END]
            ids += _text_ids(piece[:20])
        return [*ids, IM_END, NL, 7, 8]  # end of user turn, then the assistant header


def _replay_logprobs(
    model: Any, ids: Sequence[int], images: Sequence[Any], temperature: float
) -> torch.Tensor:
    """Log-probs of each token given the ones before it, from one forward pass."""
    input_ids = torch.tensor([list(ids)])
    pixel_values, grid = Vision()(images) if images else (None, None)
    positions = rope_position_ids(model, input_ids, grid)
    with torch.no_grad():
        logits = model(
            input_ids=input_ids,
            pixel_values=pixel_values,
            image_grid_thw=grid,
            position_ids=positions,
        ).logits[0]
    logits = logits.float()
    logits[:, list(SPECIAL.suppressed)] = float("-inf")
    logp = torch.log_softmax(logits / (temperature or 1.0), dim=-1)
    return logp[:-1].gather(1, input_ids[0, 1:, None])[:, 0]  # token t given tokens < t


def _policy(model: Any, temperature: float, decode: Any = None) -> HFPolicy:
    decode = decode or (lambda ids: " ".join(map(str, ids)))
    return HFPolicy(model, Vision(), decode, SPECIAL, temperature=temperature)


@pytest.mark.parametrize("temperature", [0.0, 1.0, 0.7])
def test_recorded_logprobs_match_a_forward_pass_batched_and_padded(
    model: Any, temperature: float
) -> None:
    img = [_image("red"), _image("blue"), _image("green")]
    vision_block = [V_START, *[IMAGE] * TOKENS_PER_IMAGE, V_END]
    requests = [
        # two images, longer prompt
        GenerationRequest(
            (), tuple([9, 10, *vision_block, 11, *vision_block, 12]), (img[0], img[1]), 12, seed=1
        ),
        # one image, short prompt: left-padded in the batch
        GenerationRequest((), tuple([9, *vision_block, 13]), (img[2],), 8, seed=2),
        # text only
        GenerationRequest((), (20, 21, 22), (), 10, seed=3),
    ]
    gens = _policy(model, temperature).generate(requests)
    for request, gen in zip(requests, gens, strict=True):
        assert 0 < len(gen.token_ids) <= request.max_new_tokens
        assert not SPECIAL.suppressed.intersection(gen.token_ids)
        full = [*request.prompt_ids, *gen.token_ids]
        replay = _replay_logprobs(model, full, request.images, temperature)
        recorded = torch.tensor(gen.logprobs)
        torch.testing.assert_close(replay[-len(gen.token_ids) :], recorded, atol=2e-4, rtol=1e-4)


def test_seeded_sampling_is_reproducible(model: Any) -> None:
    req = GenerationRequest((), (9, 10, 11), (), 10, seed=5)
    policy = _policy(model, 1.0)
    a, b = policy.generate([req]), policy.generate([req])
    other = policy.generate([GenerationRequest((), (9, 10, 11), (), 10, seed=6)])
    assert a == b
    assert a[0].token_ids != other[0].token_ids


def test_finish_reasons(model: Any) -> None:
    (gen,) = _policy(model, 0.0).generate([GenerationRequest((), (9, 10), (), 3, seed=0)])
    assert gen.finish_reason == ("stop" if gen.token_ids[-1] == IM_END else "length")
    assert len(gen.token_ids) <= 3


def test_multi_turn_rollout_tensors_reproduce_sampling(model: Any) -> None:
    # the decoded text is scripted so that the rollout searches and then answers; the ids
    # and log-probs are the model's own samples
    replies = iter(
        ["<reason>?</reason><search><img></search>", "<reason>ok</reason><answer>x</answer>"]
    )

    class Thumbs:
        def search(self, image: Any, k: int) -> list[ImageHit]:
            return [ImageHit("a", "u", _image("yellow")), ImageHit("b", "u", _image("white"))]

    policy = _policy(model, 1.0, decode=lambda ids: next(replies))
    engine = RolloutEngine(policy, image_search=Thumbs(), encoder=ToyEncoder())
    (traj,) = engine.run([RolloutTask("t", "what?", _image("red"))], seeds=[3])
    assert traj.end_reason is EndReason.ANSWERED and len(traj.images) == 3
    ids, mask = traj.token_ids, traj.loss_mask
    # placeholders and images match one to one
    assert ids.count(IMAGE) == TOKENS_PER_IMAGE * len(traj.images)
    assert all(m == 0 for t, m in zip(ids, mask, strict=True) if t in SPECIAL.suppressed)
    replay = _replay_logprobs(model, ids, traj.images, 1.0)
    trained = torch.tensor(mask[1:]).bool()
    torch.testing.assert_close(
        replay[trained], torch.tensor(traj.logprobs[1:])[trained], atol=2e-4, rtol=1e-4
    )


def test_shared_prompts_are_prefilled_once_with_the_same_results(model: Any) -> None:
    vision_block = [V_START, *[IMAGE] * TOKENS_PER_IMAGE, V_END]
    prompt = (9, *vision_block, 13)
    group = [GenerationRequest((), prompt, (_image("red"),), 8, seed=s) for s in (1, 2, 3)]
    other = GenerationRequest((), (20, 21), (), 8, seed=4)
    calls: list[int] = []
    original_forward = model.forward

    def counting_forward(*args: Any, **kwargs: Any) -> Any:
        if kwargs.get("inputs_embeds") is not None:  # a prefill (decoding feeds input_ids)
            calls.append(kwargs["inputs_embeds"].shape[0])
        return original_forward(*args, **kwargs)

    policy = _policy(model, 1.0)
    model.forward = counting_forward
    try:
        together = policy.generate([*group, other])
    finally:
        model.forward = original_forward
    assert calls == [2]  # one prefill row for the group (same pixels), one for the other prompt
    alone = [policy.generate([r])[0] for r in [*group, other]]
    for a, b in zip(together, alone, strict=True):
        assert a.token_ids == b.token_ids
        torch.testing.assert_close(
            torch.tensor(a.logprobs), torch.tensor(b.logprobs), atol=2e-4, rtol=1e-4
        )


def test_on_done_reports_a_turn_while_the_others_still_decode(model: Any) -> None:
    forwards: list[int] = []
    reported: dict[int, tuple[int, Any]] = {}
    original_forward = model.forward

    def counting_forward(*args: Any, **kwargs: Any) -> Any:
        forwards.append(1)
        return original_forward(*args, **kwargs)

    def on_done(i: int) -> Any:
        return lambda gen: reported.setdefault(i, (len(forwards), gen))

    requests = [
        GenerationRequest((), (9, 10), (), n, seed=1, on_done=on_done(i))
        for i, n in enumerate((2, 10))
    ]
    force = lambda request, sampled: 5  # noqa: E731 - never end a turn early
    policy = HFPolicy(model, Vision(), str, SPECIAL, temperature=1.0, force=force)
    model.forward = counting_forward
    try:
        gens = policy.generate(requests)
    finally:
        model.forward = original_forward
    assert [len(g.token_ids) for g in gens] == [2, 10]
    assert reported[0][0] == 2 < reported[1][0] == len(forwards)  # after 1 prefill + 1 step
    assert [reported[0][1], reported[1][1]] == gens  # the very turns returned
