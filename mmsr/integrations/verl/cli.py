"""``mmsr train verl``: GRPO on a veRL cluster with mmsr's protocol, search tools and reward.

    mmsr data export-verl --image-token '<image>' runs/world/train.parquet train.parquet
    mmsr train verl --data train.parquet --model /models/Qwen2.5-VL-7B-Instruct \\
        --nodes 4 --gpus-per-node 8 --search http:http://search-host:8000 [hydra overrides…]

    mmsr train verl --recipe paper --dry-run --data train.parquet --model M   # the paper's

    mmsr train verl --device cpu --steps 2 --data train.parquet --search local:runs/index

Run it on the Ray head node. ``--recipe paper`` adds the rest of the paper's recipe (PPO
mini-batch 128, 3 turns of up to 2,048 tokens; ``mmsr.integrations.verl.launch.PAPER_RECIPE``).
``--dry-run`` prints every override with its source (paper recipe, command option, user
override, mmsr default), then veRL's composed config when verl is installed, and starts nothing.
``--settings FILE`` takes the reward and the protocol's limits from the ``reward`` and
``limits`` sections of a preset or a run's saved config (e.g. a GRPO preset), as every mmsr
entry point can. Needs the ``verl`` extra (``pip install 'mmsr[verl]'``).

``--device cpu`` runs veRL's own trainer on this machine's CPU with mmsr's CPU platform and
rollout (``mmsr.integrations.verl.cpu``): the packaged tiny policy unless ``--model`` says
otherwise, the tiny CPU preset's reward and limits unless ``--settings`` says otherwise, 2
prompts x 4 rollouts per step (``launch.CPU_OVERRIDES``; ``--dry-run`` lists them). A test of
the integration, written against veRL 0.9.1, not a way to train a real model.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mmsr.integrations.verl.launch import VerlRun

CPU_SETTINGS = Path(__file__).resolve().parents[2] / "train" / "presets" / "grpo" / "tiny-cpu.yaml"
"""The reward and limits of a CPU run without ``--settings``: the tiny CPU GRPO preset's."""


def register(train_subparsers: Any) -> None:
    parser = train_subparsers.add_parser(
        "verl",
        help="GRPO on a veRL cluster (needs the verl extra)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--data", required=True, help="training parquet (mmsr data export-verl)")
    parser.add_argument("--val", help="validation parquet")
    parser.add_argument(
        "--model",
        help="policy weights: a folder every node reads (--device cpu: the packaged tiny policy)",
    )
    parser.add_argument(
        "--device",
        choices=("gpu", "cpu"),
        default="gpu",
        help="gpu: a veRL cluster; cpu: veRL's trainer on this machine's CPU (a test run)",
    )
    parser.add_argument("--steps", type=int, help="training steps (default: the recipe's)")
    parser.add_argument("--nodes", type=int, default=1, help="nodes in the Ray cluster")
    parser.add_argument("--gpus-per-node", type=int, default=8, help="GPUs per node")
    parser.add_argument(
        "--search", default="none", help="search spec: http:URL, local:DIR, a config file, none"
    )
    parser.add_argument("--out", type=Path, default=Path("runs/verl"), help="run folder")
    parser.add_argument(
        "--settings",
        type=Path,
        default=None,
        help="reward and limits sections of a preset or run config (YAML/JSON)",
    )
    parser.add_argument(
        "--recipe",
        choices=("mmsr", "paper"),
        default="mmsr",
        help="mmsr's GRPO, or the paper's recipe (mini-batch 128, 3 turns of 2,048 tokens)",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="print the overrides with their sources (and the composed config with verl)",
    )
    # the rest of the command line (Hydra key=value overrides) arrives as args.overrides
    parser.set_defaults(func=_run, takes_overrides=True)


def _run(args: argparse.Namespace) -> int:
    try:
        import verl  # noqa: F401
    except ImportError as err:
        if not args.dry_run:
            raise ValueError(
                f"mmsr train verl needs the verl extra: pip install 'mmsr[verl]' ({err})"
            ) from err
        has_verl = False
    else:
        has_verl = True
    from mmsr.integrations.verl.launch import describe, dry_run, launch

    if not Path(args.data).is_file():
        raise ValueError(f"--data {args.data}: no such file")
    run = verl_run(args)
    if args.dry_run and not has_verl:
        sys.stdout.write(describe(run))
        sys.stdout.write("# veRL's full config is composed only with the verl extra\n")
        return 0
    if args.dry_run:
        sys.stdout.write(dry_run(run))
        return 0
    return launch(run)


def verl_run(args: argparse.Namespace) -> VerlRun:
    """The ``VerlRun`` of the command's options (verl itself is not needed to build it)."""
    from mmsr.integrations.verl.episode import VERL_LIMITS
    from mmsr.integrations.verl.launch import PAPER_LIMITS, VerlRun
    from mmsr.rewards import RewardConfig
    from mmsr.rollout.settings import read_settings

    recipe = getattr(args, "recipe", "mmsr")
    device = getattr(args, "device", "gpu")
    base = PAPER_LIMITS if recipe == "paper" else VERL_LIMITS
    settings = args.settings  # its limits section wins over the recipe's, key by key
    if settings is None and device == "cpu":
        settings = CPU_SETTINGS
    reward, limits = read_settings(settings, limits=base) if settings else (RewardConfig(), base)
    model = args.model
    if model is None and device == "cpu":
        from mmsr.assets import WARMSTART_TINY

        model = str(WARMSTART_TINY)
    if model is None:
        raise ValueError("--model is needed (only --device cpu has a default: the tiny policy)")
    return VerlRun(
        data=args.data,
        model=model,
        out=args.out,
        val=args.val,
        nodes=args.nodes,
        gpus_per_node=args.gpus_per_node,
        search=args.search,
        reward=reward,
        limits=limits,
        overrides=tuple(args.overrides),
        recipe=recipe,
        device=device,
        steps=getattr(args, "steps", None),
    )
