"""``mmsr eval`` (run one method of one policy on one dataset) and ``mmsr report`` (tables, plots).

    mmsr eval --policy scripted:top-title --method on-demand --data world/test.parquet \\
        --search local:world/index --out runs/top-title-on-demand
    mmsr eval --policy openai:http://localhost:8000/v1#Qwen2.5-VL-7B --method rag ...
    mmsr eval --policy hf:checkpoints/tiny --method direct ...
    mmsr eval --policy hf:models/Qwen2.5-VL-7B-Instruct --device cuda --micro-batch-size 8 ...
    mmsr eval --policy vllm:models/Qwen2.5-VL-7B-Instruct --batch-size 64 ...   # the gpu extra
    mmsr eval --protocol paper --subset paper --judge http://localhost:8001/v1#judge ...
    mmsr report runs/* --out report/ --paper

A rerun with the same ``--out`` resumes: questions already in ``trajectories.jsonl`` are
skipped. The reward and the protocol's limits come from ``--settings FILE`` (the ``reward`` and
``limits`` sections of a training preset or a run's saved config, e.g. to evaluate with the
limits a policy was trained with), then ``--max-new-tokens``/``--reward-mode``, then
``--reward.FIELD VALUE``/``--limits.FIELD VALUE``. The options become an ``EvalRunConfig``
(``mmsr.eval.config``) and ``mmsr.eval.run.run_eval`` runs it; nothing heavy is imported here.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mmsr.config import build, merge, parse_overrides
from mmsr.data.subsets import SUBSETS
from mmsr.eval.config import EVAL_REWARD_MODES, EvalRunConfig
from mmsr.eval.protocols import PROTOCOLS
from mmsr.rewards import RewardConfig
from mmsr.rollout.rules import RolloutLimits
from mmsr.rollout.settings import read_settings


@dataclass(frozen=True)
class _Sections:
    """What ``mmsr eval``'s ``--section.field VALUE`` overrides may set."""

    reward: RewardConfig
    limits: RolloutLimits


def register(subparsers: Any) -> None:
    from mmsr.eval.methods import METHODS
    from mmsr.policy.baselines import SCRIPTED_POLICIES

    run = subparsers.add_parser("eval", help="evaluate a policy with one method on a dataset")
    run.add_argument(
        "--policy",
        required=True,
        help="hf:MODEL_DIR | vllm:MODEL_DIR | openai:BASE_URL#MODEL | scripted:NAME "
        f"(built in: {', '.join(SCRIPTED_POLICIES)})",
    )
    run.add_argument("--model", default=None, help="model name for openai: without '#MODEL'")
    run.add_argument("--api-key-env", default="OPENAI_API_KEY", help="env var of the API key")
    run.add_argument("--method", required=True, choices=list(METHODS))
    run.add_argument("--data", required=True, type=Path, help="any file load_samples reads")
    run.add_argument("--format", default=None, help="data format (default: detected)")
    run.add_argument(
        "--benchmark", default=None, help="benchmark name in reports (default: the data source)"
    )
    run.add_argument(
        "--search",
        default="none",
        help="a search config file (.json/.toml, passed to build_search), local:INDEX_DIR, or none",
    )
    run.add_argument("--out", required=True, type=Path, help="run folder (resumed if present)")
    run.add_argument("--limit", type=int, default=None, help="first N questions only")
    run.add_argument("--batch-size", type=int, default=16, help="questions per rollout batch")
    run.add_argument(
        "--device", default=None, help="hf:/vllm: cpu, cuda or cuda:N (default: cpu; vllm: cuda)"
    )
    run.add_argument(
        "--dtype",
        default=None,
        choices=["float32", "bfloat16", "float16"],
        help="hf:/vllm: weights' dtype (default: bfloat16 on a GPU, else float32)",
    )
    run.add_argument(
        "--micro-batch-size",
        type=int,
        default=0,
        help="hf: requests per forward pass, bounds the KV cache (default 0: a whole batch)",
    )
    run.add_argument("--concurrency", type=int, default=8, help="parallel API and search calls")
    run.add_argument("--judge", default=None, help="LLM judge: BASE_URL#MODEL (optional)")
    run.add_argument(
        "--protocol",
        default="mmsr",
        choices=list(PROTOCOLS),
        help="paper: the paper's judge, untagged baselines, release image sizes, greedy",
    )
    run.add_argument(
        "--judge-prompt", type=Path, default=None, help="paper judge's system prompt file"
    )
    run.add_argument(
        "--no-judge-images", action="store_true", help="paper judge: text only (no image)"
    )
    run.add_argument("--subset", default=None, choices=list(SUBSETS), help="benchmark subset")
    run.add_argument("--subset-seed", type=int, default=0, help="seed of the subset's sample")
    run.add_argument("--seed", type=int, default=0, help="sampling seed (per question)")
    run.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    run.add_argument(
        "--settings",
        type=Path,
        default=None,
        help="reward and limits sections of a preset or run config (YAML/JSON)",
    )
    run.add_argument(
        "--max-new-tokens",
        type=int,
        default=None,
        help="longest assistant turn (default 256; --protocol paper: 2048)",
    )
    run.add_argument("--prompts", type=Path, default=None, help="prompt set folder (on-demand)")
    run.add_argument(
        "--reward-mode", default=None, choices=list(EVAL_REWARD_MODES), help="default: em"
    )
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    run.add_argument(
        "--retry-failed",
        action="store_true",
        help="run again the questions a previous run recorded as failed",
    )
    # the rest of the command line (--reward.FIELD VALUE, --limits.FIELD VALUE)
    run.set_defaults(func=_eval, takes_overrides=True)

    report = subparsers.add_parser("report", help="Table-1-style report of eval run folders")
    report.add_argument("runs", nargs="+", type=Path, help="run folders of mmsr eval")
    report.add_argument("--out", required=True, type=Path, help="folder for report.md/html")
    report.add_argument(
        "--metric",
        default="auto",
        choices=["auto", "em", "subem", "f1", "judge"],
        help="accuracy shown (auto: judge when every run has it, else em)",
    )
    report.add_argument(
        "--paper",
        type=Path,
        default=None,
        metavar="CSV",
        help="published rows to show beside ours (columns: source, policy, method, benchmark, "
        "accuracy, search_ratio; percentages typed from the paper, e.g. its Table 1)",
    )
    report.set_defaults(func=_report)

    score = subparsers.add_parser(
        "infoseek-score", help="InfoSeek's official metric over an eval run's answers"
    )
    score.add_argument("run", type=Path, help="run folder of mmsr eval (or a trajectories.jsonl)")
    score.add_argument("--references", required=True, type=Path, help="InfoSeek jsonl")
    score.add_argument("--qtypes", required=True, type=Path, help="InfoSeek question-type jsonl")
    score.set_defaults(func=_infoseek)


