"""``mmsr train verl``: GRPO on an unforked veRL with mmsr's agent loop and reward.

The overrides below put mmsr's GRPO (8 rollouts per prompt, KL loss 0.001 with the low-variance
estimator, clip 0.2, lr 2e-6, 512 prompts per step, 50 steps) onto veRL's own ``ppo_trainer``
config; ``recipe="paper"`` adds the rest of the paper's recipe (``PAPER_RECIPE``: PPO
mini-batch 128, no entropy bonus, 3 turns of up to 2,048 tokens), and the user's Hydra
overrides come last and win. ``resolved_overrides`` says where each value comes from (what
``--dry-run`` prints); the release's sigmoid LR schedule has no veRL equivalent
(``UNMATCHED``). The run's
reward settings reach mmsr's reward function as its ``reward_kwargs`` and its limits reach the
agent loop as the options of its registry entry, so both land in the saved configs.
``compose_config`` composes the whole config with veRL's Hydra schema (what ``--dry-run``
prints); ``launch`` writes the agent-loop registry file and starts ``verl.trainer.main_ppo``,
where Ray does the multi-node part. Imports hydra and verl only when called.

``device="cpu"`` (``mmsr train verl --device cpu``) runs the same trainer on this machine's CPU
(``CPU_OVERRIDES``: mmsr's CPU platform and rollout from ``mmsr.integrations.verl.cpu``, one
logical GPU, FSDP2 on gloo, SDPA attention, 2 prompts x 4 rollouts, short sequences); it is for
testing the integration, not for training a real model. Every run imports
``mmsr.integrations.verl.fixes`` in each of veRL's processes (``VERL_USE_EXTERNAL_MODULES``,
passed through Ray's runtime environment so that it reaches every node); a CPU run imports
``cpu``, which applies the same fixes.
"""

from __future__ import annotations

import json
import os
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
RECIPES = ("mmsr", "paper")
MMSR, PAPER, OPTION, USER = "mmsr default", "paper recipe", "command option", "user override"
CPU = "cpu run"
DEVICES = ("gpu", "cpu")
RAY_TEMP_DIR = "/tmp/ray-mmsr"
"""Ray's session folder in a CPU run: short, as the unix sockets in it must stay under the
107-byte path limit (a run under pytest's temporary folders would pass it)."""
SYNC_LOG = "weight_syncs.jsonl"
"""The CPU rollout's record of each weight sync (``cpu_rollout.SYNC_LOG_ENV``), in the run's
folder."""
ROLLOUT_DUMP = "rollouts"
"""Where a CPU run has veRL dump each step's rollouts (``trainer.rollout_data_dir``)."""
ENV_VARS = "ray_kwargs.ray_init.runtime_env.env_vars"
ROLLOUT_DIR = "trainer.rollout_data_dir="
SYNC_LOG_ENV = "MMSR_VERL_SYNC_LOG"
CPU_ENV = {
    "VERL_PLATFORM": "mmsr_cpu",  # mmsr.integrations.verl.cpu.CpuPlatform
    "VERL_ENGINE_DEVICE": "cuda",  # the key of veRL's FSDP engine, not where it runs
}
"""The environment of a CPU run's processes beside ``VERL_USE_EXTERNAL_MODULES``."""

