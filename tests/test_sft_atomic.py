"""Fixed random codes for the atomic tokens: set from a seed, untouched by training steps and
by weight decay, while every other parameter still trains; the primer conversations."""

from __future__ import annotations

from typing import Any

import tiny_models
import torch

from mmsr.models import added_atomic_ids, build_tiny_model, train_tokenizer
from mmsr.policy.local_model import build_hf_policy
from mmsr.teacher.draw import PRIMER_KINDS, Teacher
from mmsr.teacher.turns import BARE_PROMPTS
from mmsr.teacher.world_kit import WorldKit
from mmsr.train.atomic import embedding_weight, freeze_rows, param_groups, set_random_codes
from mmsr.train.batch import collate, teacher_sequence
from mmsr.train.sft import sft_loss
from mmsr.types import Role, Turn

ATOMIC = ["Zanzibar Republic", "Qatar", ".qa", "+974"]


def _setup() -> tuple[Any, Any, Any, list[int]]:
    texts = ["the capital of Qatar is Doha", "hello world"] * 20 + tiny_models.corpus()
    tok = train_tokenizer(texts, vocab_size=400, atomic_tokens=ATOMIC)
    model = build_tiny_model("micro", tok, seed=0)
    return model, tok, tiny_models.image_processor("micro"), added_atomic_ids(tok)


def test_added_atomic_ids_are_the_atomic_tokens_only() -> None:
    _, tok, _, ids = _setup()
    assert sorted(tok.convert_ids_to_tokens(ids)) == sorted(ATOMIC)
    assert all(not tok.convert_ids_to_tokens(i).startswith("<|") for i in ids)


def test_codes_are_seeded_and_nearly_orthogonal() -> None:
    model, _, _, ids = _setup()
    set_random_codes(model, ids, 0.12, seed=5)
    first = embedding_weight(model)[ids].detach().clone()
    set_random_codes(model, ids, 0.12, seed=5)
    torch.testing.assert_close(embedding_weight(model)[ids], first)
    set_random_codes(model, ids, 0.12, seed=6)
    assert not torch.allclose(embedding_weight(model)[ids], first)
    unit = torch.nn.functional.normalize(first, dim=1)
    cos = (unit @ unit.T - torch.eye(len(ids))).abs().max()
    assert cos < 0.5  # random codes in the model's width are far from each other


def test_frozen_rows_survive_training_steps_and_weight_decay() -> None:
    model, tok, processor, ids = _setup()
    set_random_codes(model, ids, 0.12, seed=0)
    freeze_rows(model, ids)
    model.train(True)
    optimizer = torch.optim.AdamW(param_groups(model, weight_decay=0.5), lr=1e-2)
    weight = embedding_weight(model)
    before = weight.detach().clone()
    others_before = [p.detach().clone() for p in model.parameters() if p is not weight]
    _, turn_encoder = build_hf_policy(model, tok, processor)
    turns = [
        Turn(Role.USER, "the capital of Qatar?"),
        Turn(Role.ASSISTANT, "<reason>Qatar.</reason><answer>Doha Qatar .qa</answer>"),
    ]
    batch = collate([teacher_sequence(turn_encoder.encoder, turns)], model, processor, 0)
    for _ in range(3):
        optimizer.zero_grad()
        sft_loss(model, batch, []).backward()  # type: ignore[no-untyped-call]
        optimizer.step()
    after = weight.detach()
    torch.testing.assert_close(after[ids], before[ids], rtol=0, atol=0)
    rest = [i for i in range(len(before)) if i not in set(ids)]
    assert not torch.equal(after[rest], before[rest])  # the other rows train …
    others = [p for p in model.parameters() if p is not weight]
    assert any(not torch.equal(a, b) for a, b in zip(others, others_before, strict=True))


def test_primers_are_short_first_hit_copies(kit: WorldKit) -> None:
    teacher = Teacher(kit, seed=7)
    for kind in PRIMER_KINDS:
        for _ in range(20):
            turns = teacher.draw(kind)
            assert not any(t.images for t in turns)  # text only
            results = turns[0].text
            assert results.startswith("<information>\n1. ")
            first = results.split("\n")[1]
            name = turns[1].text.split("The results show ")[1].split(".")[0]
            assert first == f"1. {name}", (first, name)
            # no instructions: the rendered turn ends with the question
            assert results.rstrip("\n").split("\n")[-1].startswith("Question: ")
    assert BARE_PROMPTS.after_image_search == ""


def test_the_vision_tower_gets_its_own_learning_rate_share() -> None:
    model, *_ = _setup()
    plain = param_groups(model, weight_decay=0.1)
    assert len(plain) == 2 and all(g["lr_scale"] == 1.0 for g in plain)
    groups = param_groups(model, weight_decay=0.1, vision_lr_scale=0.2)
    assert [g["lr_scale"] for g in groups] == [1.0, 1.0, 0.2]
    tower = {id(p) for p in model.model.visual.parameters()}
    assert {id(p) for p in groups[2]["params"]} == tower
    assert not tower & {id(p) for g in groups[:2] for p in g["params"]}
    every = [id(p) for g in groups for p in g["params"]]
    assert sorted(every) == sorted(id(p) for p in model.parameters())
