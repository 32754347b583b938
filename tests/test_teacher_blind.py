"""The need-blind teacher (``TeacherConfig.decision = "blind"``): the search path by a coin of
``search_share`` whatever the picture, a guess (a head entity of the kind, its value) on a
tail picture answered directly, the kinds tied to the knowledge class refused, and need mode
(the default) left as it was."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from mmsr.protocol.actions import parse_action
from mmsr.rewards import score_trajectory
from mmsr.teacher import draw as draw_module
from mmsr.teacher.config import KindWeights, TeacherConfig, weights_from_names
from mmsr.teacher.draw import Teacher
from mmsr.teacher.turns import Question, applicable, guess_entity, guessed_direct
from mmsr.teacher.world_kit import WorldKit
from mmsr.types import Answer, ImageSearch, Role, TextSearch, Turn
from mmsr.world.entities import Entity

BLIND_WEIGHTS = weights_from_names({"head": 1, "tail": 1, "decide": 1, "decide_full": 1})


def blind(search_share: float = 0.5) -> TeacherConfig:
    return TeacherConfig(weights=BLIND_WEIGHTS, decision="blind", search_share=search_share)


def _entity(id_: str, kind: str, knowledge: str, **facts: str) -> Entity:
    return Entity(id_, id_.title(), kind, (id_.title(),), dict(facts), knowledge)


HEADS = [
    _entity("ha", "flag", "head", capital="A-town"),
    _entity("hb", "flag", "head", capital="B-town"),
    _entity("hc", "flag", "head"),  # no capital: never the guess for a capital
    _entity("hd", "animal", "head", genus="Dgenus"),
]


def test_need_is_the_default_and_search_share_does_not_reach_it(kit: WorldKit) -> None:
    config = TeacherConfig()
    assert (config.decision, config.search_share) == ("need", 0.5)

    def texts(teacher_config: TeacherConfig) -> list[str]:
        teacher = Teacher(kit, teacher_config, seed=4)
        kinds = ("head", "tail", "decide", "decide_full")
        return [t.text for kind in kinds for _ in range(4) for t in teacher.draw(kind)]

    # need mode draws exactly as before whatever search_share says (the bench
    # bench/teacher_digest.py pins the defaults' conversations byte for byte)
    assert texts(TeacherConfig(search_share=0.9)) == texts(TeacherConfig())


BAD: list[tuple[dict[str, Any], str]] = [
    ({"decision": "maybe"}, "decision must be one of need, blind"),
    ({"search_share": 1.5}, "search_share is a share between 0 and 1"),
    ({"search_share": -0.1}, "search_share is a share between 0 and 1"),
    # the kinds whose path is the knowledge class, by definition
    ({"decision": "blind", "weights": {"head": 1, "know": 0.1}}, "refuses the kinds know "),
    ({"decision": "blind", "weights": {"head": 1, "know_not": 0.1}}, "refuses the kinds know_not"),
    ({"decision": "blind", "weights": {"head": 1, "head_drill": 0.1}}, "kinds head_drill"),
    ({"decision": "blind", "weights": {"head": 1, "direct": 0.1}}, "refuses the kinds direct"),
    # the defaults' mixture has head_drill: blind mode names its own mixture
    ({"decision": "blind", "weights": {}}, "refuses the kinds head_drill"),
    # copy drills over tail pictures only would teach "search on tail"
    ({"decision": "blind", "weights": {"head": 1}, "copy_entities": "tail"}, "copy_entities 'all'"),
]  # fmt: skip


@pytest.mark.parametrize(("settings", "message"), BAD)
def test_blind_mode_refuses_what_ties_the_path_to_the_class(
    settings: dict[str, Any], message: str
) -> None:
    settings = dict(settings)
    if "weights" in settings:
        named = settings["weights"]
        settings["weights"] = weights_from_names(named) if named else KindWeights()
    with pytest.raises(ValueError, match=message):
        TeacherConfig(**settings)


def test_blind_mode_keeps_rag_oracle_and_the_copy_drills() -> None:
    names = {"head": 1, "tail": 1, "rag": 1, "oracle": 1, "copy1": 1, "copy2": 1, "prime1": 1}
    assert TeacherConfig(weights=weights_from_names(names), decision="blind").decision == "blind"
    # need mode still takes every kind and tail-only copy drills
    assert TeacherConfig(weights=KindWeights(know=1.0), copy_entities="tail").decision == "need"


def test_the_guess_is_a_head_entity_of_the_kind_with_the_fact() -> None:
    tail = _entity("tx", "flag", "tail", capital="X-town")
    guess = guess_entity(tail, "capital", HEADS)
    assert guess is not None and guess.id in ("ha", "hb")  # flags with a capital
    assert guess_entity(tail, "capital", HEADS) == guess  # the same every call
    assert guess_entity(tail, "capital", list(reversed(HEADS))) == guess  # whatever the order
    assert guess_entity(tail, None, HEADS) in HEADS[:3]  # naming: any head flag
    # no head entity of the kind: any head entity with the fact; none with it: nothing
    lizard = _entity("tl", "reptile", "tail", genus="Lgenus")
    assert guess_entity(lizard, "genus", HEADS) == HEADS[3]
    assert guess_entity(lizard, "family", HEADS) is None
    # never the entity itself, even when it is among the head entities
    assert guess_entity(HEADS[0], "capital", HEADS) == HEADS[1]


def test_the_guess_is_the_same_in_every_process() -> None:
    code = (
        "from mmsr.world.entities import Entity\n"
        "from mmsr.teacher.turns import guess_entity\n"
        "heads = [Entity(f'h{i}', f'H{i}', 'flag', (), {'capital': str(i)}, 'head') "
        "for i in range(50)]\n"
        "print(guess_entity(Entity('t', 'T', 'flag', (), {}, 'tail'), 'capital', heads).id)\n"
    )
    picked = {
        subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONHASHSEED": seed},
        ).stdout.strip()
        for seed in ("1", "2")
    }
    assert len(picked) == 1 and picked != {""}


def test_a_guessed_reply_names_the_guess_and_its_value() -> None:
    tail = _entity("tx", "flag", "tail", capital="X-town")
    guess = HEADS[0]
    unnamed = Question(tail, "capital", False, "What is the capital of this flag's country?", None)
    (turn,) = guessed_direct(unnamed, guess)
    assert turn.role is Role.ASSISTANT
    assert turn.text == (
        "<reason>The image shows Ha. Its capital is A-town.</reason><answer>A-town</answer>"
    )
    # the question names its entity: the name is kept, only the value is guessed
    named = Question(tail, "capital", True, "What is the capital of Tx?", None)
    assert guessed_direct(named, guess)[0].text == (
        "<reason>This is Tx. Its capital is A-town.</reason><answer>A-town</answer>"
    )
    naming = Question(tail, None, False, "What is this?", None)
    assert guessed_direct(naming, guess)[0].text == (
        "<reason>The image shows Ha.</reason><answer>Ha</answer>"
    )


def _recording(teacher: Teacher) -> list[Question]:
    """Records each question the teacher's drills picture (their true entity and fact)."""
    asked: list[Question] = []
    fresh = teacher.context.fresh_question

    def record(entity: Entity, templates: Any) -> Question:
        asked.append(fresh(entity, templates))
        return asked[-1]

    teacher.context.fresh_question = record  # type: ignore[method-assign]
    return asked


