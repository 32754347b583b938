"""Seconds per GRPO step: veRL's real trainer on the CPU against ``mmsr train grpo``, same batch.

Both sides train the packaged tiny policy (``mmsr/assets/warmstart-tiny``) on the same questions
of the offline world, with the same local search index, the same limits and reward (the
``tiny-cpu`` preset's: 3 turns of up to 48 tokens), 2 prompts x 4 rollouts per step, a frozen
reference model (KL loss 0.001) and one optimiser step per step:

- ``mmsr train verl --device cpu``: veRL 0.9.1's ``RayPPOTrainer`` with Ray, FSDP2 actor and
  reference workers on gloo, mmsr's agent loop behind veRL's agent-loop manager and mmsr's CPU
  rollout server, the weight sync after each update; step time is veRL's ``timing_s/step``;
- ``mmsr train grpo --preset tiny-cpu``: mmsr's own loop in one process; step time is its
  ``perf/step_s``.

The first step of each side is a warm-up and is not counted (give ``--steps`` of 2 or more); the
figure is the median of the others, and the ratio is veRL's over mmsr's. Both sides run one
after the other on the same machine, so another job's load moves both. Needs the ``verl``
extra (run it with ``.venv-verl/bin/python``, ``make test-verl`` makes that environment). The
last line printed is JSON.

    .venv-verl/bin/python bench/verl_step.py                       # builds a small world
    .venv-verl/bin/python bench/verl_step.py --world W --index IDX --steps 4
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

PROMPTS, ROLLOUTS = 2, 4
STEP_RE = re.compile(r"step:(\d+) - .*?timing_s/step:([0-9.]+)")


def _mmsr(*args: str, log: Path | None = None) -> str:
    command = [sys.executable, "-m", "mmsr.cli", *args]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    output = done.stdout + done.stderr
    if log is not None:
        log.write_text(output)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({done.returncode}):\n{output[-4000:]}")
    return output


def _median(times: list[float]) -> float:
    counted = times[1:] or times  # the first step warms up
    return statistics.median(counted)


def verl_steps(data: Path, index: Path, out: Path, steps: int) -> list[float]:
    """veRL's ``timing_s/step`` of each step, read from its console logger."""
    log = _mmsr(
        "train", "verl", "--device", "cpu", "--steps", str(steps), "--data", str(data),
        "--search", f"local:{index}", "--out", str(out),
        f"data.train_batch_size={PROMPTS}", f"actor_rollout_ref.rollout.n={ROLLOUTS}",
        log=out.parent / "verl.log",
    )  # fmt: skip
    times = {int(m[1]): float(m[2]) for m in STEP_RE.finditer(log)}
    return [times[s] for s in sorted(times)]


def grpo_steps(data: Path, index: Path, out: Path, steps: int, model: Path) -> list[float]:
    """``mmsr train grpo``'s ``perf/step_s`` of each step."""
    _mmsr(
        "train", "grpo", "--preset", "tiny-cpu", "--out", str(out),
        "--model.path", str(model), "--data.train", str(data),
        "--search.spec", f"local:{index}", "--search.cache", str(out.parent / "cache.sqlite"),
        "--algo.prompts_per_step", str(PROMPTS), "--algo.group_size", str(ROLLOUTS),
        "--run.steps", str(steps), "--run.save_every", "0", "--run.sample_every", "0",
        "--run.tensorboard", "false",
        log=out.parent / "grpo.log",
    )  # fmt: skip
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [float(r["perf/step_s"]) for r in rows if "perf/step_s" in r]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    from mmsr.assets import WARMSTART_TINY

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world", type=Path, help="a built world (default: a small one here)")
    parser.add_argument("--index", type=Path, help="its search index")
    parser.add_argument("--steps", type=int, default=3, help="steps per side (first not counted)")
    parser.add_argument("--keep", type=Path, help="keep the runs and logs in this folder")
    args = parser.parse_args(argv)
    root = args.keep or Path(tempfile.mkdtemp(prefix="verl-step-"))
    root.mkdir(parents=True, exist_ok=True)
    world, index = args.world, args.index
    if world is None or index is None:
        world, index = root / "world", root / "index"
        _mmsr("world", "build", "--out", str(world), "--seed", "3", "--small")
        _mmsr("index", "build", "--corpus", str(world / "corpus"), "--out", str(index))
    data = root / "train.parquet"  # the same questions for both sides
    _mmsr("data", "export-verl", "--image-token", "<image>", "--limit", str(PROMPTS),
          str(world / "train.parquet"), str(data))  # fmt: skip
    start = time.perf_counter()
    verl = verl_steps(data, index, root / "verl", args.steps)
    verl_wall = time.perf_counter() - start
    start = time.perf_counter()
    grpo = grpo_steps(data, index, root / "grpo", args.steps, WARMSTART_TINY)
    grpo_wall = time.perf_counter() - start
    result = {
        "batch": f"{PROMPTS} prompts x {ROLLOUTS} rollouts",
        "steps": args.steps,
        "verl_step_s": verl,
        "grpo_step_s": grpo,
        "verl_median_s": _median(verl),
        "grpo_median_s": _median(grpo),
        "ratio_verl_over_grpo": _median(verl) / _median(grpo),
        "verl_run_s": verl_wall,
        "grpo_run_s": grpo_wall,
        "runs": str(root),
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
