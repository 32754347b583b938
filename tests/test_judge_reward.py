"""The judge as a reward: ``score_many`` in ``judge`` mode (GRPO and veRL) against a loopback
judge — one call per distinct (question, answer), failures scored 0 and counted."""

from __future__ import annotations

import json
from typing import Any

from loopback import json_reply, loopback_server

from mmsr.integrations.verl.reward import compute_score_batch
from mmsr.rewards import RewardConfig
from mmsr.rewards.judge import shared_judge


def _judge_server(seen: list[dict[str, Any]]) -> Any:
    def handler(method: str, path: str, headers: dict[str, str], body: bytes) -> Any:
        request = json.loads(body)
        seen.append(request)
        texts = [p["text"] for p in request["messages"][1]["content"]]
        if "Candidate answer: boom" in texts:
            return json_reply(400, {"error": "refused"})
        verdict = "Yes" if "Candidate answer: Paris" in texts else "No"
        reply = {"choices": [{"message": {"content": f"<judge>{verdict}</judge>"}}]}
        return json_reply(200, reply)

    return handler


def _turn(answer: str) -> str:
    return f"<reason>r</reason><answer>{answer}</answer>"


def test_veRL_batch_scores_with_the_judge(monkeypatch: Any) -> None:
    seen: list[dict[str, Any]] = []
    with loopback_server(_judge_server(seen)) as url:
        endpoint = f"{url}#judge-model"
        answers = ["Paris", "Paris", "Lyon", "boom"]  # a repeated answer is judged once
        infos = [{"mmsr_turns": [_turn(a)], "question": "Capital?"} for a in answers]
        results = compute_score_batch(
            ["fvqa"] * 4, [""] * 4, ["Paris"] * 4, infos, mode="judge", judge_endpoint=endpoint
        )
        judge = shared_judge(endpoint)
    assert [r["acc"] for r in results] == [1.0, 1.0, 0.0, 0.0]
    assert [r["judge_failed"] for r in results] == [0.0, 0.0, 0.0, 1.0]
    assert results[0]["score"] == 1.0 and results[3]["score"] == 0.1  # format only
    assert len(seen) == 3 and all(r["top_p"] == 0.1 for r in seen)
    assert judge.failures == 1  # type: ignore[attr-defined]


def test_grpo_scoring_goes_through_the_judge() -> None:
    from types import SimpleNamespace

    from mmsr.train.grpo import score_all
    from mmsr.types import Sample

    seen: list[dict[str, Any]] = []
    with loopback_server(_judge_server(seen)) as url:
        reward = RewardConfig(mode="judge", judge_endpoint=f"{url}#grpo-judge")
        trajectories = [SimpleNamespace(assistant_texts=[_turn(a)]) for a in ("Paris", "Rome")]
        sample = Sample(id="q", question="Capital of France?", answer="Paris")
        scores = score_all(trajectories, [sample, sample], reward)
    assert [s.accuracy for s in scores] == [1.0, 0.0] and len(seen) == 2
    assert all(s.error is None for s in scores)
