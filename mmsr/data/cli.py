"""``mmsr data …``: inspect, export, balance and generate datasets.

    mmsr data info FILE                              # format, counts, first sample
    mmsr data export-verl IN OUT [--skip-bad]        # any supported file -> veRL parquet
    mmsr data balance IN OUTCOMES.jsonl OUT --ratio 0.68 --seed 0
    mmsr data balance IN OUTCOMES.jsonl OUT --policy hf:MODEL --search local:INDEX --rollouts 8
    mmsr data generate-qa CONCEPTS.jsonl OUT --base-url URL --model NAME

``balance`` reads rollouts recorded in JSONL (one ``{"data_id", "correct",
"image_searches", "text_searches"}`` per rollout); with ``--policy`` it first makes them, N
rollouts of each question on the rollout engine, and writes them to that file.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from tqdm import tqdm


def _add_load_options(parser: argparse.ArgumentParser) -> None:
    from mmsr.data.formats import FORMATS

    parser.add_argument("--format", choices=sorted(FORMATS), help="input format (default: detect)")
    parser.add_argument("--skip-bad", action="store_true", help="skip bad rows, with a count")
    parser.add_argument("--limit", type=int, help="read at most this many samples")
    parser.add_argument("--image-dir", type=Path, help="folder of image files (InfoSeek, LiveVQA)")


def _iter(args: argparse.Namespace, stats: Any) -> Any:
    from mmsr.data.loaders import iter_samples

    return iter_samples(
        args.input,
        format=args.format,
        skip_bad=args.skip_bad,
        limit=args.limit,
        image_dir=args.image_dir,
        stats=stats,
    )


def _cmd_info(args: argparse.Namespace) -> int:
    from mmsr.data.formats import detect_format
    from mmsr.data.schema import LoadStats

    stats = LoadStats()
    name = args.format or detect_format(args.input)
    categories: dict[str, int] = {}
    first = None
    for sample in tqdm(_iter(args, stats), desc="reading", unit="sample", leave=False):
        first = first or sample
        key = sample.category or "unlabelled"
        categories[key] = categories.get(key, 0) + 1
    print(f"format: {name}\n{stats.summary()}\ncategories: {json.dumps(categories)}")
    if first is not None:
        shown = {k: v for k, v in vars(first).items() if k != "image"}
        shown["image_bytes"] = len(first.image) if first.image is not None else None
        print(json.dumps(shown, ensure_ascii=False, default=str, indent=1))
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from mmsr.data.export import write_verl_parquet
    from mmsr.data.schema import LoadStats

    stats = LoadStats()
    samples = tqdm(_iter(args, stats), desc="exporting", unit="sample")
    count = write_verl_parquet(samples, args.output, split=args.split, image_token=args.image_token)
    print(f"wrote {count} samples to {args.output} ({stats.summary()})")
    return 0


def _cmd_balance(args: argparse.Namespace) -> int:
    from mmsr.data.balance import RolloutOutcome, balance, load_outcomes
    from mmsr.data.export import write_verl_parquet
    from mmsr.data.loaders import load_samples
    from mmsr.types import Sample

    if args.policy is None and args.search != "none":
        raise ValueError("--search needs --policy (recorded outcomes were searched already)")
    samples = load_samples(
        args.input, format=args.format, skip_bad=args.skip_bad, limit=args.limit,
        image_dir=args.image_dir,
    )  # fmt: skip
    if args.policy is not None:
        _record_outcomes(args, samples)
    recorded = load_outcomes(args.outcomes)

    def rollouts(sample: Sample, n: int) -> list[RolloutOutcome]:
        return recorded.get(sample.id, [])[:n]

    with tqdm(total=len(samples), desc="labelling", unit="question") as bar:
        result = balance(
            samples, rollouts, n=args.rollouts, ratio=args.ratio, seed=args.seed,
            progress=bar.update,
        )  # fmt: skip
    write_verl_parquet(result.samples, args.output)
    counts = {k: v for k, v in vars(result).items() if k != "samples"}
    print(json.dumps({"written": len(result.samples), **counts}))
    return 0


def _record_outcomes(args: argparse.Namespace, samples: list[Any]) -> None:
    """``--rollouts`` rollouts of each question by ``--policy`` with ``--search``, written to
    the OUTCOMES file (replaced), one ``outcome_record`` per line."""
    from mmsr.data.balance import outcome_record
    from mmsr.data.outcomes import iter_outcomes
    from mmsr.policy.registry import policy_from_spec
    from mmsr.rollout import RolloutEngine
    from mmsr.search.base import SearchBackends
    from mmsr.search.registry import build_search, search_config_from_spec

    config = search_config_from_spec(args.search)
    tools = build_search(config) if config else SearchBackends()
    policy, encoder = policy_from_spec(
        args.policy, api_key_env=args.api_key_env, temperature=args.temperature
    )
    engine = RolloutEngine(
        policy, image_search=tools.image, text_search=tools.text, encoder=encoder
    )
    total = sum(s.image is not None for s in samples) * args.rollouts
    args.outcomes.parent.mkdir(parents=True, exist_ok=True)
    with (
        args.outcomes.open("w", encoding="utf-8") as handle,
        tqdm(total=total, desc="rollouts", unit="rollout") as bar,
    ):
        for data_id, outcome in iter_outcomes(
            engine, samples, args.rollouts, seed=args.seed, batch_size=args.batch_size,
            progress=bar.update,
        ):  # fmt: skip
            handle.write(json.dumps(outcome_record(data_id, outcome)) + "\n")


def _cmd_generate(args: argparse.Namespace) -> int:
    from mmsr.chat_client import ChatClient
    from mmsr.data.export import write_verl_parquet
    from mmsr.data.qagen import (
        QAResult,
        generate_qa,
        iter_concepts,
        qa_sample,
        rejected_record,
    )

    client = ChatClient(
        args.base_url, args.model, api_key_env=args.api_key_env,
        timeout_s=args.timeout, max_retries=args.retries,
    )  # fmt: skip
    kept: list[QAResult] = []
    rejected: list[QAResult] = []
    with client:
        for concept in tqdm(iter_concepts(args.concepts), desc="generating", unit="concept"):
            result = generate_qa(concept, client, attempts=args.attempts)
            (kept if result.qa is not None else rejected).append(result)
    write_verl_parquet([qa_sample(r) for r in kept], args.output)
    if args.rejected is not None:
        with args.rejected.open("w", encoding="utf-8") as handle:
            for r in rejected:
                handle.write(json.dumps(rejected_record(r), ensure_ascii=False) + "\n")
    print(json.dumps({"accepted": len(kept), "rejected": len(rejected)}))
    return 0 if kept or not rejected else 1


def _add_policy_options(p: argparse.ArgumentParser) -> None:
    """``balance``'s options for making its rollouts with a policy."""
    p.add_argument(
        "--policy", help="run it first: hf:MODEL_DIR | openai:BASE_URL#MODEL | scripted:NAME"
    )
    p.add_argument(
        "--search",
        default="none",
        help="with --policy: local:INDEX_DIR, http:URL, none or a config file",
    )
    p.add_argument(
        "--temperature", type=float, default=1.0,
        help="with --policy: sampling temperature (greedy would repeat one rollout N times)",
    )  # fmt: skip
    p.add_argument("--batch-size", type=int, default=16, help="with --policy: rollouts per call")
    p.add_argument(
        "--api-key-env", default="OPENAI_API_KEY", help="with openai:, the key's env var"
    )


