"""One reward-and-limits story: a value set once in a settings file reaches every entry point.

The same file — ``reward.search_penalty: 0.37`` and ``limits.max_turns: 2`` — is a GRPO preset,
an SFT preset, ``mmsr eval --settings`` and ``mmsr train verl --settings``. Each entry point then
runs its real code (the policies are scripted): GRPO's reward call and engine, SFT's evaluation
rollouts, ``mmsr eval``'s engine and scoring, veRL's reward function and agent loop. Two
questions tell the values apart: one searches once then answers right (reward
0.9 × (1 − penalty) + 0.1), one searches twice before answering (it runs out of turns at 2).
Also: with no settings every entry point keeps today's defaults, and configs saved before the
sections (flat keys) still load.
"""

from __future__ import annotations

import asyncio
import inspect
import io
import json
from collections.abc import Sequence
from dataclasses import asdict, fields
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import tiny_models
import yaml
from verl_scripts import IMG, TXT, Pages, Thumbs

from mmsr.cli import build_parser, main
from mmsr.config import ConfigError
from mmsr.eval import run as eval_run
from mmsr.eval.cli import config_from_args
from mmsr.eval.config import EvalRunConfig
from mmsr.integrations.verl.cli import verl_run
from mmsr.integrations.verl.episode import (
    VERL_LIMITS,
    EpisodeSetup,
    Sampled,
    loop_limits,
    run_episode,
)
from mmsr.integrations.verl.launch import REWARD_KWARGS, agent_loop_entries, merged_overrides
from mmsr.integrations.verl.reward import compute_score
from mmsr.models import build_tiny_model
from mmsr.policy import Generation, GenerationRequest, ScriptedPolicy
from mmsr.policy.local_model import build_hf_policy
from mmsr.protocol import default_prompt_set
from mmsr.rewards import RewardConfig, score_trajectory
from mmsr.rollout import EndReason, RolloutLimits
from mmsr.rollout.settings import read_settings
from mmsr.search.base import SearchBackends
from mmsr.types import Role, Sample, Turn

PENALTY, TURNS = 0.37, 2
SETTINGS = f"reward:\n  search_penalty: {PENALTY}\nlimits:\n  max_turns: {TURNS}\n"
R = "<reason>r</reason>"
ONCE, DEEP = "Which flag is this? once", "Which flag is this? deep"
GOLD = "France"
SCRIPTS = {
    ONCE: (IMG, f"{R}<answer>{GOLD}</answer>"),
    DEEP: (IMG, TXT, f"{R}<answer>{GOLD}</answer>"),
}
SEARCHED_ONCE = 0.9 * (1 - PENALTY) + 0.1  # right after one search, well formed
DEFAULT_SEARCHED_ONCE = 0.9 * (1 - 0.1) + 0.1


def _reply(turns: Sequence[Turn]) -> str:
    """The scripted assistant turn: the question (in the first turn) picks the script."""
    question = ONCE if ONCE in turns[0].text else DEEP
    n = sum(t.role is Role.ASSISTANT for t in turns)
    return SCRIPTS[question][n]


class TokenScript:
    """A token-level policy writing the scripted turns as the model's own ids."""

    token_level = True
    temperature = 1.0

    def __init__(self, encoder: Any) -> None:
        self.encoder = encoder

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        out = []
        for request in requests:
            text = _reply(request.turns)
            ids = [*self.encoder.encoder.encode_text(text), self.encoder.encoder.im_end_id]
            out.append(Generation(text, tuple(ids), tuple(-1.0 for _ in ids), "stop"))
        return out


@pytest.fixture
def settings(tmp_path: Path) -> Path:
    path = tmp_path / "settings.yaml"
    path.write_text(SETTINGS, encoding="utf-8")
    return path


def _png() -> bytes:
    buffer = io.BytesIO()
    tiny_models.image().save(buffer, format="PNG")
    return buffer.getvalue()


def _samples() -> list[Sample]:
    return [Sample(f"q{i}", q, GOLD, image=_png()) for i, q in enumerate((ONCE, DEEP))]