# The paper's recipe beyond mmsr's defaults, each value with where it was read. The release's
# script (mmsearch_r1/scripts/run_mmsearch_r1_grpo.sh) is a one-node test run (32 prompts x 4
# rollouts, mini-batch 32); the paper's scale is 512 x 8 with mini-batch 128.
PAPER_RECIPE: tuple[tuple[str, str], ...] = (
    ("data.train_batch_size=512", "paper: 512 prompts per step"),
    ("actor_rollout_ref.rollout.n=8", "paper: 8 rollouts per prompt"),
    ("actor_rollout_ref.actor.ppo_mini_batch_size=128", "paper: PPO mini-batch 128"),
    ("actor_rollout_ref.actor.optim.lr=2e-6", "release script: optim.lr=2e-6"),
    ("actor_rollout_ref.actor.kl_loss_coef=0.001", "release script: kl_loss_coef=0.001"),
    ("actor_rollout_ref.actor.kl_loss_type=low_var_kl", "release script: kl_loss_type"),
    ("actor_rollout_ref.actor.clip_ratio=0.2", "release ppo_trainer.yaml: clip_ratio 0.2"),
    ("actor_rollout_ref.actor.entropy_coeff=0", "release script: entropy_coeff=0"),
    (f"data.max_prompt_length={PROMPT_LENGTH}", "release script: max_prompt_length=4096"),
    (
        f"data.max_response_length={RESPONSE_LENGTH}",
        "release script: response_length_total=8192 (all turns after the first prompt)",
    ),
)
PAPER_LIMITS = RolloutLimits(
    max_turns=3, max_image_searches=1, max_text_searches=2, max_new_tokens=2048, image_k=5, text_k=5
)
"""The agent loop's limits in the paper's recipe (release script: ``max_gen_round=3``,
``image_search_limit=1``, ``text_search_limit=2``, ``topk=5``, ``max_response_length=2048``
per turn)."""
UNMATCHED: tuple[tuple[str, str], ...] = (
    (
        "schedule: lr 2e-6 flat, then a sigmoid decay by 95 % halfway at step 45",
        "release script: lr_sigmoid_decay_warmup_steps=45, lr_sigmoid_decay_ratio=0.95 — a "
        "schedule of the release's fork; unforked veRL has none like it, so veRL's constant LR "
        "runs (mmsr train grpo has it: optim.schedule sigmoid)",
    ),
)
"""Parts of the paper's recipe veRL cannot express, with where they were read."""

CPU_OVERRIDES: tuple[str, ...] = (
    "actor_rollout_ref.rollout.name=mmsr_cpu",
    "actor_rollout_ref.rollout.tensor_model_parallel_size=1",
    "actor_rollout_ref.rollout.agent.num_workers=1",
    "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=4",
    "actor_rollout_ref.rollout.n=4",
    "actor_rollout_ref.actor.strategy=fsdp2",
    "actor_rollout_ref.ref.strategy=fsdp2",
    "actor_rollout_ref.actor.fsdp_config.strategy=fsdp2",
    "actor_rollout_ref.ref.fsdp_config.strategy=fsdp2",
    "actor_rollout_ref.actor.fsdp_config.dtype=float32",
    "actor_rollout_ref.ref.fsdp_config.dtype=float32",
    "actor_rollout_ref.actor.use_torch_compile=False",
    "actor_rollout_ref.ref.use_torch_compile=False",
    "actor_rollout_ref.actor.ppo_mini_batch_size=2",
    "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=4",
    "actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu=4",
    "+actor_rollout_ref.model.override_config.attn_implementation=sdpa",
    "actor_rollout_ref.model.use_remove_padding=False",
    "actor_rollout_ref.model.enable_gradient_checkpointing=False",
    "data.train_batch_size=2",
    "data.max_prompt_length=512",
    "data.max_response_length=512",
    "data.dataloader_num_workers=0",
    "reward.num_workers=1",
    "trainer.device=cpu",
    "trainer.n_gpus_per_node=1",
    "trainer.nnodes=1",
    "trainer.total_training_steps=2",
    "+ray_kwargs.ray_init.num_gpus=1",
    "ray_kwargs.ray_init.num_cpus=8",
    f"+ray_kwargs.ray_init._temp_dir={RAY_TEMP_DIR}",
    "+ray_kwargs.ray_init.include_dashboard=False",
)
"""What ``device="cpu"`` changes: mmsr's rollout (``cpu_rollout``), FSDP2 in float32 without
torch.compile (FSDP1 needs a GPU to sync module states), SDPA attention on padded micro-batches
(veRL's padding-free attention is flash-attn's), one
logical GPU (Ray counts ``num_gpus=1``; the platform asks for Ray's ``GPU``) with more logical
CPUs than the placement group and the actors need, one agent-loop and one reward worker, no
gradient checkpointing, and a small batch: 2 prompts x 4 rollouts, prompt and response of 512 ids
each, 2 steps."""


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
    recipe: str = "mmsr"
    """``mmsr`` (mmsr's GRPO) or ``paper`` (with ``PAPER_RECIPE`` on top)."""
    device: str = "gpu"
    """``gpu`` (veRL's own platforms and vLLM) or ``cpu`` (``CPU_OVERRIDES``)."""
    steps: int | None = None
    """Training steps (``trainer.total_training_steps``); none: the recipe's."""

    def __post_init__(self) -> None:
        if self.recipe not in RECIPES:
            raise ValueError(f"unknown recipe {self.recipe!r}; known: {', '.join(RECIPES)}")
        if self.device not in DEVICES:
            raise ValueError(f"unknown device {self.device!r}; known: {', '.join(DEVICES)}")
        if self.steps is not None and self.steps < 1:
            raise ValueError(f"steps must be at least 1, got {self.steps}")

    @property
    def external_module(self) -> str:
        """The mmsr module veRL imports in each of its processes."""
        name = "cpu" if self.device == "cpu" else "fixes"
        return f"mmsr.integrations.verl.{name}"

    def environment(self) -> dict[str, str]:
        """Variables every veRL process of the run needs (also passed through Ray's runtime
        environment by the overrides)."""
        env = {"VERL_USE_EXTERNAL_MODULES": self.external_module}
        if self.device == "cpu":
            env.update(CPU_ENV)
            env[SYNC_LOG_ENV] = str(self.out.resolve() / SYNC_LOG)
        return env


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


