"""The SFT teacher on a small world: well-formed conversations on every path, and drills that
cover every entity and cannot be memorised."""

from __future__ import annotations

from collections import Counter

import pytest

from mmsr.protocol import IMAGE_PLACEHOLDER
from mmsr.protocol.actions import parse_action
from mmsr.rewards import score_trajectory
from mmsr.teacher.draw import DRAWERS, KINDS, Teacher, TeacherConfig
from mmsr.teacher.turns import with_entity
from mmsr.teacher.world_kit import WorldKit
from mmsr.types import Answer, ImageHit, ImageSearch, Role, TextSearch, Turn


def _assistant(turns: list[Turn]) -> list[str]:
    return [t.text for t in turns if t.role is Role.ASSISTANT]


def _final_answer(turns: list[Turn]) -> str:
    action = parse_action(_assistant(turns)[-1])
    assert isinstance(action, Answer), _assistant(turns)
    return action.text


def _results_text(turns: list[Turn]) -> str:
    return "\n".join(t.text for t in turns if t.role is Role.USER and "<information>" in t.text)


@pytest.mark.parametrize(
    "kind", [k for k in KINDS if k not in ("know_not", "decide", "decide_full")]
)
def test_every_kind_is_well_formed(kit: WorldKit, kind: str) -> None:
    teacher = Teacher(kit, seed=1)
    for _ in range(12):
        turns = teacher.draw(kind)
        texts = _assistant(turns)
        # format 1 under the real reward, whatever the path
        assert score_trajectory(texts, [_final_answer(turns)]).format_score == 1.0, texts
        # roles alternate user/assistant and end on an assistant turn
        assert [t.role for t in turns] == [Role.USER, Role.ASSISTANT] * (len(turns) // 2)
        for turn in turns:
            assert turn.text.count(IMAGE_PLACEHOLDER) == len(turn.images)
        if len(texts) > 1:  # an answer after a search is copied from what the search returned
            assert _final_answer(turns) in _results_text(turns)


def test_know_not_is_the_first_search_on_a_fresh_tail_picture(kit: WorldKit) -> None:
    teacher = Teacher(kit, seed=8)
    knowledge = {e.name: e.knowledge for e in kit.entities}
    moves: Counter[str] = Counter()
    images = set()
    for _ in range(60):
        turns = teacher.draw("know_not")
        assert [t.role for t in turns] == [Role.USER, Role.ASSISTANT]
        assert "<search>" not in turns[0].text and "<text_search>" not in turns[0].text  # bare
        action = parse_action(turns[1].text)
        assert isinstance(action, ImageSearch | TextSearch), turns[1].text
        moves[type(action).__name__] += 1
        if isinstance(action, TextSearch):  # a named question: the query names its tail entity
            assert knowledge[next(n for n in knowledge if action.query.startswith(n))] == "tail"
        else:  # never a name: the drill teaches not knowing, not the answer
            assert not any(name in turns[1].text for name in knowledge)
            images.add(turns[0].images[0].tobytes())
    assert moves["ImageSearch"] > 0 and len(images) == moves["ImageSearch"]


def test_decide_mixes_known_and_unknown_pictures_in_one_batch(kit: WorldKit) -> None:
    teacher = Teacher(kit, seed=9)
    knowledge = {e.name: e.knowledge for e in kit.entities}
    seen: Counter[str] = Counter()
    for i in range(80):
        turns = teacher.draw(("decide", "decide_full")[i % 2])
        assert [t.role for t in turns] == [Role.USER, Role.ASSISTANT]
        prompt = "protocol" if "<search>" in turns[0].text else "bare"
        assert prompt == ("bare", "protocol")[i % 2]
        action = parse_action(turns[1].text)
        if isinstance(action, Answer):  # a head picture: recognised and answered
            named = next(
                n
                for n in knowledge
                if f"shows {n}." in turns[1].text or f"is {n}." in turns[1].text
            )
            assert knowledge[named] == "head"
            seen[f"head:{prompt}"] += 1
        else:  # a tail picture: searched, and never named unless the question names it
            assert isinstance(action, ImageSearch | TextSearch), turns[1].text
            if isinstance(action, ImageSearch):
                assert not any(name in turns[1].text for name in knowledge)
            seen[f"tail:{prompt}"] += 1
    # 40 draws of each kind hold both needs (≈ 20 each); decide is bare, decide_full full
    assert (
        min(seen[k] for k in ("head:bare", "head:protocol", "tail:bare", "tail:protocol")) >= 8
    ), seen


def test_head_and_tail_paths_are_all_taken(kit: WorldKit) -> None:
    teacher = Teacher(kit, TeacherConfig(head_direct=0.5), seed=2)
    shapes: Counter[str] = Counter()
    for kind in ("head", "tail"):
        for _ in range(60):
            actions = [type(parse_action(t)).__name__ for t in _assistant(teacher.draw(kind))]
            shapes[f"{kind}:{'>'.join(actions)}"] += 1
    assert shapes["head:Answer"] > 0  # head answered directly …
    assert shapes["head:ImageSearch>Answer"] + shapes["head:ImageSearch>TextSearch>Answer"] > 0
    assert shapes["tail:ImageSearch>Answer"] > 0  # … and the tail's three search paths
    assert shapes["tail:ImageSearch>TextSearch>Answer"] > 0
    assert shapes["tail:TextSearch>Answer"] > 0
    assert not any(key.startswith("tail:Answer") for key in shapes)  # tail always searches


def test_searched_head_questions_recall_their_answer_when_asked_to(kit: WorldKit) -> None:
    """``head_answers="recall"``: after the results, a head question ends in the direct
    answer's words ("The image shows …" / "This is …"); a tail question still reads the hits."""
    teacher = Teacher(kit, TeacherConfig(head_direct=0.0, head_answers="recall"), seed=2)
    copying = Teacher(kit, TeacherConfig(head_direct=0.0), seed=2)
    recalled = 0
    for _ in range(40):
        last = _assistant(teacher.draw("head"))[-1]
        assert last.startswith(("<reason>The image shows ", "<reason>This is ")), last
        assert "The results say" not in last
        recalled += 1
    assert recalled == 40
    read = [_assistant(copying.draw("head"))[-1] for _ in range(40)]
    assert any("The results say" in t for t in read)  # the default copies, as before
    for _ in range(20):
        assert not _assistant(teacher.draw("tail"))[-1].startswith("<reason>The image shows ")
    knowledge = {e.name: e.knowledge for e in kit.entities}
    seen: Counter[str] = Counter()
    for _ in range(80):  # rag: the query names the entity; head recalls, tail reads
        texts = _assistant(teacher.draw("rag"))
        query = next(a.query for a in map(parse_action, texts) if isinstance(a, TextSearch))
        name = max((n for n in knowledge if query.startswith(n)), key=len)
        seen[knowledge[name]] += 1
        assert ("The results" in texts[-1]) == (knowledge[name] == "tail"), texts[-1]
    assert seen["head"] and seen["tail"], seen
    with pytest.raises(ValueError, match="head_answers"):
        TeacherConfig(head_answers="guess")


def test_text_queries_name_the_entity(kit: WorldKit) -> None:
    teacher = Teacher(kit, seed=3)
    names = {e.name for e in kit.entities}
    for _ in range(30):
        for text in _assistant(teacher.draw("copy2")):
            action = parse_action(text)
            if isinstance(action, TextSearch):
                assert any(action.query.startswith(name) for name in names), action.query


def test_copy_drills_cover_every_entity_head_and_tail(kit: WorldKit) -> None:
    teacher = Teacher(kit, seed=4)
    answers = Counter(_final_answer(teacher.draw("copy1")) for _ in range(600))
    names = {e.name for e in kit.entities}
    assert set(answers) == names
    assert {e.knowledge for e in kit.entities} == {"head", "tail"}


def test_tail_only_copy_drills_never_search_on_a_head_picture(kit: WorldKit) -> None:
    teacher = Teacher(kit, TeacherConfig(copy_entities="tail"), seed=4)
    knowledge = {e.name: e.knowledge for e in kit.entities}
    answers = {_final_answer(teacher.draw("copy1")) for _ in range(200)}
    assert answers and {knowledge[a] for a in answers} == {"tail"}
    for _ in range(40):  # the 2-hop drill's entity is the one its text search names
        queries = [
            a.query
            for a in map(parse_action, _assistant(teacher.draw("copy2")))
            if isinstance(a, TextSearch)
        ]
        named = {n for n in knowledge if any(q.startswith(f"{n} ") for q in queries)}
        assert named and all(knowledge[n] == "tail" for n in named), queries
    with pytest.raises(ValueError, match="copy_entities"):
        TeacherConfig(copy_entities="head")


def test_two_hop_drill_values_are_random_so_they_must_be_copied(kit: WorldKit) -> None:
    teacher = Teacher(kit, seed=5)
    flag = next(e for e in kit.entities if e.kind == "flag")
    teacher.context.copy_fact_pool = [flag]  # always the same entity
    answers = {_final_answer(teacher.draw("copy2")) for _ in range(20)}
    assert len(answers) > 3  # not one memorisable value per (entity, fact)


def test_head_drills_use_fresh_images_of_head_entities(kit: WorldKit) -> None:
    teacher = Teacher(kit, seed=6)
    head = {e.name for e in kit.entities if e.knowledge == "head"}
    images = []
    for _ in range(10):
        turns = teacher.draw("head_drill")
        assert len(turns) == 2 and isinstance(parse_action(turns[1].text), Answer)
        assert any(name in turns[1].text for name in head)
        images.append(turns[0].images[0].tobytes())
    assert len(set(images)) == len(images)


def test_with_entity_places_a_missed_entity_once() -> None:
    import random

    hits = [ImageHit(f"t{i}", f"u{i}", None) for i in range(5)]
    own = ImageHit("own", "u", None)
    placed = with_entity(hits, own, random.Random(0))
    assert [h.title for h in placed].count("own") == 1 and len(placed) == 5
    found = [*hits[:4], own]
    assert with_entity(found, own, random.Random(0)) == found  # a hit already there is kept


def test_the_teacher_is_seeded(kit: WorldKit) -> None:
    def texts(seed: int) -> list[str]:
        teacher = Teacher(kit, seed=seed)
        return [t.text for _ in range(8) for t in teacher.draw(teacher.kind())]

    assert texts(11) == texts(11)
    assert texts(11) != texts(12)


def test_image_search_turn_is_the_protocol_action() -> None:
    from mmsr.teacher.turns import SEARCH_IMAGE

    assert isinstance(parse_action(SEARCH_IMAGE), ImageSearch)


def test_weights_by_name() -> None:
    from mmsr.teacher.config import KindWeights, parse_weights

    named = parse_weights("know=0.5, tail=0.25").as_tuple()
    assert len(named) == len(KINDS) and sum(named) == 0.75
    assert named[KINDS.index("know")] == 0.5 and named[KINDS.index("head")] == 0.0
    # a positional list no longer exists: adding a kind could shift it silently
    for bad in ("kno=1", "0.1,0.2", "know=x", "know=0", "know=-1,tail=2", ""):
        with pytest.raises(ValueError, match=r"teacher weights"):
            parse_weights(bad)
    # the kinds' order seeds the mixture's draws: a reordered field would change every run
    historical = ("head", "tail", "head_drill", "copy1", "copy2", "prime1", "prime2")
    assert (
        *historical,
        "rag",
        "oracle",
        "direct",
        "know",
        "know_not",
        "decide",
        "decide_full",
    ) == KINDS
    assert KindWeights().as_tuple()[:2] == (0.15, 0.2)


def test_saved_mixtures_read_back_by_name_or_as_an_old_list() -> None:
    from dataclasses import asdict

    from mmsr.teacher.config import KindWeights, saved_weights, weights_text

    mix = KindWeights(head=0.2, know_not=0.3)
    assert saved_weights(asdict(mix)) == mix  # what sft_config.json holds now
    old = saved_weights([0.5, 0.5])  # saved when the first two kinds were all there was
    assert (old.head, old.tail, old.know) == (0.5, 0.5, 0.0)
    assert weights_text(mix) == "head=0.2,tail=0.2,head_drill=0.15,copy1=0.15,copy2=0.15," + (
        "prime1=0.1,prime2=0.1,know_not=0.3"
    )
    for bad in ([0.1] * (len(KINDS) + 1), [], {"nope": 1.0}):
        with pytest.raises(ValueError):
            saved_weights(bad)


def test_every_kind_has_its_drawer_and_unknown_kinds_are_refused(kit: WorldKit) -> None:
    assert tuple(DRAWERS) == KINDS
    with pytest.raises(ValueError, match="unknown teacher kind 'kno'"):
        Teacher(kit, seed=0).draw("kno")


def test_quoted_values_stand_behind_the_pages_own_key(kit: WorldKit) -> None:
    """``value_reason="quote"``: the answer's reason ends in the page's key and the value,
    the very words the hits hold; the default keeps our own wording."""
    quoting = Teacher(kit, TeacherConfig(value_reason="quote"), seed=7)
    for kind in ("prime2", "copy2", "tail"):
        for _ in range(15):
            turns = quoting.draw(kind)
            last, value = _assistant(turns)[-1], _final_answer(turns)
            if "The results say" not in last:
                continue  # a naming question: no fact read
            quoted = last.split("</reason>")[0].rsplit(": ", 1)[-1].removesuffix(".")
            assert quoted.endswith(f" {value}"), last
            assert quoted in _results_text(turns), (quoted, kind)  # the hits' own words
    plain = Teacher(kit, seed=7)
    assert any(" is " in _assistant(plain.draw("prime2"))[-1] for _ in range(5))
    with pytest.raises(ValueError, match="value_reason"):
        TeacherConfig(value_reason="sing")
