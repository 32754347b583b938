"""Warm-start recipes: parsing with clear errors, a micro chain end to end on the small world,
resuming past the stages done, the validation hold-out, the checks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from mmsr.teacher.world_kit import split_validation, trained_world
from mmsr.warmstart.checks import lookup, read_rate
from mmsr.warmstart.recipe import (
    RECIPES_DIR,
    RecipeError,
    check,
    load_recipe,
    recipe_label,
    run_recipe,
)

MICRO_SFT = """
model_preset = "micro"
vocab_size = 600
max_steps = 2
warmup_steps = 1
batch_size = 2
primer_steps = 1
primer_batch_size = 2
final_questions = 2
[stages.config.eval]
questions = 2
max_new_tokens = 24
"""

MICRO = f"""
validation_questions = 4
evaluate = ["direct", "rag"]
decision_probe = true

[[stages]]
name = "first"
trainer = "sft"
[stages.config]
{MICRO_SFT}

[[stages]]
name = "tower"
trainer = "vision"
[stages.config]
max_steps = 2
batch_size = 4
eval_pictures = 8
eval_every = 0

[[stages]]
name = "last"
trainer = "sft"
[stages.config]
seed = 5
{MICRO_SFT.replace("primer_steps = 1", "primer_steps = 0")}

[checks]
"all.format" = 0.0
"all.accuracy" = 2.0
"rag.read.n" = 0.0
"rag.overall.accuracy_em - direct.overall.accuracy_em" = -1.0
"decision.auc_pictured" = {{ max = 2.0 }}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "r.toml"
    path.write_text(text, encoding="utf-8")
    return path


BAD: list[tuple[str, str]] = [
    ("validation_questions = 3", "needs at least one [[stages]]"),
    ("colour = 1\n[[stages]]\nname='a'\ntrainer='sft'", "unknown key(s) colour"),
    ("[[stages]]\nname='a'\ntrainer='gym'\n[stages.config]\nmax_steps=1", "'trainer' must be"),
    ("[[stages]]\nname='a b'\ntrainer='sft'", "'name' must be"),
    ("[[stages]]\nname='a'\ntrainer='sft'\n[stages.config]\nminutes=3.0\nmax_steps=1",
     "config.minutes is set by the recipe runner"),
    ("[[stages]]\nname='a'\ntrainer='sft'\n[stages.config]\nlr=1e-3", "config.max_steps"),
    ("[[stages]]\nname='a'\ntrainer='vision'\n[stages.config]\nmax_steps=1",
     "the first stage must be 'sft'"),
    ("[[stages]]\nname='a'\ntrainer='sft'\n[stages.config]\nmax_steps=1\n"
     "[[stages]]\nname='a'\ntrainer='sft'\n[stages.config]\nmax_steps=1", "duplicate name 'a'"),
    ("[[stages]\n", "not a readable TOML file"),
    ("[[stages]]\nname='a'\ntrainer='sft'\n[stages.config]\nmax_steps=1\n[checks]\nx='high'",
     "[checks] maps metric names to numbers"),
    ("[[stages]]\nname='a'\ntrainer='sft'\n[stages.config]\nmax_steps=1\n[checks]\nx={}",
     "'x': a number or a table of min and/or max"),
    ("[[stages]]\nname='a'\ntrainer='sft'\n[stages.config]\nmax_steps=1\n[checks]\n"
     "x={most=0.1}", "'x': unknown bound(s) most"),
    ("[[stages]]\nname='a'\ntrainer='sft'\n[stages.config]\nmax_steps=1\n[checks]\n"
     "x={max='low'}", "'x': bounds are numbers"),
    ("[[stages]]\nname='a'\ntrainer='sft'\n[stages.config]\nmax_steps=1\n[checks]\n"
     "x={max=true}", "'x': bounds are numbers"),
    ("[[stages]]\nname='a'\ntrainer='sft'\n[stages.config]\nmax_steps=1\n[checks]\n"
     "x={min=0.9, max=0.1}", "'x': min 0.9 is above max 0.1"),
    ("evaluate = ['gym']\n[[stages]]\nname='a'\ntrainer='sft'\n[stages.config]\nmax_steps=1",
     "evaluate: unknown method(s) gym"),
    ("decision_probe = 1\n[[stages]]\nname='a'\ntrainer='sft'\n[stages.config]\nmax_steps=1",
     "decision_probe is true or false"),
    ("world = 3\n[[stages]]\nname='a'\ntrainer='sft'\n[stages.config]\nmax_steps=1",
     "[world] maps world settings"),
    ("[world]\nfact_layout='tiles'\n[[stages]]\nname='a'\ntrainer='sft'\n[stages.config]\n"
     "max_steps=1", "fact_layout must be one of"),
    ("[world]\ncolour='red'\n[[stages]]\nname='a'\ntrainer='sft'\n[stages.config]\n"
     "max_steps=1", "unknown world setting 'colour'"),
]  # fmt: skip