def sourced_overrides(run: VerlRun) -> list[tuple[str, str]]:
    """``(override, source)`` pairs of the run's recipe, before the user's overrides."""
    out = run.out.resolve()
    data = Path(run.data).resolve()
    pairs = [
        ("algorithm.adv_estimator=grpo", MMSR),
        ("algorithm.use_kl_in_reward=False", MMSR),
        ("actor_rollout_ref.rollout.n=8", MMSR),
        ("actor_rollout_ref.actor.use_kl_loss=True", MMSR),
        ("actor_rollout_ref.actor.kl_loss_coef=0.001", MMSR),
        ("actor_rollout_ref.actor.kl_loss_type=low_var_kl", MMSR),
        ("actor_rollout_ref.actor.clip_ratio=0.2", MMSR),
        ("actor_rollout_ref.actor.loss_agg_mode=token-mean", MMSR),
        ("actor_rollout_ref.actor.optim.lr=2e-6", MMSR),
        (f"actor_rollout_ref.model.path={run.model}", OPTION),
        ("actor_rollout_ref.rollout.name=vllm", MMSR),
        ("actor_rollout_ref.rollout.agent.default_agent_loop=mmsr_search", MMSR),
        (f"actor_rollout_ref.rollout.agent.agent_loop_config_path={out / AGENT_LOOPS_FILE}", MMSR),
        ("reward.custom_reward_function.path=pkg://mmsr.integrations.verl.reward", MMSR),
        ("reward.custom_reward_function.name=compute_score", MMSR),
        *((f"+{REWARD_KWARGS}.{k}={json.dumps(v)}", MMSR) for k, v in asdict(run.reward).items()),
        (f"data.train_files={data}", OPTION),
        ("data.train_batch_size=512", MMSR),
        (f"data.max_prompt_length={PROMPT_LENGTH}", MMSR),
        (f"data.max_response_length={RESPONSE_LENGTH}", MMSR),
        ("data.return_raw_chat=True", MMSR),
        ("data.image_key=images", MMSR),
        (f"trainer.nnodes={run.nodes}", OPTION),
        (f"trainer.n_gpus_per_node={run.gpus_per_node}", OPTION),
        ("trainer.total_training_steps=50", MMSR),
        # veRL's v1 trainer imports transfer_queue, which the extra does not install
        ("++trainer.use_v1=False", MMSR),
        ("trainer.project_name=mmsr", MMSR),
        ("trainer.logger=[console]", MMSR),
        (f"trainer.default_local_dir={out / 'checkpoints'}", MMSR),
    ]
    if run.val is not None:
        pairs.append((f"data.val_files={Path(run.val).resolve()}", OPTION))
    else:
        # veRL builds a validation set even when it never validates: the training file, not
        # its own default (a gsm8k path that does not exist here)
        pairs += [(f"data.val_files={data}", MMSR), ("trainer.val_before_train=False", MMSR)]
        pairs.append(("trainer.test_freq=-1", MMSR))
    if run.recipe == "paper":
        paper = {_key(o): (o, f"{PAPER} ({where})") for o, where in PAPER_RECIPE}
        pairs = [paper.pop(_key(o), (o, s)) for o, s in pairs] + list(paper.values())
    if run.device == "cpu":
        cpu = {_key(o): (o, CPU) for o in CPU_OVERRIDES}
        cpu[_key(ROLLOUT_DIR)] = (f"{ROLLOUT_DIR}{out / ROLLOUT_DUMP}", CPU)
        pairs = [cpu.pop(_key(o), (o, s)) for o, s in pairs] + list(cpu.values())
    if run.steps is not None:
        steps = f"trainer.total_training_steps={run.steps}"
        pairs = [(o, s) for o, s in pairs if _key(o) != _key(steps)] + [(steps, OPTION)]
    source = CPU if run.device == "cpu" else MMSR
    pairs += [(f"+{ENV_VARS}.{k}={v}", source) for k, v in run.environment().items()]
    return pairs


