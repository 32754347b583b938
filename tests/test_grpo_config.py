"""GRPO presets and overrides: every preset parses, overrides apply, mistakes are errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from mmsr.config import ConfigError, dump_yaml, parse_overrides, to_overrides
from mmsr.rollout import RolloutLimits
from mmsr.train.grpo_config import GRPOConfig, load_grpo_config, preset_names


def test_every_preset_parses() -> None:
    names = preset_names()
    assert {"tiny-cpu", "qwen2.5-vl-7b-1gpu"} <= set(names)
    for name in names:
        cfg = load_grpo_config(name)
        assert isinstance(cfg, GRPOConfig)
        # the paper's GRPO constants (§2.2) hold in every preset
        assert (cfg.algo.clip_eps, cfg.algo.kl_beta, cfg.algo.group_size) == (0.2, 0.001, 8)
    big = load_grpo_config("qwen2.5-vl-7b-1gpu")
    assert (big.model.dtype, big.optim.lr, big.optim.schedule) == ("bfloat16", 2e-6, "sigmoid")


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--optim.lr", "3e-5"], {"optim": {"lr": "3e-5"}}),  # YAML 1.1 keeps 3e-5 a string
        (["--run.steps=7"], {"run": {"steps": 7}}),  # key=value form
        (["--model.path", "null"], {"model": {"path": None}}),  # null is None
        (["--optim.betas", "[0.9, 0.95]"], {"optim": {"betas": [0.9, 0.95]}}),  # a list
    ],
)
def test_parse_overrides(args: list[str], expected: dict[str, object]) -> None:
    assert parse_overrides(args) == expected


def test_settings_sit_between_the_preset_and_the_overrides() -> None:
    settings = {"run": {"seed": 3, "steps": 5}, "search": {"cache": "none"}}
    cfg = load_grpo_config("tiny-cpu", ["--run.steps", "2"], settings)
    assert (cfg.run.seed, cfg.run.steps, cfg.search.cache) == (3, 2, "none")  # overrides win
    # to_overrides writes settings as overrides that read back the same
    args = to_overrides(settings | {"model": {"path": "/a b: c", "init_seed": None}})
    assert parse_overrides(args) == settings | {"model": {"path": "/a b: c", "init_seed": None}}
    assert load_grpo_config("tiny-cpu", to_overrides(settings)) == load_grpo_config(
        "tiny-cpu", None, settings
    )


def test_overrides_apply_over_the_preset() -> None:
    cfg = load_grpo_config(
        "tiny-cpu",
        [
            "--optim.lr",
            "3e-5",
            "--run.steps=7",
            "--optim.betas",
            "[0.9, 0.95]",
            "--model.path",
            "m",
        ],
    )
    assert cfg.optim.lr == 3e-5 and isinstance(cfg.optim.lr, float)
    assert cfg.run.steps == 7 and cfg.optim.betas == (0.9, 0.95) and cfg.model.path == "m"
    assert cfg.algo.prompts_per_step == load_grpo_config("tiny-cpu").algo.prompts_per_step


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--optim.lrr", "1"], "unknown config key.*optim.lrr"),  # a typo in a field
        (["--optimiser.lr", "1"], "unknown config key.*optimiser"),  # a typo in a section
        (["--run.steps", "many"], "run.steps: expected int"),  # wrong type
        (["--run.steps", "1.5"], "run.steps: expected int"),  # no silent truncation
        (["--optim.schedule", "linear"], "optim.schedule: 'linear' is not one of"),  # a Literal
        (["--algo.group_size", "1"], "group_size must be at least 2"),  # a checked value
        (["--run.steps"], "has no value"),  # a dangling flag
        (["steps=3"], "expected --section.field"),  # not an override
    ],
)
def test_bad_overrides_are_errors(args: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_grpo_config("tiny-cpu", args)


def test_unknown_preset_and_yaml_file_presets(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown grpo preset 'nope'"):
        load_grpo_config("nope")
    path = tmp_path / "mine.yaml"
    path.write_text("run:\n  steps: 3\nalgo:\n  group_size: 4\n")
    cfg = load_grpo_config(str(path))
    assert (cfg.run.steps, cfg.algo.group_size) == (3, 4)
    path.write_text("run:\n  stepz: 3\n")
    with pytest.raises(ConfigError, match=r"run\.stepz"):
        load_grpo_config(str(path))


def test_saved_config_reloads_identical(tmp_path: Path) -> None:
    cfg = load_grpo_config("qwen2.5-vl-7b-1gpu", ["--optim.betas", "[0.9, 0.95]"])
    assert load_grpo_config(str(dump_yaml(cfg, tmp_path / "config.yaml"))) == cfg


def test_search_cache_none_means_no_cache(
    tmp_path: Path, small_world: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    from mmsr.train.grpo_config import SearchSection
    from mmsr.train.grpo_setup import build_tools

    monkeypatch.chdir(tmp_path)
    spec = f"local:{small_world[1]}"
    plain = build_tools(SearchSection(spec=spec, cache="none"))
    assert not type(plain.text).__name__.startswith("Cached")
    assert not (tmp_path / "none").exists()
    cached = build_tools(SearchSection(spec=spec, cache="cache.sqlite"))
    assert type(cached.text).__name__.startswith("Cached")
    tools = build_tools(SearchSection(spec="none"))
    assert tools.image is None and tools.text is None
    with pytest.raises(ValueError, match="search spec 'nope'"):
        build_tools(SearchSection(spec="nope"))


def test_the_limits_section_is_the_engines_limits() -> None:
    cfg = load_grpo_config("tiny-cpu", ["--limits.max_new_tokens=9", "--rollout.temperature=0.5"])
    assert type(cfg.limits) is RolloutLimits  # handed to the engine as it is
    # the preset's keys and overrides land on the limits; the protocol's search limits stay
    assert (cfg.limits.max_new_tokens, cfg.limits.max_total_tokens, cfg.limits.text_k) == (
        9,
        1536,
        3,
    )
    assert (cfg.limits.max_image_searches, cfg.limits.max_text_searches) == (1, 2)
    assert cfg.rollout.temperature == 0.5
    # the key the limits had inside the rollout section still works
    assert load_grpo_config("tiny-cpu", ["--rollout.max_new_tokens=9"]) == load_grpo_config(
        "tiny-cpu", ["--limits.max_new_tokens=9"]
    )
    # without a preset: the tiny CPU run's budgets, not the engine's, even for a partial section
    for defaults in (load_grpo_config(None), load_grpo_config(None, ["--limits.max_turns=2"])):
        lim = defaults.limits
        assert (lim.max_new_tokens, lim.max_total_tokens, lim.text_k) == (64, 1536, 3)