def _check(rewards: dict[str, float], ends: dict[str, str]) -> None:
    """The penalty priced the one-search answer; the turn limit stopped the two-search one."""
    assert rewards[ONCE] == pytest.approx(SEARCHED_ONCE)
    assert ends == {ONCE: "answered", DEEP: EndReason.SEARCH_IN_LAST_TURN.value}
    assert rewards[DEEP] == 0.0


# --- the four entry points, each from the same file ---


def test_grpo_scores_and_rolls_out_with_the_files_settings(settings: Path, tmp_path: Path) -> None:
    from mmsr.train.grpo import GRPOParts, train_grpo
    from mmsr.train.grpo_config import load_grpo_config
    from mmsr.train.rollout_backend import Rollout

    small = ["--algo.prompts_per_step=2", "--algo.group_size=2", "--algo.micro_batch_size=4"]
    small += ["--algo.kl_beta=0", "--run.steps=1", "--run.save_every=0", "--run.sample_every=1"]
    small += ["--run.threads=1", "--run.tensorboard=false", "--run.progress=false"]
    cfg = load_grpo_config(str(settings), small)
    tok, processor = tiny_models.tokenizer(), tiny_models.image_processor("micro")
    model = build_tiny_model("micro", tok, seed=0)
    _, encoder = build_hf_policy(model, tok, processor)
    parts = GRPOParts(model, None, tok, processor, _samples(), SearchBackends(Thumbs(), Pages()))
    train_grpo(cfg, parts, tmp_path, rollout=Rollout(TokenScript(encoder), encoder))
    sampled = (tmp_path / "samples" / "step_000001" / "trajectories.jsonl").read_text()
    lines = [json.loads(line) for line in sampled.splitlines()]
    _check(
        {line["question"]: line["reward"]["score"] for line in lines},
        {line["question"]: line["end_reason"] for line in lines},
    )
    # saved with the run, and read back to the same config
    saved = yaml.safe_load((tmp_path / "config.yaml").read_text(encoding="utf-8"))
    assert saved["reward"]["search_penalty"] == PENALTY and saved["limits"]["max_turns"] == TURNS
    assert load_grpo_config(str(tmp_path / "config.yaml")) == cfg