@pytest.mark.parametrize(("text", "message"), BAD)
def test_bad_recipes_are_refused_with_the_file_named(
    tmp_path: Path, text: str, message: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    assert str(path) in str(info.value) and message in str(info.value)


def test_a_typo_in_a_later_stage_fails_before_the_first_runs(tmp_path: Path) -> None:
    from mmsr.config import ConfigError

    text = MICRO.replace("eval_every = 0", "eval_evry = 0")
    with pytest.raises(ConfigError, match="eval_evry"):
        load_recipe(write(tmp_path, text))


def test_an_unknown_recipe_name_lists_the_packaged_ones() -> None:
    with pytest.raises(RecipeError, match="warmstart-tiny"):
        load_recipe("no-such-recipe")


@pytest.mark.parametrize("name", sorted(p.stem for p in RECIPES_DIR.glob("*.toml")))
def test_the_packaged_recipes_load(name: str) -> None:
    recipe = load_recipe(name)
    assert recipe.stages[0].trainer == "sft"
    assert all(s.config["max_steps"] > 0 for s in recipe.stages)


def test_the_validation_hold_out_is_seeded_and_disjoint() -> None:
    samples: list[Any] = list(range(50))
    rest, held = split_validation(samples, 10, seed=7)
    assert len(held) == 10 and not set(rest) & set(held) and len(rest) == 40
    assert split_validation(samples, 10, seed=7) == (rest, held)
    assert split_validation(samples, 10, seed=8)[1] != held
    assert split_validation(samples, 0, seed=7) == (samples, [])
    with pytest.raises(ValueError, match="cannot hold out"):
        split_validation(samples, 50, seed=7)


def test_checks_read_dotted_paths() -> None:
    final = {"all": {"accuracy": 0.5}, "search_free": {"accuracy": 0.9}}
    out = check({"all.accuracy": 0.6, "search_free.accuracy": 0.85, "none.x": 0.0}, final)
    assert [out[k]["ok"] for k in out] == [False, True, False]
    assert out["none.x"]["value"] is None


def test_checks_take_a_maximum_or_both_bounds(tmp_path: Path) -> None:
    values = {"on": {"head": 0.5, "tail": 0.55}}
    gap = "on.tail - on.head"
    rows = check(
        {
            "on.head": {"max": 0.4},  # a maximum alone: 0.5 is above it
            "on.tail": {"min": 0.2, "max": 0.9},  # both: 0.55 is within
            gap: {"min": -0.1, "max": 0.1},  # a difference, within ±0.1
            "on.none": {"max": 1.0},  # a missing value meets no bound
        },
        values,
    )
    assert rows["on.head"] == {"max": 0.4, "value": 0.5, "ok": False}
    assert rows["on.tail"] == {"min": 0.2, "max": 0.9, "value": 0.55, "ok": True}
    assert rows[gap]["ok"] and rows[gap]["value"] == pytest.approx(0.05)
    assert rows["on.none"] == {"max": 1.0, "value": None, "ok": False}
    assert check({"on.head": 0.5}, values)["on.head"] == {"min": 0.5, "value": 0.5, "ok": True}
    # in a recipe: a bare number stays a minimum, an inline table gives a maximum or both
    text = (
        "[[stages]]\nname='a'\ntrainer='sft'\n[stages.config]\nmax_steps=1\n[checks]\n"
        "low = 0.8\nhigh = { max = 0.1 }\nboth = { min = 0.2, max = 0.9 }\n"
    )
    recipe = load_recipe(write(tmp_path, text))
    assert recipe.checks == {
        "low": {"min": 0.8},
        "high": {"max": 0.1},
        "both": {"min": 0.2, "max": 0.9},
    }


def test_the_blind_recipe_starts_from_the_tiny_chain_and_teaches_blind() -> None:
    """``warmstart-blind``: stages 1-3 are ``warmstart-tiny``'s tables (the runner reuses them
    from a work folder), the SFT stages after them build a blind teacher, and its checks bound
    the per-class search-ratio gap of the on-demand evaluation."""
    from mmsr.warmstart.recipe import stage_config

    tiny, blind = load_recipe("warmstart-tiny"), load_recipe("warmstart-blind")
    shared = [s.name for s in tiny.stages].index("vision-more") + 1
    assert shared == 3 and blind.stages[:shared] == tiny.stages[:shared]
    assert blind.world == tiny.world
    assert blind.validation_questions == tiny.validation_questions
    assert [s.name for s in blind.stages] == [s.name for s in tiny.stages]
    for mine, theirs in zip(blind.stages[shared:], tiny.stages[shared:], strict=True):
        assert mine.config["max_steps"] == theirs.config["max_steps"]
        teacher = stage_config(blind, mine, init="").teacher
        assert (teacher.decision, teacher.search_share) == ("blind", 0.5)
        assert teacher.copy_entities == "all" and teacher.head_answers == "recall"
        assert teacher.value_reason == "quote"
        weights = teacher.weights
        assert weights.know == weights.know_not == weights.head_drill == weights.direct == 0.0
        assert min(weights.decide, weights.decide_full, weights.head, weights.tail) > 0
    assert blind.evaluate == ("direct", "rag", "on-demand")
    assert blind.checks["direct.by_category.search_free.accuracy_em"] == {"min": 0.85}
    gap = (
        "on-demand.by_category.search_required.search_ratio"
        " - on-demand.by_category.search_free.search_ratio"
    )
    assert blind.checks[gap]["max"] == 0.1


def test_a_micro_recipe_runs_end_to_end_and_resumes(
    small_world: tuple[Path, Path], tmp_path: Path
) -> None:
    world, index = small_world
    recipe = load_recipe(write(tmp_path, MICRO))
    out, work = tmp_path / "model", tmp_path / "stages"
    partial = run_recipe(recipe, world, index, out, work=work, until="tower")
    assert not partial["finished"] and [r["name"] for r in partial["stages"]] == ["first", "tower"]
    assert not out.exists()
    first = json.loads((work / "01-first" / "stage.json").read_text())
    assert first["final"]["eval_split"] == "validation"  # never the test split
    (work / "03-last" / ".resume").mkdir(parents=True)  # cut short: no stage.json, runs again
    (work / "03-last" / ".resume" / "state.pt").write_bytes(b"junk")  # unreadable: ignored
    report = run_recipe(recipe, world, index, out, work=work)
    assert report["finished"] and [r["name"] for r in report["stages"]] == [
        "first",
        "tower",
        "last",
    ]
    assert report["stages"][0] == first  # done before: skipped, its record kept
    assert (out / "config.json").is_file() and (out / "recipe.toml").read_text() == MICRO
    # the world it was trained on, which the demo builds its own with
    assert trained_world(out) == {"fact_layout": "brief", "summary_order": "page"}
    assert (out / "world.json").is_file()
    saved = json.loads((out / "recipe_report.json").read_text())
    assert saved["recipe"] == str(recipe.path)  # a recipe of one's own: by its path
    assert recipe_label(load_recipe("warmstart-tiny").path) == "warmstart-tiny"  # packaged
    assert saved["checks"]["all.format"]["ok"] and not saved["checks"]["all.accuracy"]["ok"]
    assert json.loads((out / "sft_config.json").read_text())["validation_questions"] == 4
    # the methods ran on the 4 validation questions (train rows), and the checks read them
    assert saved["evaluation"]["rag"]["overall"]["n"] == 4
    assert saved["checks"]["rag.read.n"]["ok"]
    assert saved["checks"]["rag.overall.accuracy_em - direct.overall.accuracy_em"]["ok"]
    # the decision probe read the same 4 questions: every one has its P(search)
    probe = json.loads((work / "checks" / "decision-probe.json").read_text())
    assert saved["decision"] == probe
    assert sum(probe[c]["n"] for c in ("head", "tail") if c in probe) == 4
    assert saved["checks"]["decision.auc_pictured"]["value"] == probe["auc_pictured"]
    held = pq.read_table(work / "checks" / "validation.parquet").column("data_id").to_pylist()
    train_ids = pq.read_table(world / "train.parquet").column("data_id").to_pylist()
    assert len(held) == 4 and set(held) <= set(train_ids)
    assert json.loads((work / "checks" / "measured.json").read_text())["folder"] == "03-last"
    # the last stage removed from the recipe: no stage runs, but the checks measure the new
    # last model afresh (never resuming the old last model's answers)
    (work / "checks" / "old-answers").write_text("of 03-last")
    shorter = load_recipe(write(tmp_path, MICRO[: MICRO.index('[[stages]]\nname = "last"')]))
    cut = run_recipe(shorter, world, index, out, work=work)
    assert cut["stages"] == report["stages"][:2]
    assert not (work / "checks" / "old-answers").exists()
    assert json.loads((work / "checks" / "measured.json").read_text())["folder"] == "02-tower"
    assert cut["evaluation"]["rag"]["overall"]["n"] == 4
    # a later stage's table changed: it runs again and so does every stage after it
    changed = load_recipe(
        write(
            tmp_path,
            MICRO.replace("max_steps = 2\nbatch_size = 4", "max_steps = 3\nbatch_size = 4"),
        )
    )
    again = run_recipe(changed, world, index, out, work=work)
    assert again["stages"][0] == first
    assert again["stages"][1]["config"]["max_steps"] == 3
    assert again["stages"][2] != report["stages"][2]  # run again from the new tower


def test_a_recipe_refuses_a_world_built_otherwise_before_any_stage(
    small_world: tuple[Path, Path], tmp_path: Path
) -> None:
    world, index = small_world
    recipe = load_recipe(write(tmp_path, MICRO + '\n[world]\nfact_layout = "lines"\n'))
    assert recipe.world == {"fact_layout": "lines"}
    with pytest.raises(RecipeError, match=r"fact_layout = 'lines' \(it has 'brief'\)"):
        run_recipe(recipe, world, index, tmp_path / "model", work=tmp_path / "stages")
    assert not any((tmp_path / "stages").glob("*"))  # nothing ran


def test_lookup_reads_paths_and_differences() -> None:
    values = {"rag": {"acc": 0.7}, "direct": {"acc": 0.9}, "all": {"n": 3}}
    assert lookup(values, "rag.acc") == 0.7
    assert lookup(values, "rag.acc - direct.acc") == pytest.approx(-0.2)
    assert lookup(values, "rag.missing") is None
    assert lookup(values, "rag.acc - direct.missing") is None
    assert check({"rag.acc - direct.acc": -0.03}, values)["rag.acc - direct.acc"]["ok"] is False


def _line(need: str, gold: str, shown: str, accuracy: float) -> dict[str, Any]:
    turns = [{"role": "user", "text": f"question ({gold})"}, {"role": "assistant", "text": "x"}]
    turns.append({"role": "user", "text": shown})
    return {"need": need, "golds": [gold], "turns": turns, "reward": {"accuracy": accuracy}}


def test_read_rate_counts_fact_questions_whose_value_was_shown() -> None:
    lines = [
        _line("both", "Paris", "capital city Paris; currency EUR", 1.0),
        _line("both", "Paris", "capital city Paris", 0.0),
        _line("text", "+33", "calling code +33", 1.0),
        _line("both", "Lima", "nothing here", 0.0),  # not shown: not the reader's fault
        _line("image", "Bird", "Bird", 0.0),  # no fact asked
        _line("none", "Rome", "Rome", 0.0),
    ]
    assert read_rate(lines) == {"n": 3.0, "right": pytest.approx(2 / 3)}
    assert read_rate([]) == {"n": 0.0, "right": 0.0}


def test_read_rate_reads_the_results_a_method_prefetched_into_the_first_turn() -> None:
    """The ``oracle`` method's results are in its first turn, between ``<information>`` tags;
    the question's own words there are not results."""
    first = "Question about Lima? <information>Results: Peru capital: Lima.</information>"
    oracle = {
        "need": "text",
        "golds": ["Lima"],
        "turns": [{"role": "user", "text": first}, {"role": "assistant", "text": "Lima"}],
        "reward": {"accuracy": 1.0},
    }
    asked = dict(oracle, turns=[{"role": "user", "text": "Question about Lima? nothing"}])
    assert read_rate([oracle, asked]) == {"n": 1.0, "right": 1.0}


def test_a_partial_weights_table_says_which_defaults_it_keeps(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A stage's weights table is merged over the teacher's defaults: the kinds it leaves out
    keep their default weights, and the runner says which (warmstart-tiny's ``know`` stage
    keeps ``head_drill``, ``prime1`` and ``prime2``); a table listing every kind says nothing."""
    import logging

    from mmsr.warmstart.recipe import stage_config

    tiny = load_recipe("warmstart-tiny")
    with caplog.at_level(logging.INFO, logger="mmsr.warmstart.recipe"):
        know = next(s for s in tiny.stages if s.name == "know")
        config = stage_config(tiny, know, init="")
    assert config.teacher.weights.head_drill == 0.15
    assert "stage know: teacher kinds not in its weights table keep their defaults" in caplog.text
    assert "head_drill=0.15" in caplog.text and "prime1=0.1" in caplog.text
    caplog.clear()
    blind = load_recipe("warmstart-blind")
    with caplog.at_level(logging.INFO, logger="mmsr.warmstart.recipe"):
        for stage in blind.stages:
            if stage.trainer == "sft" and stage.name != "copy":
                stage_config(blind, stage, init="")
    assert "keep their defaults" not in caplog.text