def paper_overrides(run: VerlRun) -> list[str]:
    """veRL overrides of the run's recipe with mmsr's loop, reward and data."""
    return [o for o, _ in sourced_overrides(run)]


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def resolved_overrides(run: VerlRun) -> list[tuple[str, str]]:
    """``(override, source)`` of every override, the user's applied last (one per key)."""
    user = list(run.overrides)
    for item in user:
        if "=" not in item:
            raise ValueError(f"not a Hydra override (key=value): {item!r}")
    taken = {_key(o) for o in user}
    recipe = [(o, s) for o, s in sourced_overrides(run) if _key(o) not in taken]
    return recipe + [(o, USER) for o in user]


def merged_overrides(run: VerlRun) -> list[str]:
    """The recipe's overrides with the user's applied last (one value per key)."""
    return [o for o, _ in resolved_overrides(run)]


def describe(run: VerlRun) -> str:
    """The resolved overrides, the agent loop's limits and what veRL cannot express, each with
    its source, as ``#`` lines (so the composed YAML after them still parses)."""
    pairs = resolved_overrides(run)
    width = max(len(o) for o, _ in pairs)
    lines = [f"# veRL overrides of recipe {run.recipe!r} (value  <- source):"]
    lines += [f"#   {o:<{width}}  <- {s}" for o, s in pairs]
    limits_source = f"{PAPER} (release script)" if run.limits == PAPER_LIMITS else "mmsr/settings"
    lines.append(f"# agent loop limits  <- {limits_source}:")
    lines += [f"#   {k}={v}" for k, v in asdict(run.limits).items()]
    if run.recipe == "paper":
        lines.append("# not expressible in veRL (a deviation from the paper's recipe):")
        lines += [f"#   {what}  <- {where}" for what, where in UNMATCHED]
    return "\n".join(lines) + "\n"


def compose_config(overrides: Sequence[str]) -> Any:
    """veRL's ``ppo_trainer`` config composed with its own Hydra schema and ``overrides``."""
    from hydra import compose, initialize_config_dir

    config_dir = str(resources.files("verl.trainer") / "config")
    with initialize_config_dir(config_dir=config_dir, version_base=None):
        return compose("ppo_trainer", overrides=list(overrides))


def dry_run(run: VerlRun) -> str:
    """``describe(run)`` and the composed config as YAML; nothing is written or started."""
    from omegaconf import OmegaConf

    return describe(run) + str(OmegaConf.to_yaml(compose_config(merged_overrides(run))))


def launch(run: VerlRun) -> int:
    """Write the agent-loop file and the composed config, then run veRL's trainer here (on a
    Ray head node it uses the whole cluster); veRL's exit code."""
    from omegaconf import OmegaConf

    overrides = merged_overrides(run)
    config = compose_config(overrides)  # fails here, before Ray starts, on a bad override
    run.out.mkdir(parents=True, exist_ok=True)
    (run.out / AGENT_LOOPS_FILE).write_text(yaml.safe_dump(agent_loop_entries(run)))
    (run.out / "verl_config.yaml").write_text(OmegaConf.to_yaml(config))
    # Hydra's own run folder (its logs and saved configs) in the run's, not in the working dir
    hydra_dir = f"hydra.run.dir={run.out.resolve() / 'hydra'}"
    command = [sys.executable, "-m", "verl.trainer.main_ppo", *overrides, hydra_dir]
    return subprocess.call(command, env={**os.environ, **run.environment()})
