"""GRPO step time: our loop's pieces against TRL's ``GRPOTrainer``, same model, batch and lengths.

Both sides train the same randomly initialised tiny Qwen2.5-VL (text only: no image in the
prompts), built in-process with a tokenizer trained on the protocol's prompts; the same P
prompts × G completions per step, the same longest completion, temperature 1, β = 0.001 with a
frozen reference, ε = 0.2, token-mean loss, AdamW at the same learning rate, the same reward
(``mmsr.rewards.score_trajectory``) and the same number of torch threads. Our step is what
``mmsr.train.grpo.train_grpo`` does per step, minus the multi-turn engine's bookkeeping: sample
with ``HFPolicy``, score, ``group_advantages``, ``update_policy``. TRL's step time is measured
with a trainer callback around each ``training_step`` (which generates, scores and updates).
The first step of each side is a warm-up and is not counted. TRL is the optional extra
``[bench]``; without it the TRL side is skipped and said so. The last line printed is JSON.

    .venv/bin/pip install -e '.[bench]'
    .venv/bin/python bench/trainer_bench.py                      # 4 x 8 rollouts, 48 tokens
    .venv/bin/python bench/trainer_bench.py --steps 3 --skip-trl # our side only
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import statistics
import tempfile
import time
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing here may reach a hub

import torch

from mmsr.models import (
    PRESETS,
    ImageProcessor,
    build_tiny_model,
    save_pretrained,
    train_tokenizer,
)
from mmsr.policy.base import GenerationRequest
from mmsr.policy.local_model import build_hf_policy
from mmsr.protocol import default_prompt_set
from mmsr.protocol.prompts import QUESTION_SLOT
from mmsr.rewards import score_trajectory
from mmsr.train.batch import TokenSequence, collate
from mmsr.train.grpo import rollout_seeds, update_policy
from mmsr.train.grpo_config import AlgoSection
from mmsr.train.loss import group_advantages

logger = logging.getLogger("trainer_bench")

QUESTIONS = [
    ("What is the capital of France?", ["Paris"]),
    ("Which animal is the largest on land?", ["elephant"]),
    ("What is the currency of Japan?", ["yen"]),
    ("Which ocean is the largest?", ["Pacific"]),
    ("What is the capital of Italy?", ["Rome"]),
    ("Which planet is red?", ["Mars"]),
    ("What do bees make?", ["honey"]),
    ("What is frozen water called?", ["ice"]),
]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--prompts", type=int, default=4, help="prompts per step (P)")
    parser.add_argument("--group", type=int, default=8, help="completions per prompt (G)")
    parser.add_argument("--max-new-tokens", type=int, default=48, help="longest completion")
    parser.add_argument("--steps", type=int, default=4, help="steps per side (first: warm-up)")
    parser.add_argument("--preset", default="tiny", help="tiny model preset")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: all cores)")
    parser.add_argument("--skip-trl", action="store_true", help="measure our side only")
    return parser.parse_args()


def build_model(preset: str) -> tuple[Any, Any, ImageProcessor]:
    prompts = default_prompt_set()
    texts = [prompts.first_turn, prompts.after_text_search] * 5 + [q for q, _ in QUESTIONS] * 5
    tokenizer = train_tokenizer(
        texts, vocab_size=2000, atomic_tokens=[a for _, g in QUESTIONS for a in g]
    )
    model = build_tiny_model(preset, tokenizer, seed=0)
    return model, tokenizer, ImageProcessor(PRESETS[preset].image_processor_config())


def prompt_text(question: str) -> str:
    return default_prompt_set().first_turn.replace(QUESTION_SLOT, question)


def batch_questions(args: argparse.Namespace, step: int) -> list[tuple[str, list[str]]]:
    return [QUESTIONS[(step * args.prompts + i) % len(QUESTIONS)] for i in range(args.prompts)]


def run_ours(args: argparse.Namespace) -> dict[str, float]:
    model, tokenizer, processor = build_model(args.preset)
    reference = build_model(args.preset)[0].requires_grad_(False)
    policy, encoder = build_hf_policy(model, tokenizer, processor, temperature=1.0)
    suppressed = sorted(encoder.forbidden_ids)
    algo = AlgoSection(
        prompts_per_step=args.prompts,
        group_size=args.group,
        micro_batch_size=args.prompts * args.group,
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    times, lengths = [], []
    for step in range(args.steps):
        start = time.perf_counter()
        questions = [q for q in batch_questions(args, step) for _ in range(args.group)]
        requests = []
        for (question, _), seed in zip(
            questions, rollout_seeds(0, step, len(questions)), strict=True
        ):
            ids = tokenizer.apply_chat_template(
                [{"role": "user", "content": prompt_text(question)}],
                add_generation_prompt=True,
                tokenize=True,
                return_dict=False,
            )
            requests.append(GenerationRequest((), tuple(ids), (), args.max_new_tokens, seed))
        model.eval()
        generations = policy.generate(requests)
        scores = torch.tensor(
            [
                score_trajectory([g.text], golds).score
                for g, (_, golds) in zip(generations, questions, strict=True)
            ]
        )
        sequences = [
            TokenSequence(
                r.prompt_ids + g.token_ids,
                (0,) * len(r.prompt_ids) + (1,) * len(g.token_ids),
                (0.0,) * len(r.prompt_ids) + g.logprobs,
            )
            for r, g in zip(requests, generations, strict=True)
        ]
        batch = collate(sequences, model, processor, int(tokenizer.pad_token_id))
        model.train()
        update_policy(
            model,
            reference,
            [(batch, group_advantages(scores, args.group))],
            optimizer,
            algo,
            suppressed_ids=suppressed,
            temperature=1.0,
            grad_clip=1.0,
        )
        times.append(time.perf_counter() - start)
        lengths.append(statistics.mean(len(g.token_ids) for g in generations))
        logger.info("ours step %d: %.2f s", step, times[-1])
    return summary(times, lengths, args)


def summary(times: list[float], lengths: list[float], args: argparse.Namespace) -> dict[str, float]:
    counted = times[1:] or times
    step_s = statistics.median(counted)
    return {
        "step_s_median": round(step_s, 3),
        "step_s_mean": round(statistics.mean(counted), 3),
        "step_s_min": round(min(counted), 3),  # the least disturbed step on a shared machine
        "completion_tokens_mean": round(statistics.mean(lengths[1:] or lengths), 1),
        "rollouts_per_min": round(60 * args.prompts * args.group / step_s, 1),
    }


def run_trl(args: argparse.Namespace) -> dict[str, float]:
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    model, tokenizer, processor = build_model(args.preset)
    rows = [
        {"prompt": [{"role": "user", "content": prompt_text(q)}], "golds": golds}
        for step in range(args.steps)
        for q, golds in batch_questions(args, step)
    ]
    lengths: list[float] = []

    def reward(completions: list[Any], golds: list[list[str]], **kwargs: Any) -> list[float]:
        texts = [c[0]["content"] if isinstance(c, list) else str(c) for c in completions]
        ids = kwargs.get("completion_ids") or [tokenizer(t)["input_ids"] for t in texts]
        lengths.append(statistics.mean(len(c) for c in ids))
        return [score_trajectory([t], g).score for t, g in zip(texts, golds, strict=True)]

    class Timer(TrainerCallback):  # type: ignore[misc]
        def __init__(self) -> None:
            self.times: list[float] = []
            self._start = 0.0

        def on_step_begin(self, *a: Any, **k: Any) -> None:
            self._start = time.perf_counter()

        def on_step_end(self, *a: Any, **k: Any) -> None:
            self.times.append(time.perf_counter() - self._start)
            logger.info("trl step %d: %.2f s", len(self.times) - 1, self.times[-1])

    timer = Timer()
    with tempfile.TemporaryDirectory() as out:
        # TRL builds its reference model from the policy's folder: give it one (local only)
        save_pretrained(model, tokenizer, processor, f"{out}/initial")
        model.config._name_or_path = f"{out}/initial"
        config = GRPOConfig(
            output_dir=out,
            per_device_train_batch_size=args.prompts * args.group,
            num_generations=args.group,
            gradient_accumulation_steps=1,
            max_completion_length=args.max_new_tokens,
            temperature=1.0,
            beta=0.001,
            epsilon=0.2,
            loss_type="dapo",  # token-mean over the batch, as ours
            learning_rate=1e-5,
            max_steps=args.steps,
            use_cpu=True,
            bf16=False,
            report_to="none",
            save_strategy="no",
            logging_steps=1,
            shuffle_dataset=False,
            seed=0,
        )
        trainer = GRPOTrainer(
            model=model,
            reward_funcs=reward,
            args=config,
            train_dataset=Dataset.from_list(rows),
            processing_class=tokenizer,
            callbacks=[timer],
        )
        trainer.train()
    return summary(timer.times, lengths, args)


def main() -> None:
    args = parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    threads = args.threads or len(os.sched_getaffinity(0))
    torch.set_num_threads(threads)
    result: dict[str, Any] = {
        "setup": {
            "prompts": args.prompts,
            "group": args.group,
            "max_new_tokens": args.max_new_tokens,
            "steps_counted": args.steps - 1,
            "preset": args.preset,
            "threads": threads,
            "load_avg_1m": round(os.getloadavg()[0], 2),
        },
        "ours": run_ours(args),
        "trl": None,
    }
    if args.skip_trl:
        result["trl_skipped"] = "--skip-trl"
    elif importlib.util.find_spec("trl") is None:
        result["trl_skipped"] = "trl is not installed (pip install -e '.[bench]')"
    else:
        import trl

        result["trl"] = run_trl(args) | {"version": trl.__version__}
        ours, theirs = result["ours"], result["trl"]
        result["ratio_ours_over_trl"] = round(ours["step_s_median"] / theirs["step_s_median"], 3)
        result["ratio_of_min_steps"] = round(ours["step_s_min"] / theirs["step_s_min"], 3)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
