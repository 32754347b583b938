"""The LLM judge against a loopback chat server: verdict parsing, caching, failures."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from loopback import json_reply, loopback_server

from mmsr.chat_client import ChatClient
from mmsr.rewards import score_trajectory
from mmsr.rewards.judge import JudgeError, LLMJudge, VerdictCache, parse_verdict


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("Same city.\nVERDICT: CORRECT", True),  # plain
        ("Different.\nverdict: incorrect.", False),  # case and a full stop
        ("VERDICT: CORRECT\nVERDICT: CORRECT", True),  # repeated, same verdict
        ("The answer is correct.", JudgeError),  # no verdict line
        ("VERDICT: CORRECT\nVERDICT: INCORRECT", JudgeError),  # conflicting verdicts
        ("VERDICT: PROBABLY", JudgeError),  # not a verdict
        ("I think VERDICT: CORRECT", JudgeError),  # not on a line of its own
        ("", JudgeError),  # empty
    ],
)
def test_parse_verdict(reply: str, expected: object) -> None:
    if expected is JudgeError:
        with pytest.raises(JudgeError):
            parse_verdict(reply)
    else:
        assert parse_verdict(reply) is expected


def _server(replies: list[str], seen: list[dict[str, Any]]) -> Any:
    def handler(method: str, path: str, headers: dict[str, str], body: bytes) -> Any:
        seen.append(json.loads(body))
        text = replies[min(len(seen) - 1, len(replies) - 1)]
        return json_reply(
            200, {"choices": [{"message": {"content": text}, "finish_reason": "stop"}]}
        )

    return loopback_server(handler)


def test_judge_asks_once_and_caches_across_instances(tmp_path: Path) -> None:
    seen: list[dict[str, Any]] = []
    with _server(["Same.\nVERDICT: CORRECT"], seen) as url:
        judge = LLMJudge(ChatClient(url, "judge-model"), VerdictCache(tmp_path / "v.sqlite"))
        assert judge.judge("Capital?", "Paris, France", ["Paris"]) is True
        assert judge.judge("Capital?", "Paris, France", ["Paris"]) is True
        again = LLMJudge(ChatClient(url, "judge-model"), VerdictCache(tmp_path / "v.sqlite"))
        assert again.judge("Capital?", "Paris, France", ["Paris"]) is True
    assert len(seen) == 1 and (judge.hits, judge.misses, again.hits) == (1, 1, 1)
    body = seen[0]
    assert body["temperature"] == 0.0 and body["model"] == "judge-model"
    assert "Paris, France" in body["messages"][1]["content"]
    assert "VERDICT: CORRECT" in body["messages"][0]["content"]


def test_unparseable_reply_is_recorded_not_counted_correct(tmp_path: Path) -> None:
    seen: list[dict[str, Any]] = []
    with _server(["Looks right to me!"], seen) as url:
        judge = LLMJudge(ChatClient(url, "m"), VerdictCache(tmp_path / "v.sqlite"))
        turns = ["<reason>r</reason><answer>Paris</answer>"]
        r = score_trajectory(turns, ["Paris"], mode="judge", judge=judge)
        assert r.accuracy == 0.0 and r.error is not None and "unparseable" in r.error
        with pytest.raises(JudgeError):
            judge.judge("q", "Paris", ["Paris"])
    # nothing unusable was cached: the next run asks again
    assert len(seen) == 2
