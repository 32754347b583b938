"""``mmsr eval`` (run one method of one policy on one dataset) and ``mmsr report`` (tables, plots).

    mmsr eval --policy scripted:top-title --method on-demand --data world/test.parquet \\
        --search local:world/index --out runs/top-title-on-demand
    mmsr eval --policy openai:http://localhost:8000/v1#Qwen2.5-VL-7B --method rag ...
    mmsr eval --policy hf:checkpoints/tiny --method direct ...
    mmsr report runs/* --out report/

A rerun with the same ``--out`` resumes: questions already in ``trajectories.jsonl`` are
skipped. Heavy imports (torch for ``hf:``) happen only on the paths that need them.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
from collections import Counter
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

SECRET_WORDS = ("key", "token", "secret", "password")
_USERINFO = re.compile(r"//[^/@\s]+@")
# Settings that must not change between a run and its resumption.
RESUME_KEYS = ("policy", "method", "data", "search", "seed", "temperature", "reward_mode")


def register(subparsers: Any) -> None:
    from mmsr.eval.baselines import SCRIPTED_POLICIES
    from mmsr.eval.methods import METHODS

    run = subparsers.add_parser("eval", help="evaluate a policy with one method on a dataset")
    run.add_argument(
        "--policy",
        required=True,
        help="hf:MODEL_DIR | openai:BASE_URL#MODEL | scripted:NAME "
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
    run.add_argument("--concurrency", type=int, default=8, help="parallel API and search calls")
    run.add_argument("--judge", default=None, help="LLM judge: BASE_URL#MODEL (optional)")
    run.add_argument("--seed", type=int, default=0, help="sampling seed (per question)")
    run.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    run.add_argument("--max-new-tokens", type=int, default=256, help="longest assistant turn")
    run.add_argument("--prompts", type=Path, default=None, help="prompt set folder (on-demand)")
    run.add_argument("--reward-mode", default="em", choices=["em", "subem", "f1"])
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    run.add_argument(
        "--retry-failed",
        action="store_true",
        help="run again the questions a previous run recorded as failed",
    )
    run.set_defaults(func=_eval)

    report = subparsers.add_parser("report", help="Table-1-style report of eval run folders")
    report.add_argument("runs", nargs="+", type=Path, help="run folders of mmsr eval")
    report.add_argument("--out", required=True, type=Path, help="folder for report.md/html")
    report.add_argument(
        "--metric",
        default="auto",
        choices=["auto", "em", "subem", "f1", "judge"],
        help="accuracy shown (auto: judge when every run has it, else em)",
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

    paths = write_report(args.runs, args.out, metric=args.metric)
    for path in paths:
        print(path)
    return 0


# --- resolving the settings ---


def split_endpoint(spec: str, model: str | None, what: str) -> tuple[str, str]:
    """``BASE_URL#MODEL`` → (base url, model); ``model`` fills in a missing ``#MODEL``."""
    base, sep, name = spec.rpartition("#")
    if not sep:
        base, name = spec, model or ""
    if not base.startswith(("http://", "https://")) or not name:
        raise ValueError(f"{what}: expected BASE_URL#MODEL (http[s]://…#name), got {spec!r}")
    return base, name


