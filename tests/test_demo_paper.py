"""``mmsr demo --paper-ablations``'s parts that need no training: its bars, its subsets, its
refusals (the reduced end-to-end run is in ``tests/test_demo.py``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import tiny_models

from mmsr.demo.paper import check_blind_warmstart, paper_check, paper_markdown, write_subset
from mmsr.models import build_tiny_model, save_pretrained


def _row(acc: float, sr_free: float, sr_req: float) -> dict[str, float]:
    return {
        "accuracy": acc,
        "search_ratio/search_free": sr_free,
        "search_ratio/search_required": sr_req,
    }


def test_the_bars_of_rl_learning_when_to_search() -> None:
    methods = {
        "on_demand_rl": _row(0.80, 0.10, 0.95),
        "on_demand_blind_warmstart": _row(0.50, 0.48, 0.52),
        "on_demand_rl_from_blind": _row(0.75, 0.15, 0.90),
    }
    decisions = {
        "on_demand_blind_warmstart": {"auc": 0.55},
        "on_demand_rl_from_blind": {"auc": 0.9},
    }
    ok = paper_check(methods, decisions)
    assert ok is not None and ok["met"]
    # RL only moved the prior: both classes searched alike, the probe cannot tell them apart
    prior = {**methods, "on_demand_rl_from_blind": _row(0.70, 0.70, 0.75)}
    bad = paper_check(prior, {**decisions, "on_demand_rl_from_blind": {"auc": 0.52}})
    assert bad is not None and not bad["met"]
    assert not bad["rl_from_blind_gap_at_least_0.60"] and not bad["rl_from_blind_auc_at_least_0.85"]
    assert bad["blind_warmstart_gap_at_most_0.10"]
    # a warm start that was taught the decision is not blind
    taught = {**methods, "on_demand_blind_warmstart": _row(0.5, 0.2, 0.9)}
    assert not paper_check(taught, decisions)["blind_warmstart_gap_at_most_0.10"]  # type: ignore[index]
    # a missing probe is a failed bar, not a pass
    assert not paper_check(methods, {})["rl_from_blind_auc_at_least_0.85"]  # type: ignore[index]
    assert paper_check({"on_demand_rl": methods["on_demand_rl"]}, {}) is None
    rows = {"rows": {"on_demand_rl_from_blind": {"accuracy": 0.75, "search_ratio/search_free": 0.1,
            "search_ratio/search_required": 0.9, "gap": 0.8, "decision_auc": None,
            "p_search/head": 0.2, "p_search/tail": 0.9}}, "checks": ok}  # fmt: skip
    text = paper_markdown(rows)
    assert "| on_demand_rl_from_blind | 75.0 | 10.0 | 90.0 | 0.800 | – |" in text
    assert "**met**" in text


def test_subsets_hold_the_asked_share_of_search_required_questions(
    small_world: tuple[Path, Path], tmp_path: Path
) -> None:
    from mmsr.data import load_samples

    train = small_world[0] / "train.parquet"
    for ratio in (0.5, 0.9):
        out = write_subset(train, ratio, 7, tmp_path / f"train-{ratio}.parquet")
        samples = load_samples(out)
        share = sum(s.category == "search_required" for s in samples) / len(samples)
        assert share == pytest.approx(ratio, abs=0.02)
        assert {"entity", "knowledge"} <= set(samples[0].extra)  # the world's own rows
    again = write_subset(train, 0.9, 7, tmp_path / "train-0.9.parquet")
    assert load_samples(again) == load_samples(tmp_path / "train-0.9.parquet")


def test_the_demo_can_train_rl_on_search_balanced_data(
    small_world: tuple[Path, Path], tmp_path: Path
) -> None:
    """``--rl-balance 0.5`` (the default): every demo GRPO run reads the world's balanced
    subset (the paper ablations' own file); ``none``: the whole train split; a share outside
    (0, 1) is refused."""
    import shutil

    from mmsr.cli import build_parser
    from mmsr.data import load_samples
    from mmsr.demo.paper import BALANCED_FILE, rl_subset, subset_file
    from mmsr.demo.pipeline import DemoConfig, _grpo_settings

    world = tmp_path / "demo" / "world"
    world.mkdir(parents=True)
    shutil.copy(small_world[0] / "train.parquet", world / "train.parquet")
    assert subset_file(0.5) == BALANCED_FILE and subset_file(0.7) == "train-rl-0.7.parquet"
    made = rl_subset(world, 0.5, 7)
    assert made == world / BALANCED_FILE
    samples = load_samples(made)
    share = sum(s.category == "search_required" for s in samples) / len(samples)
    assert share == pytest.approx(0.5, abs=0.02)
    with pytest.raises(ValueError, match="between 0 and 1"):
        rl_subset(world, 1.0, 7)
    balanced = DemoConfig(out=tmp_path / "demo", warmstart=tmp_path)
    assert _grpo_settings(balanced)["data"]["train"] == str(made)
    whole = DemoConfig(out=tmp_path / "demo", warmstart=tmp_path, rl_balance=None)
    assert _grpo_settings(whole)["data"]["train"] == str(world / "train.parquet")
    parser = build_parser()
    assert parser.parse_args(["demo"]).rl_balance == 0.5
    assert parser.parse_args(["demo", "--rl-balance", "0.7"]).rl_balance == 0.7
    assert parser.parse_args(["demo", "--rl-balance", "none"]).rl_balance is None
    with pytest.raises(SystemExit):
        parser.parse_args(["demo", "--rl-balance", "half"])


def test_a_missing_or_foreign_blind_warm_start_is_refused(tmp_path: Path) -> None:
    tok = tiny_models.tokenizer()
    main = save_pretrained(
        build_tiny_model("micro", tok, seed=0), tok, tiny_models.image_processor("micro"),
        tmp_path / "main",
    )  # fmt: skip
    with pytest.raises(ValueError, match="recipe warmstart-blind"):
        check_blind_warmstart(tmp_path / "nothing", main)
    other = tmp_path / "other"
    save_pretrained(
        build_tiny_model("micro", tok, seed=1), tok, tiny_models.image_processor("micro"), other
    )
    (other / "world.json").write_text(
        json.dumps({"fact_layout": "lines", "summary_order": "relevance"})
    )
    with pytest.raises(ValueError, match="one world"):
        check_blind_warmstart(other, main)
    check_blind_warmstart(main, main)
