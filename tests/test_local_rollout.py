"""A rollout of a micro Qwen2.5-VL with the real tokenizer, chat encoder and image processor.

Decoding is constrained (forced ids) so the rollout searches and then answers; the model still
scores every id. Checks: the engine's ids equal encoding the finished conversation at once; a
forward pass over them reproduces the recorded log-probs; the mask covers exactly the turns the
policy produced.
"""

from __future__ import annotations

from typing import Any

import pytest
import tiny_models
import torch

from mmsr.models import build_tiny_model, rope_position_ids, stack_images
from mmsr.policy import GenerationRequest
from mmsr.policy.local_model import build_hf_policy
from mmsr.rollout import EndReason, RolloutEngine, RolloutTask
from mmsr.types import ImageHit, Role

REPLIES = [
    "<reason>I cannot tell.</reason><search><img></search>",
    "<reason>It is France.</reason><answer>Paris</answer>",
]


class Thumbs:
    def search(self, image: Any, k: int) -> list[ImageHit]:
        return [ImageHit("Flag of France", "u1", tiny_models.image((0, 0, 200)))]


@pytest.fixture(scope="module")
def setup() -> tuple[Any, Any, Any]:
    tok = tiny_models.tokenizer()
    processor = tiny_models.image_processor("micro")
    model = build_tiny_model("micro", tok, seed=0).eval()
    return model, tok, processor


def _scripted_force(encoder: Any) -> Any:
    scripts = [[*encoder.encode_text(r), encoder.im_end_id] for r in REPLIES]

    def force(request: GenerationRequest, sampled: list[int]) -> int | None:
        script = scripts[sum(t.role is Role.ASSISTANT for t in request.turns)]
        return script[len(sampled)] if len(sampled) < len(script) else None

    return force


def test_constrained_rollout_is_token_exact(setup: tuple[Any, Any, Any]) -> None:
    model, tok, processor = setup
    policy, turn_encoder = build_hf_policy(model, tok, processor, temperature=1.0)
    policy.force = _scripted_force(turn_encoder.encoder)
    engine = RolloutEngine(policy, image_search=Thumbs(), encoder=turn_encoder)
    (traj,) = engine.run([RolloutTask("q", "What is the capital?", tiny_models.image())], seeds=[0])
    assert traj.end_reason is EndReason.ANSWERED
    assert traj.assistant_texts == REPLIES
    # the engine's ids are exactly the whole conversation's encoding (which also closes the
    # last turn with the separator after <|im_end|>)
    ids, pixel_values, grid = turn_encoder.encoder.encode_conversation(list(traj.turns))
    separator = turn_encoder.encoder.separator_ids
    assert traj.token_ids + separator == tuple(ids.tolist())
    ids = ids[: len(traj.token_ids)]
    # "Paris" is one atomic token, generated and trained on
    paris = tok.convert_tokens_to_ids("Paris")
    assert paris in [t for t, m in zip(traj.token_ids, traj.loss_mask, strict=True) if m]
    # a forward pass reproduces the recorded log-probs on every trained token
    batch = ids[None]
    positions = rope_position_ids(model, batch, grid)
    with torch.no_grad():
        logits = model(
            input_ids=batch, pixel_values=pixel_values, image_grid_thw=grid, position_ids=positions
        ).logits[0]
    logits[:, list(turn_encoder.forbidden_ids)] = float("-inf")
    logp = torch.log_softmax(logits.float(), dim=-1)[:-1].gather(1, batch[0, 1:, None])[:, 0]
    trained = torch.tensor(traj.loss_mask[1:]).bool()
    torch.testing.assert_close(
        logp[trained], torch.tensor(traj.logprobs[1:])[trained], atol=1e-4, rtol=1e-4
    )
    # two images: the question's and the thumbnail, with matching placeholders
    assert len(traj.images) == 2
    assert traj.token_ids.count(turn_encoder.encoder.image_pad_id) == sum(
        processor(i).num_tokens for i in traj.images
    )
    assert stack_images([processor(i) for i in traj.images])[1].tolist() == grid.tolist()