def redact(value: Any) -> Any:
    """``value`` with every entry whose key names a secret replaced by "***", and the
    user:password part of URLs masked."""
    if isinstance(value, str):
        return _USERINFO.sub("//***@", value)
    if isinstance(value, dict):
        return {
            k: "***" if any(w in str(k).lower() for w in SECRET_WORDS) else redact(v)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [redact(v) for v in value]
    return value


def resolved_config(args: argparse.Namespace, search: dict[str, Any] | None) -> dict[str, Any]:
    return {
        "policy": redact(args.policy),
        "model": args.model,
        "method": args.method,
        "data": str(args.data.resolve()),
        "format": args.format,
        "benchmark": args.benchmark,
        "search": redact(search),
        "limit": args.limit,
        "batch_size": args.batch_size,
        "concurrency": args.concurrency,
        "judge": redact(args.judge),
        "seed": args.seed,
        "temperature": args.temperature,
        "max_new_tokens": args.max_new_tokens,
        "prompts": str(args.prompts) if args.prompts else None,
        "reward_mode": args.reward_mode,
    }


def check_resume(out: Path, config: dict[str, Any]) -> None:
    """Refuse to resume a run folder made with other settings (its lines would mix)."""
    path = out / "config.json"
    if not path.is_file():
        return
    before = json.loads(path.read_text(encoding="utf-8"))
    changed = [k for k in RESUME_KEYS if before.get(k) != config.get(k)]
    if changed:
        raise ValueError(
            f"{out} holds a run with other settings ({', '.join(changed)}); use another --out"
        )


# --- building the parts ---


def build_policy(args: argparse.Namespace) -> tuple[Any, Any]:
    """(policy, turn encoder or None) from ``--policy``."""
    kind, _, rest = args.policy.partition(":")
    if kind == "scripted":
        from mmsr.eval.baselines import scripted_policy

        return scripted_policy(rest), None
    if kind == "openai":
        from mmsr.chat import ChatClient
        from mmsr.policy.openai import OpenAIPolicy

        base, model = split_endpoint(rest, args.model, "--policy openai:")
        client = ChatClient(base, model, api_key_env=args.api_key_env)
        return OpenAIPolicy(
            client, temperature=args.temperature, concurrency=args.concurrency
        ), None
    if kind == "hf":
        from mmsr.policy.local_model import load_hf_policy  # imports torch

        return load_hf_policy(rest, temperature=args.temperature)
    raise ValueError(f"--policy: unknown kind {kind!r}; expected hf:, openai: or scripted:")


def build_judge(args: argparse.Namespace) -> Any:
    if args.judge is None:
        return None
    from mmsr.chat import ChatClient
    from mmsr.eval.judge import LLMJudge, VerdictCache

    base, model = split_endpoint(args.judge, None, "--judge")
    client = ChatClient(base, model, api_key_env=args.api_key_env)
    return LLMJudge(client, VerdictCache(args.out / "judge_cache.sqlite"))


def _samples(args: argparse.Namespace) -> list[Any]:
    """The questions to evaluate: loaded, without duplicate ids or image-less samples."""
    from mmsr.data import load_samples

    samples = load_samples(args.data, format=args.format, limit=args.limit)
    seen: set[str] = set()
    kept = []
    for sample in samples:
        if sample.id in seen or sample.image is None:
            why = "duplicate id" if sample.id in seen else "no readable image"
            logger.warning("skipping %s: %s", sample.id, why)
            continue
        seen.add(sample.id)
        kept.append(sample)
    if not kept:
        raise ValueError(f"{args.data}: no questions to evaluate")
    return kept


def _live_stats(lines: list[dict[str, Any]]) -> dict[str, str]:
    """Accuracy (judge where judged, else the reward's), search ratio (all and successful
    calls), failed tool calls and failed questions, for the bar."""
    n = len(lines) or 1
    correct = sum(
        bool(line["judge"]) if line["judge"] is not None else line["reward"]["accuracy"] > 0
        for line in lines
    )
    searched = sum(line["image_calls"] + line["text_calls"] > 0 for line in lines)
    calls = [c for line in lines for c in line.get("tool_calls") or []]
    ok_searched = sum(
        any(c.get("error") is None for c in line.get("tool_calls") or []) for line in lines
    )
    return {
        "acc": f"{correct / n:.3f}",
        "search": f"{searched / n:.3f}",
        "search_ok": f"{ok_searched / n:.3f}",
        "failed_calls": str(sum(c.get("error") is not None for c in calls)),
        "failed_q": str(sum(line.get("error") is not None for line in lines)),
    }


def benchmark_name(args: argparse.Namespace, samples: list[Any]) -> str:
    """``--benchmark``, else the samples' one data source, else the data file's stem."""
    sources = {s.source for s in samples}
    if args.benchmark:
        return str(args.benchmark)
    return str(sources.pop()) if len(sources) == 1 and "" not in sources else args.data.stem


def run_info(
    args: argparse.Namespace, lines: list[dict[str, Any]], samples: list[Any]
) -> dict[str, Any]:
    """What ``metrics.json`` says about the run besides the metrics."""
    rewards = [line["reward"]["score"] for line in lines]
    return {
        "method": args.method,
        "policy": redact(args.policy if args.model is None else f"{args.policy}#{args.model}"),
        "data": str(args.data),
        "benchmark": benchmark_name(args, samples),
        "n_samples": len(samples),
        "n_done": len(lines),
        "end_reasons": dict(sorted(Counter(line["end_reason"] for line in lines).items())),
        "reward_mean": sum(rewards) / len(rewards) if rewards else 0.0,
        "judge": args.judge.rpartition("#")[2] if args.judge else None,
        "judge_unusable": sum(line.get("judge_error") is not None for line in lines),
        "failed_questions": sum(line.get("error") is not None for line in lines),
    }


def _context(args: argparse.Namespace, search: dict[str, Any] | None) -> Any:
    """The ``MethodContext`` of the run: policy, tools, limits, prompt set."""
    from mmsr.eval.methods import MethodContext
    from mmsr.protocol.prompts import load_prompt_set
    from mmsr.rollout.engine import RolloutLimits
    from mmsr.search.base import SearchBackends
    from mmsr.search.registry import build_search

    policy, encoder = build_policy(args)
    return MethodContext(
        policy=policy,
        search=build_search(search) if search is not None else SearchBackends(),
        encoder=encoder,
        limits=RolloutLimits(max_new_tokens=args.max_new_tokens),
        prompts=load_prompt_set(args.prompts) if args.prompts else None,
        tool_workers=args.concurrency,
    )


def _write_metrics(
    args: argparse.Namespace, lines: list[dict[str, Any]], samples: list[Any], ctx: Any
) -> dict[str, Any]:
    from mmsr.eval.metrics import compute_metrics
    from mmsr.eval.runner import eval_records

    # the protocol's allowed calls for every method, so that methods compare
    allowed = ctx.limits.max_image_searches + ctx.limits.max_text_searches
    metrics = compute_metrics(eval_records(lines), allowed_calls=allowed)
    metrics["run"] = run_info(args, lines, samples)
    (args.out / "metrics.json").write_text(json.dumps(metrics, indent=1) + "\n", encoding="utf-8")
    return metrics


def _eval(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from mmsr.data import open_image
    from mmsr.eval.methods import get_method
    from mmsr.eval.runner import evaluate, read_finished
    from mmsr.search.registry import search_config_from_spec

    method = get_method(args.method)
    if args.prompts is not None and args.method != "on-demand":
        raise ValueError("--prompts applies to --method on-demand only")
    search = search_config_from_spec(args.search) or None
    config = resolved_config(args, search)
    check_resume(args.out, config)
    samples = _samples(args)
    ctx = _context(args, search)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "config.json").write_text(json.dumps(config, indent=1) + "\n", encoding="utf-8")
    wanted = {s.id for s in samples}
    done = [line for line in read_finished(args.out / "trajectories.jsonl") if line["id"] in wanted]
    bar = tqdm(total=len(samples), initial=len(done), disable=args.no_progress, unit="q")
    bar.set_postfix(_live_stats(done))

    def on_batch(new: list[dict[str, Any]]) -> None:
        done.extend(new)
        bar.update(len(new))
        bar.set_postfix(_live_stats(done))

    lines = evaluate(
        samples,
        lambda s: open_image(s.image or b""),  # image-less samples were dropped
        method,
        ctx,
        args.out,
        batch_size=args.batch_size,
        seed=args.seed,
        reward_mode=args.reward_mode,
        judge=build_judge(args),
        on_batch=on_batch,
        retry_failed=args.retry_failed,
    )
    bar.close()
    lines = [line for line in lines if line["id"] in wanted]
    overall = _write_metrics(args, lines, samples, ctx)["overall"]
    crashes = ctx.tool_failures.snapshot()
    if crashes:
        logger.warning("tool calls that raised unexpectedly (each a failed call): %s", crashes)
    print(
        f"{args.method} on {args.data.name}: {len(lines)} questions "
        f"({overall['failed_questions']} failed), EM {overall['accuracy_em']:.3f}, "
        f"search ratio {overall['search_ratio']:.3f} "
        f"({overall['search_ratio_successful']:.3f} successful; failed calls: "
        f"{overall['failed_image_calls']} image, {overall['failed_text_calls']} text) "
        f"-> {args.out / 'metrics.json'}"
    )
    return 0
