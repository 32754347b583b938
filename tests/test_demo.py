"""``mmsr demo`` end to end, reduced: a micro warm start, the small world, one GRPO step."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
import tiny_models

from mmsr.config import read_yaml
from mmsr.demo.paper import PAPER_ROWS, PaperConfig
from mmsr.demo.pipeline import ABLATIONS, METHODS, DemoConfig, run_demo
from mmsr.demo.stages import warmstart_recipe
from mmsr.models import build_tiny_model, save_pretrained
from mmsr.teacher.config import parse_weights

SMALL_GRPO = (
    *("--run.steps", "1", "--run.save_every", "1", "--run.tensorboard", "false"),
    *("--algo.prompts_per_step", "2", "--algo.group_size", "2", "--algo.micro_batch_size", "4"),
    *("--limits.max_new_tokens", "12", "--run.probe_every", "1", "--run.probe_prompts", "2"),
)


def test_reduced_demo_writes_report_and_summary(tmp_path: Path) -> None:
    warmstart, blind = tmp_path / "warmstart", tmp_path / "blind"
    tok = tiny_models.tokenizer()
    for seed, folder in ((0, warmstart), (1, blind)):
        model = build_tiny_model("micro", tok, seed=seed)
        save_pretrained(model, tok, tiny_models.image_processor("micro"), folder)
    paper = PaperConfig(
        warmstart=blind,
        steps=2,
        unbalanced_steps=1,
        probe_every=1,
        sft_minutes=0.02,
        grpo_overrides=SMALL_GRPO,
    )
    cfg = DemoConfig(
        out=tmp_path / "demo",
        seed=3,
        warmstart=warmstart,
        grpo_overrides=SMALL_GRPO,
        eval_limit=4,
        eval_max_new_tokens=12,
        small_world=True,
        ablations=True,
        sft_minutes=0.02,
        paper_ablations=True,
        paper=paper,
    )
    summary = run_demo(cfg)
    saved = json.loads((cfg.out / "summary.json").read_text(encoding="utf-8"))
    rows = {*METHODS, *ABLATIONS, *PAPER_ROWS}
    assert set(saved["methods"]) == rows == set(summary["methods"])
    for row in saved["methods"].values():
        assert 0.0 <= row["accuracy"] <= 1.0 and 0.0 <= row["search_ratio"] <= 1.0 and row["n"] == 4
    # rag always searches; direct never does
    assert saved["methods"]["rag"]["search_ratio"] == 1.0
    assert saved["methods"]["direct"]["search_ratio"] == 0.0
    assert saved["training"]["steps"] == 1 and saved["target"] is not None
    assert saved["training"]["probe_steps"] == [0, 1]  # before and after the step
    # the ablations: GRPO without the search penalty, and more SFT for as long as GRPO ran
    no_penalty = read_yaml(cfg.out / "grpo_no_penalty" / "config.yaml")
    assert no_penalty["reward"]["search_penalty"] == 0.0
    assert (cfg.out / "sft_more" / "model.safetensors").is_file()
    assert {"grpo", "grpo_no_penalty", "sft_more"} <= set(saved["timings"])
    report = (cfg.out / "report.md").read_text(encoding="utf-8")
    for name in (*METHODS, *ABLATIONS):
        assert f"| {name} |" in report
    html = (cfg.out / "report.html").read_text(encoding="utf-8")
    # reward + search ratio, search ratio per need class, the decision probe, accuracy vs
    # search ratio; the decision probe of RL from the blind warm start, the data balance
    assert html.count("data:image/png;base64,") == 6
    assert "Who decides" in html
    assert len(saved["training"]["probe_search_ratio_search_free"]) == 2
    assert "SR search-free" in report and "search precision" in report
    decision = saved["decision"]
    assert decision is not None and set(decision) >= {"met", "search_recall_at_least_0.85"}
    # the paper's mechanism: the rows, the decision probe of each model on the test split,
    # the probe's curves of both runs from the blind warm start, the subsets it trained on
    assert set(saved["decision_probe"]) == {"on_demand_warmstart", "on_demand_rl", *PAPER_ROWS}
    assert 0.0 <= saved["decision_probe"]["on_demand_rl_from_blind"]["tail"]["p_search"] <= 1.0
    paper_rows = saved["paper"]["rows"]
    assert set(paper_rows) == set(PAPER_ROWS) and saved["paper"]["checks"] is not None
    assert saved["paper"]["curves"]["grpo_from_blind"]["steps"] == [0, 1, 2]
    assert saved["paper"]["curves"]["grpo_unbalanced"]["steps"] == [0, 1]
    from_blind = read_yaml(cfg.out / "grpo_from_blind" / "config.yaml")
    assert from_blind["model"]["path"] == str(blind)
    assert from_blind["data"]["train"].endswith("train-balanced.parquet")
    sft = json.loads((cfg.out / "sft_from_blind" / "sft_config.json").read_text(encoding="utf-8"))
    assert sft["teacher"]["decision"] == "need" and sft["teacher"]["head_direct"] == 1.0
    assert "## RL learns when to search" in report and "Data balance" in html
    # a cut run goes on: finished training is kept, evaluations resume from their rollouts
    again = run_demo(dataclasses.replace(cfg, resume=True))
    assert again["methods"] == summary["methods"]
    trained = {"grpo", "grpo_no_penalty", "sft_more", "grpo_from_blind", "grpo_unbalanced"}
    trained |= {"sft_from_blind"}
    assert not trained & set(again["timings"])
    assert not (cfg.out / "previous").exists()


def test_decision_check_reports_each_criterion() -> None:
    from mmsr.demo.report import decision_check

    def row(acc: float, sr: float, free: float, req: float, p: float, r: float) -> dict:
        return {
            "accuracy": acc,
            "search_ratio": sr,
            "search_ratio/search_free": free,
            "search_ratio/search_required": req,
            "search_precision": p,
            "search_recall": r,
        }

    rag = row(0.20, 1.0, 1.0, 1.0, 0.65, 1.0)
    warm = row(0.22, 1.0, 1.0, 1.0, 0.65, 1.0)
    good = row(0.30, 0.62, 0.10, 0.90, 0.94, 0.90)
    ok = decision_check({"rag": rag, "on_demand_warmstart": warm, "on_demand_rl": good})
    assert ok is not None and ok["met"]
    # searching on half of everything, independently of need: precision = base rate
    blind = row(0.30, 0.5, 0.5, 0.5, 0.65, 0.5)
    bad = decision_check({"rag": rag, "on_demand_warmstart": warm, "on_demand_rl": blind})
    assert bad is not None and not bad["met"]
    assert not bad["search_ratio_search_free_at_most_0.25"] and bad["search_ratio_at_most_0.7_rag"]
    assert decision_check({"rag": rag}) is None


def test_regime_check_reports_each_criterion() -> None:
    from mmsr.demo.report import regime_check

    def row(acc: float, free: float, req: float, sr: float, sr_free: float, sr_req: float) -> dict:
        return {
            "accuracy": acc,
            "accuracy/search_free": free,
            "accuracy/search_required": req,
            "search_ratio": sr,
            "search_ratio/search_free": sr_free,
            "search_ratio/search_required": sr_req,
        }

    # the paper's regime: searching pays, RL searches on demand, the penalty decides
    paper = {
        "direct": row(0.36, 0.95, 0.03, 0.0, 0.0, 0.0),
        "rag": row(0.80, 0.94, 0.72, 1.0, 1.0, 1.0),
        "oracle": row(0.82, 0.95, 0.74, 0.65, 0.0, 1.0),
        "on_demand_rl": row(0.79, 0.93, 0.71, 0.66, 0.10, 0.95),
        "on_demand_rl_no_penalty": row(0.80, 0.94, 0.72, 0.80, 0.40, 0.97),
    }
    ok = regime_check(paper)
    assert ok is not None and ok["met"]
    # ours before: search hurt a known answer, so rag lost to direct and the penalty was inert
    ours = {**paper, "rag": row(0.33, 0.39, 0.30, 1.0, 1.0, 1.0)}
    ours["on_demand_rl_no_penalty"] = paper["on_demand_rl"]
    bad = regime_check(ours)
    assert bad is not None and not bad["met"]
    assert not bad["rag_at_least_direct_plus_20_points"]
    assert not bad["penalty_removes_15_points_of_search_free_searches"]
    assert bad["oracle_at_least_0.75"]
    without = {k: v for k, v in paper.items() if k != "on_demand_rl_no_penalty"}
    assert "penalty_removes_15_points_of_search_free_searches" not in (regime_check(without) or {})
    assert regime_check({"rag": paper["rag"]}) is None


def test_missing_warmstart_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no warm-start model"):
        run_demo(DemoConfig(out=tmp_path, warmstart=tmp_path / "nothing"))


def test_a_rerun_keeps_the_previous_run_aside(tmp_path: Path) -> None:
    from mmsr.demo.pipeline import keep_previous_run

    assert keep_previous_run(tmp_path) is None  # nothing to keep
    (tmp_path / "grpo" / "checkpoints").mkdir(parents=True)
    (tmp_path / "eval" / "rag").mkdir(parents=True)
    (tmp_path / "eval" / "rag" / "rollouts.jsonl").write_text("{}\n")
    (tmp_path / "world").mkdir()
    kept = keep_previous_run(tmp_path)
    assert kept is not None and kept.parent == tmp_path / "previous"
    assert not (tmp_path / "grpo").exists() and not (tmp_path / "eval").exists()
    assert (kept / "eval" / "rag" / "rollouts.jsonl").read_text() == "{}\n"
    assert (kept / "grpo" / "checkpoints").is_dir() and (tmp_path / "world").is_dir()


def test_warmstart_recipe_replays_the_saved_mixture(tmp_path: Path) -> None:
    assert warmstart_recipe(tmp_path) == []  # no sft_config.json: the preset's mixture
    teacher = {"weights": [0.5, 0.5], "head_direct": 0.7, "copy_entities": "tail"}
    saved = {"lr": 4e-4, "teacher": teacher}
    (tmp_path / "sft_config.json").write_text(json.dumps(saved), encoding="utf-8")
    argv = warmstart_recipe(tmp_path)
    assert argv == [
        *("--weights", "head=0.5,tail=0.5", "--head-direct", "0.7"),
        *("--copy-entities", "tail", "--lr", "0.0004"),
    ]
    assert parse_weights(argv[1]).as_tuple()[:2] == (0.5, 0.5)


def _metrics(acc: float, sr: float) -> dict:
    overall = {"accuracy_em": acc, "search_ratio": sr, "search_call_ratio": sr / 2, "n": 4}
    overall |= {"image_only_ratio": 0.0, "text_only_ratio": 0.0, "both_ratio": sr}
    return {"overall": overall | {"mean_turns": 1.5}, "by_category": {}}


def test_report_page_has_html_tables_linked_to_the_inspector(tmp_path: Path) -> None:
    from mmsr.demo.report import write_demo_report
    from mmsr.inspect import inspector_link

    for name, acc, sr in (("rag", 0.25, 1.0), ("on_demand_rl", 0.5, 0.5)):
        (tmp_path / "eval" / name).mkdir(parents=True)
        (tmp_path / "eval" / name / "metrics.json").write_text(json.dumps(_metrics(acc, sr)))
    write_demo_report(tmp_path, ["rag", "on_demand_rl"], tmp_path / "grpo", {"grpo": 1.0})
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert "<pre>" not in page and "| method |" not in page
    assert "<th>search ratio</th>" in page
    link = inspector_link([tmp_path / "eval" / "rag"])
    assert f"<td><a href='{link}'>rag</a></td><td>25.0</td><td>100.0</td>" in page
    assert "mmsr inspect " in page and "<b>met</b>" in page  # the target, in bold
    # the Markdown file keeps its Markdown table
    assert "| rag | 25.0 | 100.0 | 50.0 |" in (tmp_path / "report.md").read_text(encoding="utf-8")


def test_report_keeps_the_heldout_reward_and_the_training_trend(tmp_path: Path) -> None:
    from mmsr.demo.report import running_mean, training_summary, write_demo_report

    run = tmp_path / "eval" / "rag"
    run.mkdir(parents=True)
    # the evaluation's mean reward over its trajectories (mmsr.eval.run.run_info)
    metrics = _metrics(0.25, 1.0) | {"run": {"reward_mean": 1.1 / 3}}
    (run / "metrics.json").write_text(json.dumps(metrics))
    grpo = tmp_path / "grpo"
    grpo.mkdir()
    rewards = [0.2, 0.4, 0.3, 0.5, 0.6, 0.7]
    (grpo / "metrics.jsonl").write_text(
        "".join(json.dumps({"step": i + 1, "reward/mean": r}) + "\n" for i, r in enumerate(rewards))
    )
    summary = write_demo_report(tmp_path, ["rag"], grpo, {})
    assert summary["methods"]["rag"]["reward"] == pytest.approx(1.1 / 3)
    assert "| 0.367 |" in (tmp_path / "report.md").read_text(encoding="utf-8")
    training = summary["training"]
    assert training["reward_mean_first_half"] == 0.3 and training["reward_mean_second_half"] == 0.6
    assert training["reward_trend_per_step"] == pytest.approx(0.0943, abs=1e-4)
    assert training_summary([{"reward/mean": 0.5}])["reward_trend_per_step"] == 0.0
    assert running_mean([1.0, 3.0, 5.0, 7.0], 2) == [1.0, 2.0, 4.0, 6.0]


def test_demo_prints_the_inspect_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import mmsr.demo.cli
    from mmsr.cli import build_parser

    summary = {"methods": {"rag": {"accuracy": 0.2, "search_ratio": 1.0}}, "target": None}
    seen: list[DemoConfig] = []
    monkeypatch.setattr(mmsr.demo.cli, "run_demo", lambda cfg: seen.append(cfg) or summary)
    argv = ["demo", "--out", str(tmp_path), "--seed", "1", "--warmstart", str(tmp_path)]
    argv += ["--paper-ablations", "--blind-warmstart", str(tmp_path / "b"), "--resume"]
    args = build_parser().parse_args(argv)
    assert args.func(args) == 0
    assert f"mmsr inspect {tmp_path / 'eval'}" in capsys.readouterr().out
    assert seen[0].paper_ablations and seen[0].resume and not seen[0].ablations
    assert seen[0].paper.warmstart == tmp_path / "b"


def test_each_stage_logs_a_command_that_gives_its_config(tmp_path: Path) -> None:
    """The command the demo logs, parsed by the real CLI, builds the config the stage runs."""
    from mmsr.cli import build_parser
    from mmsr.demo.pipeline import _eval_config, _grpo_settings
    from mmsr.demo.stages import eval_stage, grpo_stage, sft_more_stage
    from mmsr.eval.cli import config_from_args
    from mmsr.train.grpo_config import load_grpo_config
    from mmsr.train.sft import load_sft_config
    from mmsr.train.sft_cli import sft_settings

    teacher = {"weights": [0.08, 0.08, 0.0, 0.03, 0.7], "head_direct": 0.6, "copy_entities": "tail"}
    teacher |= {"head_answers": "recall", "value_reason": "quote", "copy_first": 0.95}
    saved = {"lr": 1e-3, "decision_weight": 5.0, "vision_lr_scale": 0.3, "teacher": teacher}
    (tmp_path / "sft_config.json").write_text(json.dumps(saved))
    cfg = DemoConfig(out=tmp_path / "demo", seed=3, warmstart=tmp_path, eval_limit=4)
    parser = build_parser()

    def parsed(command: tuple[str, ...]) -> Any:
        args, rest = parser.parse_known_args(list(command))
        args.overrides = rest
        return args

    overrides = (*cfg.grpo_overrides, "--reward.search_penalty", "0")
    grpo = grpo_stage("grpo", "tiny-cpu", _grpo_settings(cfg), overrides, tmp_path / "g")
    args = parsed(grpo.command)
    assert load_grpo_config(args.preset, args.overrides) == grpo.config
    assert grpo.config.reward.search_penalty == 0.0 and grpo.config.run.steps == 12
    assert grpo.config.algo.prompts_per_step == 8 and grpo.config.algo.skip_zero_advantage
    assert grpo.config.run.probe_every == 4
    assert grpo.config.search.cache == "none" and grpo.config.model.path == str(tmp_path)

    sft = sft_more_stage(tmp_path / "w", tmp_path / "i", tmp_path, 3, 0.123456, tmp_path / "s")
    args = parsed(sft.command)
    assert load_sft_config(args.preset, sft_settings(args), args.overrides) == sft.config
    assert sft.config.minutes == 0.123 and sft.config.teacher.copy_entities == "tail"
    # the warm start goes on as it was trained: shaping, decision weight and vision rate too
    assert sft.config.teacher.head_answers == "recall" and sft.config.teacher.copy_first == 0.95
    assert sft.config.teacher.value_reason == "quote"
    assert sft.config.decision_weight == 5.0 and sft.config.vision_lr_scale == 0.3
    # the paper ablations' SFT: the same recipe with the teacher's decision labelled by need
    need = {"decision": "need", "head_direct": 1.0}
    sft = sft_more_stage(
        tmp_path / "w", tmp_path / "i", tmp_path, 3, 0.5, tmp_path / "s", teacher=need
    )
    args = parsed(sft.command)
    assert load_sft_config(args.preset, sft_settings(args), args.overrides) == sft.config
    assert sft.config.teacher.head_direct == 1.0 and sft.config.teacher.value_reason == "quote"

    ev = eval_stage("rag", _eval_config(cfg, "rag", tmp_path, tmp_path / "e"))
    assert config_from_args(parsed(ev.command)) == ev.config
    assert ev.config.limit == 4 and ev.config.limits.max_new_tokens == 256