def test_greedy_rollout_of_an_untrained_model_ends_cleanly(setup: tuple[Any, Any, Any]) -> None:
    model, tok, processor = setup
    policy, turn_encoder = build_hf_policy(model, tok, processor)
    engine = RolloutEngine(policy, image_search=Thumbs(), encoder=turn_encoder)
    trajs = engine.run(
        [RolloutTask(f"q{i}", "What is this?", tiny_models.image()) for i in range(3)]
    )
    for traj in trajs:
        assert traj.end_reason in set(EndReason)
        assert len(traj.token_ids) == len(traj.loss_mask) == len(traj.logprobs)
        assert not turn_encoder.forbidden_ids.intersection(
            t for t, m in zip(traj.token_ids, traj.loss_mask, strict=True) if m
        )


def test_collated_batch_reproduces_rollout_logprobs(setup: tuple[Any, Any, Any]) -> None:
    from mmsr.train.batch import TokenSequence, collate, token_logprobs

    model, tok, processor = setup
    policy, turn_encoder = build_hf_policy(model, tok, processor, temperature=1.0)
    policy.force = _scripted_force(turn_encoder.encoder)
    engine = RolloutEngine(policy, image_search=Thumbs(), encoder=turn_encoder)
    searched = engine.run(
        [RolloutTask("a", "What is the capital?", tiny_models.image())], seeds=[1]
    )
    policy.force = None  # a short, unconstrained second rollout: different length and images
    free = engine.run([RolloutTask("b", "Hm?", tiny_models.image((9, 9, 9)))], seeds=[2])
    trajs = [*searched, *free]
    sequences = [TokenSequence(t.token_ids, t.loss_mask, t.logprobs, t.images) for t in trajs]
    batch = collate(sequences, model, processor, pad_id=tok.pad_token_id)
    with torch.no_grad():
        logp = token_logprobs(model, batch, suppressed_ids=sorted(turn_encoder.forbidden_ids))
    assert batch.trained_tokens == sum(sum(t.loss_mask) for t in trajs)
    trained = batch.loss_mask.bool()
    torch.testing.assert_close(logp[trained], batch.old_logprobs[trained], atol=1e-4, rtol=1e-4)
    assert torch.isfinite(logp).all()


def test_teacher_sequence_trains_only_assistant_turns(setup: tuple[Any, Any, Any]) -> None:
    from mmsr.train.batch import teacher_sequence

    _, turn_encoder = build_hf_policy(*setup)
    encoder = turn_encoder.encoder
    conversation = tiny_models.conversation()
    seq = teacher_sequence(encoder, conversation)
    trained = [t for t, m in zip(seq.token_ids, seq.loss_mask, strict=True) if m]
    expected: list[int] = []
    for turn in conversation:
        if turn.role is Role.ASSISTANT:
            expected += [*encoder.encode_text(turn.text), encoder.im_end_id]
    assert trained == expected
    assert len(seq.images) == sum(len(t.images) for t in conversation)


def test_context_budget_never_cuts_an_image(setup: tuple[Any, Any, Any]) -> None:
    from mmsr.rollout import RolloutLimits

    model, tok, processor = setup
    policy, turn_encoder = build_hf_policy(model, tok, processor, temperature=1.0)
    policy.force = _scripted_force(turn_encoder.encoder)
    task = RolloutTask("q", "What is the capital?", tiny_models.image())
    first = RolloutEngine(policy, image_search=Thumbs(), encoder=turn_encoder).run(
        [task], seeds=[0]
    )[0]
    # room for the first turn and the search turn, not for the results with their thumbnail
    end_of_search_turn = first.loss_mask.index(1) + first.loss_mask[
        first.loss_mask.index(1) :
    ].index(0)
    budget = end_of_search_turn + 5
    engine = RolloutEngine(
        policy,
        image_search=Thumbs(),
        encoder=turn_encoder,
        limits=RolloutLimits(max_total_tokens=budget),
    )
    (traj,) = engine.run([task], seeds=[0])
    assert traj.end_reason is EndReason.CONTEXT_FULL and len(traj.token_ids) <= budget
    n_pads = traj.token_ids.count(turn_encoder.encoder.image_pad_id)
    assert n_pads == sum(processor(i).num_tokens for i in traj.images) and len(traj.images) == 1
