"""``mmsr train grpo``: GRPO with search on a local policy.

Usage::

    mmsr train grpo --preset tiny-cpu --out runs/grpo [--resume] [--section.field VALUE ...]
    mmsr train grpo --preset tiny-cpu --print-config --optim.lr 1e-5   # show the resolved config
    mmsr train grpo --preset qwen2.5-vl-3b-1gpu --dry-run   # config + estimated GPU memory
    mmsr train grpo --preset tiny-cpu --prompts release-layout:DIR   # another prompt set

Overrides come last; unknown sections or fields are errors. ``--prompts`` (a prompt-set folder,
or ``release-layout:DIR`` with your copy of the original release's texts) is the config's
``prompts`` field. The resolved config is saved as
``OUT/config.yaml``. On a GPU a run whose estimated peak memory (``mmsr.train.memory``) exceeds
the device's free memory is refused before anything is loaded (exit code 2). So is a second
run on an ``--out`` that a run still holds (exit code 1).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


def register(train_subparsers: Any) -> None:
    parser = train_subparsers.add_parser(
        "grpo",
        help="GRPO training with search (presets: tiny-cpu, qwen2.5-vl-3b-1gpu, -7b-1gpu)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--preset", default="tiny-cpu", help="a packaged preset or a YAML file")
    parser.add_argument("--out", type=Path, default=Path("runs/grpo"), help="run folder")
    parser.add_argument("--resume", action="store_true", help="continue from the newest checkpoint")
    parser.add_argument(
        "--print-config", action="store_true", help="print the resolved config and exit"
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="print the resolved config and the estimated peak GPU memory, then exit",
    )
    # the rest of the command line (--section.field VALUE ...) arrives as args.overrides
    parser.set_defaults(func=_run, takes_overrides=True)


def _run(args: argparse.Namespace) -> int:
    import yaml

    from mmsr.config import config_to_dict
    from mmsr.train.grpo_config import load_grpo_config

    cfg = load_grpo_config(args.preset, list(args.overrides))  # before the heavy imports
    if args.print_config or args.dry_run:
        sys.stdout.write(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
    if args.dry_run:
        sys.stdout.write(memory_report(cfg) + "\n")
    if args.print_config or args.dry_run:
        return 0
    refusal = fit_refusal(cfg)
    if refusal:
        logger.error("%s", refusal)
        return 2
    from mmsr.run_folder import hold_run_folder

    # before torch is imported and the model loads: a second run is refused at once
    with hold_run_folder(args.out):
        from mmsr.train.grpo import TrainingDiverged, train_grpo
        from mmsr.train.grpo_setup import build_parts

        parts = build_parts(cfg, args.out)
        try:
            metrics = train_grpo(cfg, parts, args.out, resume=args.resume)
        except TrainingDiverged as err:
            logger.error("training stopped: %s", err)
            return 3
    summary = {
        k: round(v, 4) for k, v in metrics.items() if k.split("/")[0] in ("reward", "search")
    }
    logger.info("done: %s; outputs in %s", summary, args.out)
    return 0


def _visible_memory(device: str) -> tuple[int, int] | None:
    """(free, total) bytes of ``device`` when it is a visible CUDA device, else None."""
    import torch

    if not device.startswith("cuda") or not torch.cuda.is_available():
        return None
    return tuple(torch.cuda.mem_get_info(torch.device(device)))  # type: ignore[return-value]


def memory_report(cfg: Any) -> str:
    """The estimated memory plan of ``cfg`` and how it compares with the visible device."""
    from mmsr.train.memory import GIB, grpo_memory_plan

    plan, source = grpo_memory_plan(cfg)
    lines = [f"# estimated peak GPU memory (shapes from {source}):", plan.table()]
    visible = _visible_memory(cfg.model.device)
    if not cfg.model.device.startswith("cuda"):
        lines.append(f"# model.device is {cfg.model.device!r}: no GPU to check against")
    elif visible is None:
        lines.append(f"# no CUDA device visible for model.device {cfg.model.device!r}: no check")
    else:
        free, total = visible
        verdict = "fits" if plan.peak <= free else "does NOT fit"
        lines.append(
            f"# {cfg.model.device}: {free / GIB:.1f} GiB free of {total / GIB:.1f} GiB: {verdict}"
        )
    return "\n".join(lines)


def fit_refusal(cfg: Any) -> str | None:
    """Why a real run of ``cfg`` must not start on this machine's GPU, or None."""
    import torch

    from mmsr.train.memory import GIB, grpo_memory_plan

    if cfg.model.device.startswith("cuda") and not torch.cuda.is_available():
        return f"model.device is {cfg.model.device!r} but CUDA is not available here"
    visible = _visible_memory(cfg.model.device)
    if visible is None:
        return None  # the CPU: no memory check
    plan, _ = grpo_memory_plan(cfg)
    c = plan.components
    engine_needs = c["kv_cache"] + c.get("vllm_weights", 0)
    if "vllm_weights" in c and engine_needs > cfg.rollout.vllm_memory * visible[1]:
        return (
            f"the vLLM engine needs {engine_needs / GIB:.1f} GiB (its weights and KV cache) but "
            f"rollout.vllm_memory {cfg.rollout.vllm_memory} of the GPU is "
            f"{cfg.rollout.vllm_memory * visible[1] / GIB:.1f} GiB; raise it or lower "
            "rollout.micro_batch_size or limits.max_total_tokens"
        )
    peak = plan.peak
    if "vllm_weights" in c:  # vLLM takes its whole share while it is awake
        static = c["weights"] + c["optimizer"] + c["reference"] + c["overhead"]
        peak = max(peak, static + int(cfg.rollout.vllm_memory * visible[1]))
    if peak <= visible[0]:
        return None
    return (
        f"the estimated peak memory {peak / GIB:.1f} GiB exceeds the {visible[0] / GIB:.1f} "
        f"GiB free on {cfg.model.device}; see --dry-run, and lower rollout.micro_batch_size, "
        "algo.micro_batch_size or limits.max_total_tokens, or turn on "
        "model.gradient_checkpointing or LoRA (model.lora_rank)"
    )