def _searches(turns: list[Turn]) -> bool:
    action = parse_action(turns[1].text)
    assert isinstance(action, Answer | ImageSearch | TextSearch), turns[1].text
    return not isinstance(action, Answer)


def test_blind_decide_searches_head_and_tail_pictures_alike(kit: WorldKit) -> None:
    teacher = Teacher(kit, blind(0.5), seed=3)
    asked = _recording(teacher)
    heads = teacher.context.head_entities
    searched: dict[str, list[bool]] = {"head": [], "tail": []}
    for i in range(400):
        turns = teacher.draw(("decide", "decide_full")[i % 4 == 0])
        q = asked[-1]
        assert [t.role for t in turns] == [Role.USER, Role.ASSISTANT]
        searched[q.entity.knowledge].append(_searches(turns))
        if _searches(turns):
            continue
        reply = parse_action(turns[1].text)
        assert isinstance(reply, Answer)
        if q.entity.knowledge == "head":  # recalled: the true value
            assert reply.text == q.value, turns[1].text
            continue
        guess = guess_entity(q.entity, q.fact, heads)
        assert guess is not None and guess.knowledge == "head"
        guessed = guess.name if q.fact is None else guess.facts[q.fact]
        assert reply.text == guessed
        if q.value != guessed:  # the true value is never said (it cannot be known) …
            said = turns[1].text.replace(q.entity.name, "")  # … but a named question's name is
            assert q.value not in said, turns[1].text
    assert teacher.skipped == 0
    for knowledge, paths in searched.items():  # the class mix is the need mode's 0.5 coin
        assert len(paths) > 150, (knowledge, len(paths))
        assert abs(sum(paths) / len(paths) - 0.5) <= 0.1, (knowledge, sum(paths), len(paths))