def test_sft_evaluates_with_the_files_settings(
    settings: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from verl_scripts import turn_encoder

    from mmsr.config import config_to_dict
    from mmsr.train import sft, sft_check

    config = sft.load_sft_config(str(settings))
    encoder = turn_encoder()
    monkeypatch.setattr(
        sft_check, "build_hf_policy", lambda *a, **k: (TokenScript(encoder), encoder)
    )
    model = SimpleNamespace(training=True, train=lambda mode: None)
    kit = SimpleNamespace(image_search=Thumbs(), text_search=Pages())
    run = sft._Run(config, kit, None, None, model, _samples(), _samples())  # type: ignore[arg-type]
    run.evaluate(step=0, minutes=0.0)
    questions = {s.id: s.question for s in _samples()}
    _check(
        {questions[row["id"]]: row["reward"] for row in run.last_rows},
        {questions[row["id"]]: row["end_reason"] for row in run.last_rows},
    )
    # the saved sft_config.json holds the sections and loads back
    saved = json.loads(json.dumps(config_to_dict(config)))
    assert saved["reward"]["search_penalty"] == PENALTY and saved["limits"]["max_turns"] == TURNS
    assert sft.load_sft_config(None, saved) == config


def test_mmsr_eval_rolls_out_and_scores_with_the_files_settings(
    settings: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from _data_builders import world_row, write_world

    rows = [world_row(i) for i in range(2)]
    for row, question in zip(rows, (ONCE, DEEP), strict=True):
        row["prompt"] = [{"role": "user", "content": f"<image>\n{question}"}]
        row["reward_model"] = {"ground_truth": GOLD, "candidate_answers": json.dumps([GOLD])}
        row["reward_model"]["style"] = "rule"
    data = write_world(tmp_path / "q.parquet", rows)
    scripted = ScriptedPolicy(_reply)
    monkeypatch.setattr(eval_run, "policy_from_spec", lambda spec, **kw: (scripted, None))
    out = tmp_path / "run"
    argv = ["eval", "--policy", "scripted:abstain", "--method", "on-demand", "--data", str(data)]
    argv += ["--out", str(out), "--no-progress", "--settings", str(settings)]
    assert main(argv) == 0
    lines = [json.loads(x) for x in (out / "trajectories.jsonl").read_text().splitlines()]
    _check(
        {line["question"]: line["reward"]["score"] for line in lines},
        {line["question"]: line["end_reason"] for line in lines},
    )
    saved = json.loads((out / "config.json").read_text(encoding="utf-8"))
    assert saved["reward"]["search_penalty"] == PENALTY and saved["limits"]["max_turns"] == TURNS


def _verl_args(*extra: str) -> Any:
    args, rest = build_parser().parse_known_args(
        ["train", "verl", "--data", "d.parquet", "--model", "m", *extra]
    )
    args.overrides = rest
    return args


def _reward_kwargs(overrides: Sequence[str]) -> dict[str, Any]:
    """The ``reward_kwargs`` veRL hands ``compute_score``, read from the launch's overrides."""
    prefix = f"+{REWARD_KWARGS}."
    pairs = (o.split("=", 1) for o in overrides if o.startswith(prefix))
    return {key.removeprefix(prefix): yaml.safe_load(value) for key, value in pairs}


class Server:
    """veRL's rollout server as the episode sees it: the scripted turns as token ids."""

    def __init__(self, encoder: Any, question: str) -> None:
        self.encoder, self.question, self.n = encoder, question, 0

    async def __call__(self, ids: list[int], images: list[Any], max_tokens: int) -> Sampled:
        text = SCRIPTS[self.question][self.n]
        self.n += 1
        return Sampled((*self.encoder.encoder.encode_text(text), self.encoder.encoder.im_end_id))


def _verl_rollout(options: dict[str, Any], question: str) -> str:
    """The end reason of one rollout of the agent loop's verl-free core with ``options``."""
    from verl_scripts import decode, end_ids, turn_encoder

    encoder = turn_encoder()
    setup = EpisodeSetup(
        encoder=encoder,
        decode=decode,
        end_ids=end_ids(),
        tools=SearchBackends(Thumbs(), Pages()),  # type: ignore[arg-type]
        prompts=default_prompt_set(),
        limits=loop_limits(options),
    )
    server = Server(encoder, question)
    episode = asyncio.run(run_episode(question, tiny_models.image(), server, setup))
    return str(episode.end_reason)


def test_verl_reward_and_agent_loop_get_the_files_settings(settings: Path) -> None:
    run = verl_run(_verl_args("--settings", str(settings)))
    kwargs = _reward_kwargs(merged_overrides(run))
    assert kwargs == asdict(RewardConfig(search_penalty=PENALTY))
    info = {"mmsr_turns": list(SCRIPTS[ONCE]), "mmsr_golds": [GOLD]}
    assert compute_score("fvqa", "", GOLD, info, **kwargs)["score"] == pytest.approx(SEARCHED_ONCE)
    # the agent loop's options, through the registry file veRL reads
    (entry,) = yaml.safe_load(yaml.safe_dump(agent_loop_entries(run)))
    options = {k: v for k, v in entry.items() if k not in ("name", "_target_", "search")}
    assert loop_limits(options) == RolloutLimits(max_turns=TURNS, max_new_tokens=1024)
    assert _verl_rollout(options, ONCE) == "answered"
    assert _verl_rollout(options, DEEP) == EndReason.SEARCH_IN_LAST_TURN.value


# --- no settings: every entry point as before ---


def test_without_settings_every_entry_point_keeps_its_defaults(tmp_path: Path) -> None:
    from mmsr.train.grpo_config import GRPOConfig, load_grpo_config
    from mmsr.train.sft import SFTConfig, load_sft_config

    paper = RewardConfig(mode="em", search_penalty=0.1, format_weight=0.1)
    grpo = load_grpo_config(None)
    assert grpo == GRPOConfig() and grpo.reward == paper
    assert grpo.limits == RolloutLimits(max_new_tokens=64, max_total_tokens=1536, text_k=3)
    sft = load_sft_config(None)
    assert sft == SFTConfig() and sft.reward == paper
    assert sft.limits == RolloutLimits(max_new_tokens=96)
    eval_args = build_parser().parse_args(
        ["eval", "--policy", "scripted:abstain", "--method", "direct", "--data", "d", "--out", "o"]
    )
    evaluation = config_from_args(eval_args)
    assert (evaluation.reward, evaluation.limits) == (paper, RolloutLimits())
    assert evaluation == EvalRunConfig("scripted:abstain", "direct", Path("d"), Path("o"))
    run = verl_run(_verl_args())
    assert (run.reward, run.limits) == (paper, VERL_LIMITS)
    # the agent loop's options as the launcher wrote them before, with the same values
    (entry,) = agent_loop_entries(run)
    old = {"max_turns": 3, "max_image_searches": 1, "max_text_searches": 2, "max_new_tokens": 1024}
    assert {k: entry[k] for k in old} == old
    assert loop_limits(old) == run.limits
    info = {"mmsr_turns": list(SCRIPTS[ONCE]), "mmsr_golds": [GOLD]}
    score = compute_score("fvqa", "", GOLD, info, **_reward_kwargs(merged_overrides(run)))
    assert score["score"] == pytest.approx(DEFAULT_SEARCHED_ONCE)
    assert compute_score("fvqa", "", GOLD, info)["score"] == score["score"]


def test_the_reward_config_is_score_trajectorys_options() -> None:
    options = inspect.signature(score_trajectory).parameters
    for f in fields(RewardConfig):
        assert options[f.name].default == f.default, f.name  # one default, in one place
    turns = list(SCRIPTS[ONCE])
    custom = RewardConfig(mode="subem", search_penalty=0.5, penalty_per_search=True)
    assert score_trajectory(turns, [GOLD], **asdict(custom)).score == pytest.approx(0.55)
    with pytest.raises(ValueError, match="unknown reward mode 'exact'"):
        RewardConfig(mode="exact")


# --- configs saved before the sections ---


def test_old_flat_keys_load_into_the_sections(tmp_path: Path) -> None:
    from mmsr.train.grpo_config import load_grpo_config
    from mmsr.train.sft import load_sft_config

    old_grpo = tmp_path / "old_grpo.yaml"
    old_grpo.write_text(
        "rollout:\n  max_turns: 2\n  max_new_tokens: 48\n  temperature: 0.5\n"
        "algo:\n  group_size: 4\n  reward_mode: subem\n  search_penalty: 0.37\n"
        "  format_weight: 0.2\n"
    )
    grpo = load_grpo_config(str(old_grpo))
    assert grpo.limits == RolloutLimits(
        max_turns=2, max_new_tokens=48, max_total_tokens=1536, text_k=3
    )
    assert grpo.reward == RewardConfig(mode="subem", search_penalty=0.37, format_weight=0.2)
    assert grpo.rollout.temperature == 0.5 and grpo.algo.group_size == 4
    # the old override spelling still works, and wins over the preset as overrides do
    assert load_grpo_config("tiny-cpu", ["--algo.search_penalty", "0"]).reward.search_penalty == 0
    sft = load_sft_config(None, {"eval": {"questions": 2, "max_new_tokens": 24}})
    assert sft.limits == RolloutLimits(max_new_tokens=24) and sft.eval.questions == 2
    # --settings reads the sections of an old file of any entry point, as it reads a new one
    reward, limits = read_settings(old_grpo)
    assert (reward, limits) == (grpo.reward, RolloutLimits(max_turns=2, max_new_tokens=48))
    old_eval = tmp_path / "config.json"
    old_eval.write_text(json.dumps({"max_new_tokens": 100, "reward_mode": "f1", "seed": 3}))
    assert read_settings(old_eval) == (RewardConfig(mode="f1"), RolloutLimits(max_new_tokens=100))
    # one setting named both ways in one file is refused
    with pytest.raises(ConfigError, match=r"algo\.search_penalty and reward\.search_penalty"):
        load_grpo_config(
            None, settings={"algo": {"search_penalty": 0.2}, "reward": {"search_penalty": 0.3}}
        )