def _jsonl(path: Path) -> list[dict[str, Any]]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def _infoseek(args: argparse.Namespace) -> int:
    """Score a run's answers; writes ``infoseek.json`` beside its trajectories."""
    from mmsr.eval.infoseek import evaluate_infoseek

    path = args.run / "trajectories.jsonl" if args.run.is_dir() else args.run
    predictions = [
        {"data_id": line["id"], "prediction": line.get("answer") or ""} for line in _jsonl(path)
    ]
    scores = evaluate_infoseek(predictions, _jsonl(args.references), _jsonl(args.qtypes))
    text = json.dumps(scores, indent=1)
    (path.parent / "infoseek.json").write_text(text + "\n", encoding="utf-8")
    print(text)
    return 0


def _report(args: argparse.Namespace) -> int:
    from mmsr.eval.report import write_report

    paths = write_report(args.runs, args.out, metric=args.metric, reference=args.paper)
    for path in paths:
        print(path)
    return 0


def sections_from_args(args: argparse.Namespace) -> _Sections:
    """The reward and limits of ``mmsr eval``'s options: ``--settings``, then the two flags,
    then the ``--reward.FIELD``/``--limits.FIELD`` overrides, over the defaults."""
    reward, limits = (
        read_settings(args.settings) if args.settings else (RewardConfig(), RolloutLimits())
    )
    max_new_tokens = args.max_new_tokens
    if max_new_tokens is None:
        max_new_tokens = PROTOCOLS[getattr(args, "protocol", "mmsr")].max_new_tokens
    flags = {
        "reward": {} if args.reward_mode is None else {"mode": args.reward_mode},
        "limits": {} if max_new_tokens is None else {"max_new_tokens": max_new_tokens},
    }
    data = merge({"reward": asdict(reward), "limits": asdict(limits)}, flags)
    return build(_Sections, merge(data, parse_overrides(getattr(args, "overrides", []))))


def config_from_args(args: argparse.Namespace) -> EvalRunConfig:
    """The ``EvalRunConfig`` of ``mmsr eval``'s options (checked as it is built)."""
    sections = sections_from_args(args)
    return EvalRunConfig(
        policy=args.policy,
        method=args.method,
        data=args.data,
        out=args.out,
        model=args.model,
        api_key_env=args.api_key_env,
        format=args.format,
        benchmark=args.benchmark,
        search=args.search,
        limit=args.limit,
        batch_size=args.batch_size,
        device=args.device,
        dtype=args.dtype,
        micro_batch_size=args.micro_batch_size,
        concurrency=args.concurrency,
        judge=args.judge,
        seed=args.seed,
        temperature=args.temperature,
        limits=sections.limits,
        prompts=args.prompts,
        reward=sections.reward,
        progress=not args.no_progress,
        retry_failed=args.retry_failed,
        protocol=PROTOCOLS[args.protocol],
        judge_prompt=args.judge_prompt,
        judge_images=not args.no_judge_images,
        subset=args.subset,
        subset_seed=args.subset_seed,
    )


def command_line(cfg: EvalRunConfig) -> list[str]:
    """The ``mmsr eval`` arguments that give ``cfg`` back (settings at their default left out;
    those of the reward and the limits as ``--section.field=VALUE``, last)."""
    argv, sections = ["eval"], []
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if f.name in ("reward", "limits"):
            default = asdict(type(value)())  # eval's defaults are the sections' own
            changed = {k: v for k, v in asdict(value).items() if v != default[k]}
            sections += [f"--{f.name}.{k}={json.dumps(v)}" for k, v in changed.items()]
        elif f.name in ("progress", "judge_images"):
            argv += [] if value else [f"--no-{f.name.replace('_', '-')}"]
        elif f.name == "protocol":
            argv += [] if value.name == "mmsr" else ["--protocol", value.name]
        elif f.default is dataclasses.MISSING or value != f.default:
            flag = "--" + f.name.replace("_", "-")
            argv += [flag] if value is True else [flag, str(value)]
    return argv + sections


def _eval(args: argparse.Namespace) -> int:
    from mmsr.eval.run import run_eval, summary_line

    cfg = config_from_args(args)
    print(summary_line(cfg, run_eval(cfg)))
    return 0