@pytest.mark.parametrize("share", [0.0, 1.0])
def test_a_search_share_of_0_or_1_takes_one_path_on_every_picture(
    kit: WorldKit, share: float
) -> None:
    teacher = Teacher(kit, blind(share), seed=5)
    asked = _recording(teacher)
    seen: Counter[tuple[str, bool]] = Counter()
    for _ in range(60):
        searched = _searches(teacher.draw("decide"))
        seen[(asked[-1].entity.knowledge, searched)] += 1
    assert seen[("head", share == 1.0)] and seen[("tail", share == 1.0)], seen
    assert not seen[("head", share != 1.0)] and not seen[("tail", share != 1.0)], seen


def test_blind_head_and_tail_questions_search_by_the_share(
    kit: WorldKit, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[Question] = []
    sample_question = draw_module._sample_question

    def record(c: Any, sample: Any) -> Question:
        asked.append(sample_question(c, sample))
        return asked[-1]

    monkeypatch.setattr(draw_module, "_sample_question", record)
    teacher = Teacher(kit, blind(0.3), seed=6)
    heads = teacher.context.head_entities
    for kind in ("head", "tail"):
        searched = 0
        for _ in range(60):
            turns = teacher.draw(kind)
            texts = [t.text for t in turns if t.role is Role.ASSISTANT]
            final = parse_action(texts[-1])
            assert isinstance(final, Answer)
            assert score_trajectory(texts, [final.text]).format_score == 1.0, texts
            q = asked[-1]
            assert q.entity.knowledge == kind
            if len(texts) > 1:
                searched += 1
            elif kind == "head":  # direct over a head picture: the true answer
                assert final.text == q.value
            else:  # direct over a tail picture: the guess's value
                guess = guess_entity(q.entity, q.fact, heads)
                assert guess is not None
                assert final.text == (guess.name if q.fact is None else guess.facts[q.fact])
        assert 0.15 <= searched / 60 <= 0.45, (kind, searched)


def test_every_tail_question_of_the_world_has_a_guess(kit: WorldKit) -> None:
    heads = [e for e in kit.entities if e.knowledge == "head"]
    for entity in (e for e in kit.entities if e.knowledge == "tail"):
        for template in applicable(entity):
            guess = guess_entity(entity, template.fact, heads)
            assert guess is not None and guess.knowledge == "head" and guess.id != entity.id
            assert template.fact is None or template.fact in guess.facts
            kin = [
                h
                for h in heads
                if h.kind == entity.kind and (template.fact is None or template.fact in h.facts)
            ]
            assert guess in kin or not kin, (entity.id, template.fact, guess.id)


def test_the_blind_settings_reach_sft_from_the_command_line_and_a_saved_config(
    tmp_path: Path,
) -> None:
    """``--teacher.decision blind --teacher.search_share 0.3`` (the generic overrides) build the
    SFT config; its saved ``sft_config.json`` keeps them, and the demo's ``sft_more`` stage,
    which continues a warm start with its own teacher, goes on blind (its logged command too)."""
    from mmsr.cli import build_parser
    from mmsr.config import config_to_dict
    from mmsr.demo.stages import sft_more_stage
    from mmsr.train.sft import load_sft_config
    from mmsr.train.sft_cli import sft_settings

    argv = ["train", "sft", "--world", "W", "--index", "I", "--out", "O"]
    argv += ["--weights", "head=0.3,tail=0.3,decide=0.4"]
    argv += ["--teacher.decision", "blind", "--teacher.search_share", "0.3"]
    args, rest = build_parser().parse_known_args(argv)
    config = load_sft_config(args.preset, sft_settings(args), rest)
    assert (config.teacher.decision, config.teacher.search_share) == ("blind", 0.3)
    saved = config_to_dict(config)
    assert saved["teacher"]["decision"] == "blind" and saved["teacher"]["search_share"] == 0.3
    (tmp_path / "sft_config.json").write_text(json.dumps(saved), encoding="utf-8")
    stage = sft_more_stage(tmp_path / "w", tmp_path / "i", tmp_path, 3, 1.0, tmp_path / "s")
    assert stage.config.teacher == config.teacher
    more, more_rest = build_parser().parse_known_args(list(stage.command))
    assert load_sft_config(more.preset, sft_settings(more), more_rest).teacher == config.teacher
    with pytest.raises(ValueError, match="refuses the kinds head_drill"):  # the preset's mixture
        load_sft_config("tiny-cpu", {}, ["--teacher.decision", "blind"])
