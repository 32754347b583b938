"""``run_eval``: one ``mmsr eval`` run from an ``EvalRunConfig``, start to ``metrics.json``.

Builds the parts the config names (questions, policy, search tools, judge), refuses a run
folder made with other settings, saves the resolved config as ``OUT/config.json``, runs
``loop.evaluate`` (resumable) under a progress bar and writes ``OUT/metrics.json``, holding
the folder's lock (``mmsr.run_folder``) throughout. Heavy imports (torch for ``hf:``) happen
only on the paths that need them. Not here: the command line (``mmsr.eval.cli`` builds the
config), the policy kinds (``mmsr.policy.registry``) or the evaluation loop itself (``loop``).
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from typing import Any

from mmsr.eval.config import EvalRunConfig, check_resume, write_saved
from mmsr.eval.records import ResultLine, eval_records
from mmsr.policy.registry import policy_from_spec
from mmsr.redact import redact
from mmsr.run_folder import hold_run_folder

logger = logging.getLogger(__name__)

METRICS_FILE = "metrics.json"


def build_policy(cfg: EvalRunConfig) -> tuple[Any, Any]:
    """(policy, turn encoder or None) from ``cfg.policy``; a vLLM engine's context fits the
    protocol's longest rollout (``cfg.limits.max_total_tokens``)."""
    return policy_from_spec(
        cfg.policy,
        model=cfg.model,
        api_key_env=cfg.api_key_env,
        temperature=cfg.temperature,
        concurrency=cfg.concurrency,
        device=cfg.local_device(),
        dtype=cfg.local_dtype(),
        max_batch=cfg.micro_batch_size,
        max_model_len=cfg.limits.max_total_tokens,
    )


def build_judge(cfg: EvalRunConfig) -> Any:
    """The LLM judge of ``cfg.judge`` in the protocol's style (its verdicts cached in the run
    folder), or None."""
    if cfg.judge is None:
        return None
    from mmsr.rewards.judge import build_judge as build

    return build(
        cfg.judge,
        style=cfg.protocol.judge_style,
        api_key_env=cfg.api_key_env,
        cache_path=cfg.out / "judge_cache.sqlite",
        prompt_file=cfg.judge_prompt,
        send_image=cfg.judge_images,
    )


def load_questions(cfg: EvalRunConfig) -> list[Any]:
    """The questions to evaluate: loaded, the subset chosen (then ``limit``), without
    duplicate ids or image-less samples."""
    from mmsr.data import load_samples
    from mmsr.data.subsets import select_subset

    if cfg.subset is None:
        samples = load_samples(cfg.data, format=cfg.format, limit=cfg.limit)
    else:
        samples = load_samples(cfg.data, format=cfg.format)
        samples = select_subset(samples, cfg.subset, benchmark=cfg.benchmark, seed=cfg.subset_seed)
        samples = samples[: cfg.limit] if cfg.limit is not None else samples
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
        raise ValueError(f"{cfg.data}: no questions to evaluate")
    return kept


def live_stats(lines: list[ResultLine]) -> dict[str, str]:
    """Accuracy (judge where judged, else the reward's), search ratio (all and successful
    calls), failed tool calls and failed questions, for the bar."""
    n = len(lines) or 1
    correct = sum(
        bool(line.judge) if line.judge is not None else line.reward["accuracy"] > 0
        for line in lines
    )
    ok_searched = sum(any(c.get("error") is None for c in line.tool_calls) for line in lines)
    failed_calls = sum(c.get("error") is not None for line in lines for c in line.tool_calls)
    return {
        "acc": f"{correct / n:.3f}",
        "search": f"{sum(line.searched() for line in lines) / n:.3f}",
        "search_ok": f"{ok_searched / n:.3f}",
        "failed_calls": str(failed_calls),
        "failed_q": str(sum(line.error is not None for line in lines)),
    }


def benchmark_name(cfg: EvalRunConfig, samples: list[Any]) -> str:
    """``cfg.benchmark``, else the samples' one data source, else the data file's stem."""
    sources = {s.source for s in samples}
    if cfg.benchmark:
        return str(cfg.benchmark)
    return str(sources.pop()) if len(sources) == 1 and "" not in sources else cfg.data.stem


def run_info(cfg: EvalRunConfig, lines: list[ResultLine], samples: list[Any]) -> dict[str, Any]:
    """What ``metrics.json`` says about the run besides the metrics."""
    rewards = [line.reward["score"] for line in lines]
    return {
        "method": cfg.method,
        "policy": redact(cfg.policy if cfg.model is None else f"{cfg.policy}#{cfg.model}"),
        "data": str(cfg.data),
        "benchmark": benchmark_name(cfg, samples),
        "n_samples": len(samples),
        "n_done": len(lines),
        "end_reasons": dict(sorted(Counter(line.end_reason for line in lines).items())),
        "reward_mean": sum(rewards) / len(rewards) if rewards else 0.0,
        "judge": cfg.judge.rpartition("#")[2] if cfg.judge else None,
        "judge_unusable": sum(line.judge_error is not None for line in lines),
        "protocol": cfg.protocol.name,
        "subset": cfg.subset,
        "failed_questions": sum(line.error is not None for line in lines),
    }


