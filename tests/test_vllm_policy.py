"""The vLLM policy on the CPU, against a fake engine that answers like ``vllm.LLM`` (no vLLM here).

What is checked: the requests as vLLM gets them (token ids with each image's pads collapsed to
one placeholder, the images in placeholder order, one SamplingParams per request with its seed,
budget, stop ids, banned ids and log-probs asked for), the log-probs read back, the check of
vLLM's expanded prompt against ours, the colocation calls' order, the clear errors without
vLLM, and in the GRPO loop: weights pushed before the first rollout and after every optimizer
step, the engine asleep during updates, and the old log-probs recomputed by the trainer.
The real engine round trip is in ``tests/test_vllm_gpu.py`` (``gpu`` marker).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import tiny_models
import torch
from test_grpo_train import OVERRIDES, _metrics, _parts
from test_grpo_train import synthetic_reward as synthetic_reward  # the fixture
from vllm_fakes import FakeLLM, FakeSamplingParams

from mmsr.models import ChatEncoder, build_tiny_model
from mmsr.models.tokenizer import ENDOFTEXT, IM_END, IMAGE_PAD, suppressed_token_ids, token_id
from mmsr.policy import GenerationRequest
from mmsr.policy.local_model import ChatTurnEncoder
from mmsr.policy.vllm import BANNED_BIAS, VLLMPolicy, collapse_image_pads, import_vllm
from mmsr.train.grpo import train_grpo
from mmsr.train.grpo_config import load_grpo_config
from mmsr.train.rollout_backend import Rollout
from mmsr.types import Role, Turn

REPLY = "<reason>It is France.</reason><answer>France</answer>"


def _encoder(preset: str = "micro") -> ChatEncoder:
    return ChatEncoder(tiny_models.tokenizer(), tiny_models.image_processor(preset))


def _fake(preset: str = "micro", **kwargs: Any) -> FakeLLM:
    enc = _encoder(preset)
    tok = tiny_models.tokenizer()
    reply = [*enc.encode_text(REPLY), token_id(tok, IM_END)]
    return FakeLLM(
        lambda image: enc.image_processor(image).num_tokens, enc.image_pad_id, reply, **kwargs
    )


def _policy(llm: FakeLLM, temperature: float = 1.0) -> VLLMPolicy:
    tok = tiny_models.tokenizer()
    return VLLMPolicy(
        llm,
        FakeSamplingParams,
        lambda ids: str(tok.decode(ids, skip_special_tokens=False)),
        end_of_turn=frozenset({token_id(tok, IM_END), token_id(tok, ENDOFTEXT)}),
        suppressed=frozenset(suppressed_token_ids(tok)),
        image_pad=token_id(tok, IMAGE_PAD),
        temperature=temperature,
    )


def _request(seed: int, max_new_tokens: int = 12) -> GenerationRequest:
    """The conversation of ``tiny_models.conversation`` up to its last user turn: 3 images."""
    turns = tiny_models.conversation()[:3]
    segments = _encoder().encode_segments(turns, add_generation_prompt=True)
    ids = tuple(i for s in segments for i in s.input_ids)
    images = tuple(image for turn in turns for image in turn.images)
    return GenerationRequest(tuple(turns), ids, images, max_new_tokens, seed)


@pytest.mark.parametrize(
    ("ids", "expected"),
    [
        ([5, 9, 9, 9, 6], [5, 9, 6]),  # one image's run of pads
        ([9, 9, 7, 9, 9, 9], [9, 7, 9]),  # two images, the first at the start
        ([1, 2, 3], [1, 2, 3]),  # no image
        ([9], [9]),  # an image of one visual token
    ],
)
def test_collapse_image_pads(ids: list[int], expected: list[int]) -> None:
    assert collapse_image_pads(ids, 9) == expected


def test_requests_as_vllm_gets_them() -> None:
    llm = _fake()
    policy = _policy(llm)
    requests = [_request(seed=11), _request(seed=12, max_new_tokens=5)]
    policy.generate(requests)
    pad = policy.image_pad
    for request, prompt, params in zip(requests, llm.prompts, llm.params, strict=True):
        ids = prompt["prompt_token_ids"]
        assert ids.count(pad) == 3  # one placeholder per image
        assert [i for i in ids if i != pad] == [i for i in request.prompt_ids if i != pad]
        assert len(ids) < len(request.prompt_ids)
        images = prompt["multi_modal_data"]["image"]
        assert len(images) == 3 and all(a is b for a, b in zip(images, request.images, strict=True))
        assert params.seed == request.seed and params.max_tokens == request.max_new_tokens
        assert params.n == 1 and params.logprobs == 0 and params.temperature == 1.0
        assert params.stop_token_ids == sorted(policy.end_of_turn)
        assert params.logit_bias == {i: BANNED_BIAS for i in sorted(policy.suppressed)}
        assert pad in params.logit_bias and not params.skip_special_tokens


def test_a_text_only_prompt_has_no_multi_modal_data() -> None:
    llm = _fake()
    ids = tuple(_encoder().encode_text("What is this?"))
    _policy(llm).generate([GenerationRequest((Turn(Role.USER, "What is this?"),), ids, (), 4, 0)])
    assert llm.prompts[0] == {"prompt_token_ids": list(ids)}


def test_sampled_ids_logprobs_and_finish_reason() -> None:
    llm = _fake()
    policy = _policy(llm)
    tok = tiny_models.tokenizer()
    im_end = token_id(tok, IM_END)
    long, short = policy.generate([_request(seed=3, max_new_tokens=400), _request(3, 1)])
    assert long.finish_reason == "stop" and long.token_ids[-1] == im_end
    assert long.logprobs == tuple(-0.5 - 0.01 * i for i in range(len(long.token_ids)))
    assert long.text == tok.decode(list(long.token_ids[:-1]), skip_special_tokens=False)
    assert IM_END not in long.text
    assert short.finish_reason == "length" and len(short.token_ids) == 1
    assert short.token_ids == long.token_ids[:1]  # the same seed, the same first draw


def test_a_request_with_no_budget_is_not_sent() -> None:
    llm = _fake()
    out = _policy(llm).generate([_request(1, max_new_tokens=0)])
    assert out[0].token_ids == () and out[0].finish_reason == "length"
    assert llm.calls == []


def test_a_prompt_vllm_expands_otherwise_is_a_clear_error() -> None:
    policy = _policy(_fake(extra_tokens=1))  # vLLM's processor gives each image one more token
    with pytest.raises(ValueError, match=r"expanded prompt has \d+ tokens, ours \d+.*min_pixels"):
        policy.generate([_request(seed=0)])


def test_placeholders_and_images_must_agree() -> None:
    request = _request(seed=0)
    fewer = GenerationRequest(request.turns, request.prompt_ids, request.images[:2], 4, 0)
    with pytest.raises(ValueError, match="3 image placeholders but 2 images"):
        _policy(_fake()).generate([fewer])


def test_sleep_weight_push_and_wake_up_order() -> None:
    llm = _fake()
    policy = _policy(llm)
    weights = {"model.w": torch.ones(2)}
    policy.generate([_request(0)])
    policy.sleep()
    policy.sleep()  # asleep already: nothing more
    policy.load_weights(weights.items())
    policy.generate([_request(0)])
    assert llm.calls == [
        "generate",
        "sleep(1)",
        "wake_up(weights)",  # the weights' memory only: the KV cache stays freed
        "collective_rpc",
        "reset_prefix_cache",  # cached prefixes were computed with the old weights
        "wake_up(kv_cache)",
        "generate",
    ]
    assert torch.equal(llm.model.loaded[0]["model.w"], torch.ones(2))


def test_without_vllm_a_clear_error_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "vllm", None)  # import vllm raises ImportError
    with pytest.raises(ImportError, match=r"pip install -e '\.\[gpu\]'"):
        import_vllm()
    from mmsr.policy.local_model import build_vllm_policy

    with pytest.raises(ImportError, match="vllm rollout backend needs vLLM"):
        build_vllm_policy(Path("unused"))


def test_importing_mmsr_and_the_trainer_never_imports_vllm() -> None:
    code = (
        "import sys, mmsr, mmsr.cli, mmsr.policy.vllm, mmsr.policy.local_model, mmsr.train.grpo,"
        " mmsr.eval.run; assert 'vllm' not in sys.modules, 'vllm imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[1])


def test_config_backend_and_recompute_defaults() -> None:
    hf = load_grpo_config("tiny-cpu")
    assert hf.rollout.backend == "hf" and not hf.algo.recompute(hf.rollout.backend)
    on = load_grpo_config("tiny-cpu", ["--algo.recompute_old_logprobs=true"])
    assert on.algo.recompute("hf")
    vllm = load_grpo_config("tiny-cpu", ["--rollout.backend=vllm", "--model.device=cuda"])
    assert vllm.algo.recompute(vllm.rollout.backend)  # default on with vLLM
    off = ["--rollout.backend=vllm", "--model.device=cuda", "--algo.recompute_old_logprobs=false"]
    assert not load_grpo_config("tiny-cpu", off).algo.recompute("vllm")
    with pytest.raises(ValueError, match=r"needs model\.device cuda"):
        load_grpo_config("tiny-cpu", ["--rollout.backend=vllm"])
    with pytest.raises(ValueError, match="vllm_memory"):
        load_grpo_config("tiny-cpu", ["--rollout.vllm_memory=1.5"])


def _train_with_fake(tmp_path: Path, *extra: str) -> tuple[FakeLLM, Any, list[dict[str, float]]]:
    parts = _parts()
    llm = _fake("micro")
    policy = _policy(llm)
    tok = tiny_models.tokenizer()
    encoder = ChatTurnEncoder(_encoder("micro"), frozenset(suppressed_token_ids(tok)))
    cfg = load_grpo_config("tiny-cpu", [*OVERRIDES, "--run.steps=2", *extra])
    train_grpo(cfg, parts, tmp_path, rollout=Rollout(policy, encoder, colocated=policy))
    return llm, parts.model, _metrics(tmp_path)


def test_grpo_pushes_weights_after_every_step_and_sleeps_during_updates(
    tmp_path: Path, synthetic_reward: None
) -> None:
    initial = build_tiny_model("micro", tiny_models.tokenizer(), seed=0).state_dict()
    llm, model, rows = _train_with_fake(tmp_path, "--algo.recompute_old_logprobs=true")
    assert len(rows) == 2
    pushes = llm.model.loaded
    assert len(pushes) == 3  # before step 1, after step 1, after step 2
    assert all(torch.equal(pushes[0][k], v) for k, v in initial.items())
    final = model.state_dict()
    assert set(pushes[-1]) == set(final)
    assert all(torch.equal(pushes[-1][k], v) for k, v in final.items())
    assert any(not torch.equal(pushes[1][k], initial[k]) for k in initial)  # step 1 changed them
    push = ["wake_up(weights)", "collective_rpc", "reset_prefix_cache"]
    assert llm.calls[:2] == ["collective_rpc", "reset_prefix_cache"]  # awake: no wake-up
    first_sleep = llm.calls.index("sleep(1)")
    assert set(llm.calls[2:first_sleep]) == {"generate"}  # step 1's turns
    after = llm.calls[first_sleep:]
    assert after[:6] == ["sleep(1)", *push, "wake_up(kv_cache)", "generate"]
    assert after[-4:] == ["sleep(1)", *push]  # the last update, then its weights pushed
    assert llm.calls.count("sleep(1)") == 2


def test_grpo_recomputes_the_old_logprobs_with_the_trainer(
    tmp_path: Path, synthetic_reward: None
) -> None:
    # the fake sampler's log-probs are made up (about -0.5): taken as the old log-probs they
    # give ratios far from 1; recomputed by the trainer's forward pass the first ratio is 1
    _, _, kept = _train_with_fake(tmp_path / "kept", "--algo.recompute_old_logprobs=false")
    on = "--algo.recompute_old_logprobs=true"
    _, _, recomputed = _train_with_fake(tmp_path / "recomputed", on)
    assert all(abs(r["loss/ratio_mean"] - 1) > 1e-2 for r in kept)
    assert all(abs(r["loss/ratio_mean"] - 1) < 1e-5 for r in recomputed)
    assert all(r["loss/clip_fraction"] == 0 for r in recomputed)