def _register_balance(sub: Any) -> None:
    from mmsr.data.balance import DEFAULT_RATIO

    p = sub.add_parser(
        "balance",
        help="label by rollouts (recorded, or run with --policy) and sample to a ratio",
        description="Label questions from rollouts (paper §3) and sample to a share of "
        "search_required. The rollouts are read from OUTCOMES, or, with --policy, made first: "
        "N per question on the rollout engine with --search, written to OUTCOMES.",
    )
    p.add_argument("input", type=Path, help="dataset to balance")
    p.add_argument(
        "outcomes", type=Path, help="JSONL of rollouts (data_id, correct, searches); "
        "written (replaced) with --policy",
    )  # fmt: skip
    p.add_argument("output", type=Path, help="balanced veRL parquet")
    p.add_argument("--ratio", type=float, default=DEFAULT_RATIO, help="share of search_required")
    p.add_argument("--seed", type=int, default=0, help="seed of the subsampling and sampling")
    p.add_argument(
        "--rollouts", type=int, default=8,
        help="rollouts per question: used at most N recorded, or N run with --policy",
    )  # fmt: skip
    _add_policy_options(p)
    _add_load_options(p)
    p.set_defaults(func=_cmd_balance)


def _register_generate(sub: Any) -> None:
    p = sub.add_parser(
        "generate-qa",
        help="questions from (concept, image, page) with an LLM",
        description="Generate one checked question-answer pair per concept with an "
        "OpenAI-compatible chat API. Exits 1 when every concept was rejected.",
    )
    p.add_argument("concepts", type=Path, help='JSONL: {"concept", "page"|"page_file", "image"}')
    p.add_argument("output", type=Path, help="accepted pairs as veRL parquet")
    p.add_argument("--base-url", required=True, help="OpenAI-compatible API, e.g. http://h/v1")
    p.add_argument("--model", required=True, help="model name on that server")
    p.add_argument("--api-key-env", default="OPENAI_API_KEY", help="env var holding the key")
    p.add_argument("--attempts", type=int, default=2, help="tries per concept")
    p.add_argument("--retries", type=int, default=2, help="HTTP retries on 429/5xx/timeouts")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds per request")
    p.add_argument("--rejected", type=Path, help="write rejected concepts and reasons here")
    p.set_defaults(func=_cmd_generate)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("data", help="load, export, balance and generate datasets")
    sub = parser.add_subparsers(dest="data_command", metavar="DATA_COMMAND", required=True)
    p = sub.add_parser("info", help="detected format, counts and the first sample")
    p.add_argument("input", type=Path)
    _add_load_options(p)
    p.set_defaults(func=_cmd_info)
    p = sub.add_parser("export-verl", help="any supported file -> veRL parquet")
    p.add_argument("input", type=Path)
    p.add_argument("output", type=Path)
    p.add_argument("--split", default="train", help="written to extra_info.split")
    p.add_argument("--image-token", help="prefix questions with this, e.g. '<image>'")
    _add_load_options(p)
    p.set_defaults(func=_cmd_export)
    _register_balance(sub)
    _register_generate(sub)