def _context(cfg: EvalRunConfig, search: dict[str, Any] | None) -> Any:
    """The ``MethodContext`` of the run: policy, tools, limits, prompt set."""
    from mmsr.eval.methods import MethodContext
    from mmsr.protocol.prompts import load_prompt_set
    from mmsr.search.base import SearchBackends
    from mmsr.search.registry import build_search

    policy, encoder = build_policy(cfg)
    return MethodContext(
        policy=policy,
        search=build_search(search) if search is not None else SearchBackends(),
        encoder=encoder,
        limits=cfg.limits,
        prompts=load_prompt_set(cfg.prompts) if cfg.prompts else None,
        tool_workers=cfg.concurrency,
        untagged=cfg.protocol.untagged_baselines,
    )


def _write_metrics(
    cfg: EvalRunConfig, lines: list[ResultLine], samples: list[Any], ctx: Any
) -> dict[str, Any]:
    from mmsr.eval.metrics import allowed_search_calls, compute_metrics

    # the calls the protocol's limits allow, the same for every method, so that methods compare
    allowed = allowed_search_calls(ctx.limits)
    metrics = compute_metrics(eval_records(lines), allowed_calls=allowed)
    metrics["run"] = run_info(cfg, lines, samples)
    text = json.dumps(metrics, indent=1) + "\n"
    (cfg.out / METRICS_FILE).write_text(text, encoding="utf-8")
    return metrics


def run_eval(cfg: EvalRunConfig) -> dict[str, Any]:
    """Evaluate (or resume) the run ``cfg`` describes; returns what ``metrics.json`` holds.
    Holds ``cfg.out`` for the run: a second run on it at the same time is refused at once."""
    from mmsr.eval.methods import get_method
    from mmsr.search.registry import parse_search_config, search_config_from_spec

    method = get_method(cfg.method)
    search = search_config_from_spec(cfg.search) or None
    if search is not None:
        parse_search_config(search)  # checks it (a bad url, a typo) before the folder is taken
    with hold_run_folder(cfg.out):
        return _run_held(cfg, method, search)


def _run_held(cfg: EvalRunConfig, method: Any, search: dict[str, Any] | None) -> dict[str, Any]:
    from tqdm import tqdm

    from mmsr.data import sample_image
    from mmsr.eval.loop import TRAJECTORIES, evaluate, read_results

    saved = cfg.saved(search)
    check_resume(cfg.out, saved)
    samples = load_questions(cfg)
    ctx = _context(cfg, search)
    cfg.out.mkdir(parents=True, exist_ok=True)
    write_saved(cfg.out, saved)
    wanted = {s.id for s in samples}
    done = [line for line in read_results(cfg.out / TRAJECTORIES) if line.id in wanted]
    bar = tqdm(total=len(samples), initial=len(done), disable=not cfg.progress, unit="q")
    bar.set_postfix(live_stats(done))

    def on_batch(new: list[ResultLine]) -> None:
        done.extend(new)
        bar.update(len(new))
        bar.set_postfix(live_stats(done))

    load_image = sample_image  # image-less samples were dropped; the id is the fvqa backend's key
    if cfg.protocol.resize_images:
        from mmsr.eval.protocols import release_resize

        load_image = lambda sample: release_resize(sample_image(sample))  # noqa: E731
    lines = evaluate(
        samples,
        load_image,
        method,
        ctx,
        cfg.out,
        batch_size=cfg.batch_size,
        seed=cfg.seed,
        reward=cfg.reward,
        judge=build_judge(cfg),
        on_batch=on_batch,
        retry_failed=cfg.retry_failed,
    )
    bar.close()
    metrics = _write_metrics(cfg, [line for line in lines if line.id in wanted], samples, ctx)
    crashes = ctx.tool_failures.snapshot()
    if crashes:
        logger.warning("tool calls that raised unexpectedly (each a failed call): %s", crashes)
    return metrics


def summary_line(cfg: EvalRunConfig, metrics: dict[str, Any]) -> str:
    """The one line ``mmsr eval`` ends with: counts, EM, search ratios, where the metrics are."""
    overall = metrics["overall"]
    return (
        f"{cfg.method} on {cfg.data.name}: {metrics['run']['n_done']} questions "
        f"({overall['failed_questions']} failed), EM {overall['accuracy_em']:.3f}, "
        f"search ratio {overall['search_ratio']:.3f} "
        f"({overall['search_ratio_successful']:.3f} successful; failed calls: "
        f"{overall['failed_image_calls']} image, {overall['failed_text_calls']} text) "
        f"-> {cfg.out / METRICS_FILE}"
    )
