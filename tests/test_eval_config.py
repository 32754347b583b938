"""``EvalRunConfig`` (bad values, the command line that gives it back), the resume check on
saved configs (old and damaged ``config.json``), and ``ResultLine``'s exact JSON keys."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
from inspect_runs import direct, sample, searching

from mmsr.cli import build_parser
from mmsr.config import ConfigError
from mmsr.eval.cli import command_line, config_from_args
from mmsr.eval.config import EvalRunConfig, SavedEvalConfig, check_resume, write_saved
from mmsr.eval.loop import result_line
from mmsr.eval.records import ResultLine, eval_records
from mmsr.rewards import RewardConfig
from mmsr.rollout import RolloutLimits


def _cfg(tmp_path: Path, **changes: Any) -> EvalRunConfig:
    base = EvalRunConfig(
        policy="scripted:top-title", method="on-demand", data=tmp_path / "q.parquet", out=tmp_path
    )
    return dataclasses.replace(base, **changes)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"batch_size": 0}, "batch_size must be at least 1"),
        ({"concurrency": -2}, "concurrency must be at least 1"),
        ({"limits": RolloutLimits(max_new_tokens=0)}, "limits.max_new_tokens must be at least 1"),
        ({"limit": 0}, "limit must be at least 1"),  # 0 used to mean "no questions" (an error)
        ({"temperature": -0.5}, "temperature must be at least 0"),
        ({"reward": RewardConfig(mode="judge")}, "reward.mode 'judge' is not one of em, subem, f1"),
        ({"method": "nope"}, "unknown method 'nope'"),
        ({"policy": "nope:x"}, "unknown kind 'nope'"),
        ({"method": "rag", "prompts": Path("p")}, "--prompts applies to --method on-demand"),
        ({"device": "cuda"}, "--device applies to hf: and vllm: only"),  # a scripted policy
        ({"micro_batch_size": 4}, "--micro-batch-size applies to hf: and vllm: only"),
        ({"policy": "hf:m", "dtype": "int8"}, "dtype 'int8' is not one of"),
        ({"policy": "hf:m", "device": "tpu"}, "device 'tpu': expected cpu, cuda or cuda:N"),
        ({"policy": "hf:m", "micro_batch_size": -1}, "micro_batch_size must be >= 0"),
        ({"policy": "vllm:m", "device": "cuda:1"}, "CUDA_VISIBLE_DEVICES"),
        ({"policy": "vllm:m", "device": "cpu"}, "runs on the visible GPU"),
        ({"policy": "vllm:m", "micro_batch_size": 8}, "vLLM schedules its own batches"),
    ],
)
def test_bad_values_are_refused_naming_the_field(
    tmp_path: Path, changes: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        _cfg(tmp_path, **changes)


def test_the_command_line_gives_the_config_back(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, seed=3, limit=4, batch_size=48, progress=False, retry_failed=True)
    cfg = dataclasses.replace(cfg, search="local:/idx", temperature=0.7, benchmark="world")
    argv = command_line(cfg)
    assert argv[:5] == ["eval", "--policy", "scripted:top-title", "--method", "on-demand"]
    assert "--no-progress" in argv and "--retry-failed" in argv and "--model" not in argv
    assert config_from_args(build_parser().parse_args(argv)) == cfg
    # every default left out still parses to the same config
    plain = _cfg(tmp_path)
    assert config_from_args(build_parser().parse_args(command_line(plain))) == plain


def test_local_policies_device_dtype_and_micro_batches_round_trip(tmp_path: Path) -> None:
    hf = _cfg(tmp_path, policy="hf:m", device="cuda:1", dtype="bfloat16", micro_batch_size=8)
    assert config_from_args(build_parser().parse_args(command_line(hf))) == hf
    assert "--micro-batch-size" in command_line(hf)
    # the defaults: hf on the CPU in float32, vllm on the GPU in bfloat16, hf on cuda in bf16
    assert (
        _cfg(tmp_path, policy="hf:m").local_device(),
        _cfg(tmp_path, policy="hf:m").local_dtype(),
    ) == ("cpu", "float32")
    vllm = _cfg(tmp_path, policy="vllm:m")
    assert (vllm.local_device(), vllm.local_dtype()) == ("cuda", "bfloat16")
    assert _cfg(tmp_path, policy="hf:m", device="cuda").local_dtype() == "bfloat16"


@pytest.mark.parametrize(
    "changes",
    [
        {"seed": 1},
        {"temperature": 0.5},
        {"reward": RewardConfig(mode="f1")},
        {"limits": RolloutLimits(max_turns=2)},  # other turn or token budgets: other rollouts
        {"method": "rag"},
        {"policy": "scripted:never-search"},
    ],
)
def test_resume_with_a_changed_setting_is_refused_naming_it(
    tmp_path: Path, changes: dict[str, Any]
) -> None:
    write_saved(tmp_path, _cfg(tmp_path).saved(None))
    (field,) = changes
    with pytest.raises(ConfigError, match=rf"other settings \({field}\); use another --out"):
        check_resume(tmp_path, _cfg(tmp_path, **changes).saved(None))


def test_resume_compares_the_resolved_search_and_data(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    write_saved(tmp_path, cfg.saved({"backend": "local", "index": "/a"}))
    with pytest.raises(ConfigError, match=r"\(search\)"):
        check_resume(tmp_path, cfg.saved({"backend": "local", "index": "/b"}))
    moved = _cfg(tmp_path, data=tmp_path / "other.parquet")
    with pytest.raises(ConfigError, match=r"\(data\)"):
        check_resume(tmp_path, moved.saved({"backend": "local", "index": "/a"}))
    # settings that do not change the lines may change
    check_resume(
        tmp_path, _cfg(tmp_path, batch_size=2, limit=3).saved({"backend": "local", "index": "/a"})
    )


# config.json as mmsr eval wrote it before the reward and limits sections (secrets masked)
OLD_CONFIG = {
    "policy": "openai:http://***@host/v1#m",
    "model": None,
    "method": "on-demand",
    "data": "/data/test.parquet",
    "format": None,
    "benchmark": "world",
    "search": {"backend": "local", "index": "/idx"},
    "limit": 8,
    "batch_size": 48,
    "concurrency": 8,
    "judge": None,
    "seed": 7,
    "temperature": 0.0,
    "max_new_tokens": 256,
    "prompts": None,
    "reward_mode": "em",
}


def test_an_old_saved_config_is_read_into_the_sections_and_round_trips(tmp_path: Path) -> None:
    saved = SavedEvalConfig.from_json(OLD_CONFIG)
    assert saved.seed == 7 and saved.search == {"backend": "local", "index": "/idx"}
    # the flat keys land in the sections, the rest of each section at its default
    assert saved.limits == RolloutLimits(max_new_tokens=256) and saved.reward == RewardConfig()
    write_saved(tmp_path, saved)
    written = json.loads((tmp_path / "config.json").read_text(encoding="utf-8"))
    assert "max_new_tokens" not in written and "reward_mode" not in written
    assert written["limits"]["max_turns"] == 3 and written["reward"]["search_penalty"] == 0.1
    assert SavedEvalConfig.from_json(written) == saved
    # a run saved with the old keys resumes with the same settings given the new way
    now = _cfg(tmp_path, limits=RolloutLimits(max_new_tokens=100)).saved(None)
    flat = {k: v for k, v in now.to_json().items() if k not in ("limits", "reward")}
    flat |= {"max_new_tokens": 100, "reward_mode": "em"}
    (tmp_path / "config.json").write_text(json.dumps(flat), encoding="utf-8")
    check_resume(tmp_path, now)
    with pytest.raises(ConfigError, match=r"other settings \(reward\)"):
        check_resume(tmp_path, dataclasses.replace(now, reward=RewardConfig(mode="f1")))
    # naming one setting both ways is refused
    with pytest.raises(ConfigError, match=r"reward_mode and reward\.mode"):
        SavedEvalConfig.from_json(OLD_CONFIG | {"reward": {"mode": "f1"}})


def test_a_damaged_saved_config_is_a_clear_error(tmp_path: Path) -> None:
    broken = {k: v for k, v in OLD_CONFIG.items() if k != "seed"} | {"sed": 7}
    (tmp_path / "config.json").write_text(json.dumps(broken), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"not the config of an mmsr eval run \(missing: seed; "
                       r"unknown: sed\)"):  # fmt: skip
        check_resume(tmp_path, _cfg(tmp_path).saved(None))


# The keys of a result line, in order: what mmsr report, mmsr inspect and the demo read.
RESULT_KEYS = [
    *("id", "question", "end_reason", "turns", "actions", "tool_calls", "images"),
    *("n_tokens", "n_trained_tokens", "error", "method", "answer", "golds", "category"),
    *("need", "reward", "image_calls", "text_calls", "n_assistant_turns", "judge"),
    "judge_error",
]


@pytest.mark.parametrize("searches", [False, True])
def test_result_line_round_trip_keeps_the_exact_keys(tmp_path: Path, searches: bool) -> None:
    s = sample("owl", 1)
    traj = searching(s, "Owl") if searches else direct(s, "Owl")
    line = result_line(traj, s, "on-demand", image_dir=tmp_path / "images")
    data = json.loads(json.dumps(line.to_json()))
    assert list(data) == RESULT_KEYS
    assert ResultLine.from_json(data) == line
    assert ResultLine.from_json(data).to_json() == data
    assert data["answer"] == "Owl" and data["need"] == "image" and data["judge"] is None
    assert (data["image_calls"] > 0) == searches == line.searched()


def test_old_and_foreign_result_lines(tmp_path: Path) -> None:
    s = sample("owl", 0)
    data = json.loads(json.dumps(result_line(direct(s, "Owl"), s, "direct").to_json()))
    # lines written before failed questions existed have no "error"
    old = ResultLine.from_json({k: v for k, v in data.items() if k != "error"})
    assert old.error is None and not eval_records([old])[0].failed
    with pytest.raises(ValueError, match=r"missing: method; unknown: advantage"):
        ResultLine.from_json({k: v for k, v in data.items() if k != "method"} | {"advantage": 1})
