"""The need labels are for measurement only: no policy ever receives them (issue #11).

A sample's ``category``, ``search_need``, ``knowledge`` and ``entity`` are set to sentinel
strings; every request the policy gets, in every evaluation method and in the task GRPO rolls
out, must be free of them. (``oracle`` picks the method by the need label, by definition; it
still never shows a label, and the queries are the model's.)
"""

from __future__ import annotations

import dataclasses

import pytest
from test_eval_methods import ANSWER, IMG, TXT, ImageTool, Recording, TextTool

from mmsr.eval.methods import EvalItem, MethodContext, get_method
from mmsr.rollout import RolloutTask
from mmsr.search.base import SearchBackends
from mmsr.types import Sample

SENTINELS = ("CATEGORYSENTINEL", "KNOWLEDGESENTINEL", "ENTITYSENTINEL")


def _sample() -> Sample:
    return Sample(
        id="q1",
        question="Where is this tower?",
        answer="Paris",
        image=None,
        category="CATEGORYSENTINEL",
        extra={"search_need": "both", "knowledge": "KNOWLEDGESENTINEL", "entity": "ENTITYSENTINEL"},
    )


def _texts(policy: Recording) -> str:
    return "\n".join(turn.text for request in policy.requests for turn in request.turns)


@pytest.mark.parametrize("method", ["on-demand", "direct", "rag", "oracle"])
def test_no_method_shows_the_labels(method: str) -> None:
    item = EvalItem.from_sample(_sample(), "QIMG")
    policy = Recording(IMG, TXT, ANSWER)
    ctx = MethodContext(policy, SearchBackends(image=ImageTool(), text=TextTool()))
    get_method(method).run([item], ctx)
    shown = _texts(policy)
    assert policy.requests and "Where is this tower?" in shown
    for sentinel in SENTINELS:
        assert sentinel not in shown, (method, sentinel)
    for word in ("search_need", "search_free", "search_required"):  # label names
        assert word not in shown, (method, word)


def test_a_rollout_task_has_no_label_fields() -> None:
    # GRPO builds RolloutTask(id, question, image) from each sample; nothing else reaches the
    # engine, so no label can reach the policy's prompt or the reward (which reads golds only).
    names = {f.name for f in dataclasses.fields(RolloutTask)}
    assert names.isdisjoint({"category", "need", "search_need", "knowledge", "entity", "extra"})


def test_the_grpo_loop_builds_tasks_from_id_question_and_image_only() -> None:
    import inspect

    from mmsr.train import grpo

    source = inspect.getsource(grpo)  # the loop and its probe
    built: list[str] = [line.strip() for line in source.splitlines() if "RolloutTask(" in line]
    assert built, "the GRPO loop no longer builds RolloutTask: update this test"
    for line in built:
        assert "extra" not in line and "category" not in line, line
