"""``mmsr eval --protocol paper``: the paper's judge (image, question, ground truth and
candidate as separate parts, top_p 0.1, ``<judge>Yes</judge>``), untagged baseline answers,
the release's image resizing, greedy decoding and its response length — against a loopback
chat server playing both the policy and the judge; a judge that fails is recorded per
question and the run finishes."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path
from typing import Any

import pytest
from _data_builders import world_row, write_world
from loopback import json_reply, loopback_server
from PIL import Image

from mmsr.cli import main
from mmsr.eval.protocols import RELEASE_MAX_NEW_TOKENS, release_resize
from mmsr.rewards.judge import PAPER_JUDGE_RULES, JudgeError, parse_judge_tag


def _image_size(url: str) -> tuple[int, int]:
    data = base64.b64decode(url.partition(",")[2])
    return Image.open(io.BytesIO(data)).size


def _handler(seen: list[dict[str, Any]]) -> Any:
    def handler(method: str, path: str, headers: dict[str, str], body: bytes) -> Any:
        request = json.loads(body)
        seen.append(request)
        messages = request["messages"]
        if request["model"] == "judge-model":
            texts = [p["text"] for p in messages[1]["content"] if p["type"] == "text"]
            if 'Ground truth: ["Country1", "C1"]' in texts:  # the judge fails on this one
                return json_reply(400, {"error": "refused"})
            return json_reply(200, _reply("<judge>Yes</judge>"))
        question = messages[0]["content"][-1]["text"]
        return json_reply(200, _reply("Country" + question.split("#")[1].split()[0]))

    return handler


def _reply(text: str) -> dict[str, Any]:
    return {"choices": [{"message": {"content": text}, "finish_reason": "stop"}]}


def _run(data: Path, out: Path, url: str, *extra: str) -> int:
    args = ["eval", "--policy", f"openai:{url}#policy-model", "--method", "direct"]
    args += ["--data", str(data), "--out", str(out), "--judge", f"{url}#judge-model"]
    return main([*args, "--protocol", "paper", "--no-progress", *extra])


def test_paper_protocol_end_to_end(tmp_path: Path) -> None:
    data = write_world(tmp_path / "test.parquet", [world_row(i) for i in range(3)])
    seen: list[dict[str, Any]] = []
    with loopback_server(_handler(seen)) as url:
        assert _run(data, tmp_path / "run", url) == 0
    policy = [r for r in seen if r["model"] == "policy-model"]
    judge = [r for r in seen if r["model"] == "judge-model"]
    assert len(policy) == 3 and len(judge) == 3
    # greedy, the release's response length, the question image resized (8x8 -> 512x512)
    assert all(r["temperature"] == 0.0 for r in policy)
    assert all(r["max_tokens"] == RELEASE_MAX_NEW_TOKENS for r in policy)
    parts = policy[0]["messages"][0]["content"]
    (policy_image,) = [p["image_url"]["url"] for p in parts if p["type"] == "image_url"]
    assert _image_size(policy_image) == (512, 512)
    # an untagged prompt for the direct baseline
    prompt = policy[0]["messages"][0]["content"][-1]["text"]
    assert "<answer>" not in prompt and "no tags" in prompt
    # the judge: top_p 0.1, our system prompt, image + three separate text fields
    for request in judge:
        assert request["top_p"] == 0.1
        system, user = request["messages"]
        assert system == {"role": "system", "content": PAPER_JUDGE_RULES}
        kinds = [p["type"] for p in user["content"]]
        assert kinds == ["image_url", "text", "text", "text"]
        texts = [p["text"] for p in user["content"][1:]]
        assert texts[0].startswith("Question: Which country")
        assert texts[1].startswith('Ground truth: ["Country')  # every accepted answer
        assert texts[2].startswith("Candidate answer: Country")
    lines = [json.loads(x) for x in (tmp_path / "run/trajectories.jsonl").read_text().splitlines()]
    by_id = {line["id"]: line for line in lines}
    # the untagged replies are the answers, scored by EM and by the judge
    assert [by_id[f"world-{i}"]["answer"] for i in range(3)] == ["Country0", "Country1", "Country2"]
    assert by_id["world-0"]["judge"] is True and by_id["world-2"]["judge"] is True
    assert by_id["world-1"]["judge"] is None and "HTTP 400" in by_id["world-1"]["judge_error"]
    metrics = json.loads((tmp_path / "run/metrics.json").read_text())
    assert metrics["overall"]["accuracy_em"] == 1.0
    assert metrics["overall"]["accuracy_judge"] == 1.0  # over the two verdicts
    assert metrics["run"]["judge_unusable"] == 1 and metrics["run"]["protocol"] == "paper"
    saved = json.loads((tmp_path / "run/config.json").read_text())
    assert saved["protocol"]["name"] == "paper" and saved["protocol"]["resize_images"] is True
    assert saved["limits"]["max_new_tokens"] == RELEASE_MAX_NEW_TOKENS


def test_a_supplied_prompt_and_a_text_only_judge(tmp_path: Path) -> None:
    data = write_world(tmp_path / "test.parquet", [world_row(0)])
    prompt = tmp_path / "judge.txt"
    prompt.write_text("Say <judge>Yes</judge> or <judge>No</judge>.", encoding="utf-8")
    seen: list[dict[str, Any]] = []
    with loopback_server(_handler(seen)) as url:
        extra = ["--judge-prompt", str(prompt), "--no-judge-images"]
        assert _run(data, tmp_path / "run", url, *extra) == 0
    (request,) = [r for r in seen if r["model"] == "judge-model"]
    assert request["messages"][0]["content"] == prompt.read_text(encoding="utf-8")
    assert [p["type"] for p in request["messages"][1]["content"]] == ["text"] * 3


def test_the_paper_protocol_refuses_sampling_and_a_missing_judge(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = write_world(tmp_path / "test.parquet", [world_row(0)])
    base = ["eval", "--policy", "scripted:abstain", "--method", "direct", "--data", str(data)]
    base += ["--out", str(tmp_path / "run"), "--protocol", "paper"]
    assert main(base) != 0
    assert "give --judge" in capsys.readouterr().err
    assert main([*base, "--judge", "http://127.0.0.1:9#j", "--temperature", "0.7"]) != 0
    assert "greedily" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("reply", "verdict"),
    [
        ("<judge>Yes</judge>", True),  # the plain verdict
        ("Reasoning first. <judge>No</judge>", False),  # text around it is fine
        ("<JUDGE> yes </JUDGE>", True),  # case and spaces
        ("<judge>Yes</judge><judge>No</judge>", None),  # conflicting verdicts
        ("Yes", None),  # no tag
    ],
)
def test_parse_judge_tag(reply: str, verdict: bool | None) -> None:
    if verdict is None:
        with pytest.raises(JudgeError):
            parse_judge_tag(reply)
    else:
        assert parse_judge_tag(reply) is verdict


def test_release_resize_keeps_images_between_the_bounds() -> None:
    big = release_resize(Image.new("RGB", (3000, 3000)))
    assert big.width * big.height <= 672 * 672 * 2 and big.size == (950, 950)
    assert release_resize(Image.new("RGB", (600, 600))).size == (600, 600)  # left as it is
