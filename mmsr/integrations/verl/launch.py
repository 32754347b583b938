"""``mmsr train verl``: GRPO on an unforked veRL with mmsr's agent loop and reward.

The overrides below put the paper's recipe (§2.5: GRPO, 8 rollouts per prompt, KL loss 0.001
with the low-variance estimator, clip 0.2, lr 2e-6, 512 prompts per step, 50 steps) onto
veRL's own ``ppo_trainer`` config; the user's Hydra overrides come last and win. The run's
reward settings reach mmsr's reward function as its ``reward_kwargs`` and its limits reach the
agent loop as the options of its registry entry, so both land in the saved configs.
``compose_config`` composes the whole config with veRL's Hydra schema (what ``--dry-run``
prints); ``launch`` writes the agent-loop registry file and starts ``verl.trainer.main_ppo``,
where Ray does the multi-node part. Imports hydra and verl only when called.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from mmsr.integrations.verl.episode import VERL_LIMITS
from mmsr.rewards import RewardConfig
from mmsr.rollout.rules import RolloutLimits

AGENT_LOOPS_FILE = "agent_loops.yaml"
# A response holds up to 3 generated turns and 2 tool turns: 5 image hits (their thumbnails'
# tokens follow the model's preprocessor max_pixels) or 5 page summaries of <= 5 sentences.
PROMPT_LENGTH = 4096
RESPONSE_LENGTH = 8192
REWARD_KWARGS = "reward.custom_reward_function.reward_kwargs"


@dataclass(frozen=True)
class VerlRun:
    """One ``mmsr train verl`` run: data, model, cluster shape, search tools, output folder."""

    data: str
    """Training parquet (``mmsr data export-verl --image-token '<image>'``)."""
    model: str
    """The policy's weights (a local folder or a path every node can read)."""
    out: Path
    """Where the agent-loop file, the composed config and veRL's checkpoints go."""
    val: str | None = None
    """Validation parquet (none: veRL validates on nothing)."""
    nodes: int = 1
    gpus_per_node: int = 8
    search: str = "none"
    """mmsr search spec for the agent loop: ``http:URL`` (the search service), ``local:DIR``,
    a JSON/TOML search config (e.g. with a Redis cache) or ``none``."""
    reward: RewardConfig = RewardConfig()
    """The reward (``mmsr.integrations.verl.reward.compute_score``'s options)."""
    limits: RolloutLimits = VERL_LIMITS
    """The protocol's limits of every rollout (the agent loop's options)."""
    overrides: tuple[str, ...] = field(default_factory=tuple)
    """Hydra overrides for veRL, applied last."""


def agent_loop_entries(run: VerlRun) -> list[dict[str, Any]]:
    """The registry file veRL reads (``rollout.agent.agent_loop_config_path``): one entry whose
    keys beside ``name`` and ``_target_`` are the loop's options."""
    return [
        {
            "name": "mmsr_search",
            "_target_": "mmsr.integrations.verl.agent_loop.MmsrSearchAgentLoop",
            "search": run.search,
            **asdict(run.limits),
        }
    ]


def paper_overrides(run: VerlRun) -> list[str]:
    """veRL overrides for the paper's GRPO recipe with mmsr's loop, reward and data."""
    out = run.out.resolve()
    overrides = [
        "algorithm.adv_estimator=grpo",
        "algorithm.use_kl_in_reward=False",
        "actor_rollout_ref.rollout.n=8",
        "actor_rollout_ref.actor.use_kl_loss=True",
        "actor_rollout_ref.actor.kl_loss_coef=0.001",
        "actor_rollout_ref.actor.kl_loss_type=low_var_kl",
        "actor_rollout_ref.actor.clip_ratio=0.2",
        "actor_rollout_ref.actor.loss_agg_mode=token-mean",
        "actor_rollout_ref.actor.optim.lr=2e-6",
        f"actor_rollout_ref.model.path={run.model}",
        "actor_rollout_ref.rollout.name=vllm",
        "actor_rollout_ref.rollout.agent.default_agent_loop=mmsr_search",
        f"actor_rollout_ref.rollout.agent.agent_loop_config_path={out / AGENT_LOOPS_FILE}",
        "reward.custom_reward_function.path=pkg://mmsr.integrations.verl.reward",
        "reward.custom_reward_function.name=compute_score",
        *(f"+{REWARD_KWARGS}.{k}={json.dumps(v)}" for k, v in asdict(run.reward).items()),
        f"data.train_files={Path(run.data).resolve()}",
        "data.train_batch_size=512",
        f"data.max_prompt_length={PROMPT_LENGTH}",
        f"data.max_response_length={RESPONSE_LENGTH}",
        "data.return_raw_chat=True",
        "data.image_key=images",
        f"trainer.nnodes={run.nodes}",
        f"trainer.n_gpus_per_node={run.gpus_per_node}",
        "trainer.total_training_steps=50",
        "trainer.project_name=mmsr",
        "trainer.logger=[console]",
        f"trainer.default_local_dir={out / 'checkpoints'}",
    ]
    if run.val is not None:
        overrides.append(f"data.val_files={Path(run.val).resolve()}")
    else:
        overrides.append("trainer.val_before_train=False")
    return overrides


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def merged_overrides(run: VerlRun) -> list[str]:
    """The paper's overrides with the user's applied last (one value per key)."""
    user = list(run.overrides)
    for item in user:
        if "=" not in item:
            raise ValueError(f"not a Hydra override (key=value): {item!r}")
    taken = {_key(o) for o in user}
    return [o for o in paper_overrides(run) if _key(o) not in taken] + user


def compose_config(overrides: Sequence[str]) -> Any:
    """veRL's ``ppo_trainer`` config composed with its own Hydra schema and ``overrides``."""
    from hydra import compose, initialize_config_dir

    config_dir = str(resources.files("verl.trainer") / "config")
    with initialize_config_dir(config_dir=config_dir, version_base=None):
        return compose("ppo_trainer", overrides=list(overrides))


def dry_run(run: VerlRun) -> str:
    """The composed config as YAML; nothing is written or started."""
    from omegaconf import OmegaConf

    return str(OmegaConf.to_yaml(compose_config(merged_overrides(run))))


def launch(run: VerlRun) -> int:
    """Write the agent-loop file and the composed config, then run veRL's trainer here (on a
    Ray head node it uses the whole cluster); veRL's exit code."""
    from omegaconf import OmegaConf

    overrides = merged_overrides(run)
    config = compose_config(overrides)  # fails here, before Ray starts, on a bad override
    run.out.mkdir(parents=True, exist_ok=True)
    (run.out / AGENT_LOOPS_FILE).write_text(yaml.safe_dump(agent_loop_entries(run)))
    (run.out / "verl_config.yaml").write_text(OmegaConf.to_yaml(config))
    command = [sys.executable, "-m", "verl.trainer.main_ppo", *overrides]
    return subprocess.call(command)
