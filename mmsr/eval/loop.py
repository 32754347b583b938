"""The evaluation loop: a run into a folder, resumably, one JSON line per finished question.

``evaluate`` rolls out the questions not yet in ``trajectories.jsonl`` batch by batch with one
method, scores each trajectory (reward breakdown, optional judge verdict) and appends the
batch's lines, flushed and fsynced, so a crash loses at most the batch in flight. A line cut
short by a crash is dropped (and the file truncated back to the last whole line) on the next
read; finished lines are never rewritten, except that ``retry_failed`` first drops the lines
of failed questions (``error`` set: the policy could not answer them) in one atomic rewrite,
so that they run again. A failed question is a finished line like any other: a run goes on
past it and finishes. Lines are ``records.ResultLine``s (``read_results``, one per question
however often its line was written; ``read_finished`` gives the plain JSON objects). Only one
run at a time writes a folder: ``run.run_eval`` holds its lock. The conversation's images
(the question's and the thumbnails of image hits) are saved in ``images/`` beside the lines,
once per distinct image, for ``mmsr inspect``. No progress bar here: ``run.run_eval`` passes
``on_batch``.
"""

from __future__ import annotations

import json
import logging
import os
import zlib
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any

from mmsr.eval.methods import EvalItem, Method, MethodContext
from mmsr.eval.records import ResultLine
from mmsr.rewards import AnswerJudge, RewardConfig, score_trajectory
from mmsr.rollout.trajectory import Trajectory, trajectory_record
from mmsr.run_folder import read_finished
from mmsr.types import Sample

logger = logging.getLogger(__name__)

TRAJECTORIES = "trajectories.jsonl"
IMAGES = "images"


def append_lines(path: Path, records: Iterable[dict[str, Any]]) -> None:
    """Append records as JSON lines and make them durable before returning."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
        f.flush()
        os.fsync(f.fileno())


def sample_seed(seed: int, sample_id: str) -> int:
    """A per-question seed that does not depend on batching or order."""
    return (seed * 1_000_003 + zlib.crc32(sample_id.encode())) % 2**31


def _verdict(
    judge: AnswerJudge | None,
    question: str,
    answer: str | None,
    golds: Sequence[str],
    image: Any = None,
) -> tuple[bool | None, str | None]:
    if judge is None:
        return None, None
    if answer is None:
        return False, None  # no answer is wrong; nothing to ask the judge
    try:
        return bool(judge.judge(question, answer, golds, image=image)), None
    except Exception as err:  # the judge is the outside world: unusable, never "correct"
        logger.warning("judge failed on a prediction: %s", err)
        return None, f"{type(err).__name__}: {err}"


def result_line(
    traj: Trajectory,
    sample: Sample,
    method: str,
    *,
    reward: RewardConfig = RewardConfig(),
    judge: AnswerJudge | None = None,
    image_dir: Path | None = None,
    bare_answer: bool = False,
    image: Any = None,
) -> ResultLine:
    """The line of one finished question: the trajectory, its scores and its labels; with
    ``image_dir``, the conversation's images (question and thumbnails) are saved there.
    ``bare_answer``: an untagged last reply is the answer; ``image`` goes to the judge."""
    score = score_trajectory(
        traj.assistant_texts, sample.golds, **asdict(reward), bare_answer=bare_answer
    )
    verdict, judge_error = _verdict(judge, sample.question, score.answer, sample.golds, image)
    need = sample.extra.get("search_need")
    record = {
        **trajectory_record(traj, image_dir),
        "method": method,
        "answer": score.answer,
        "golds": sample.golds,
        "category": sample.category or "",
        "need": str(need) if need is not None else None,
        "reward": asdict(score),
        "image_calls": sum(c.tool == "image" for c in traj.tool_calls),
        "text_calls": sum(c.tool == "text" for c in traj.tool_calls),
        "n_assistant_turns": len(traj.assistant_texts),
        "judge": verdict,
        "judge_error": judge_error,
    }
    # through JSON, so that a new line equals the same line read back from the file
    return ResultLine.from_json(json.loads(json.dumps(record)))


def read_results(path: Path) -> list[ResultLine]:
    """The finished lines of ``path`` as ``ResultLine``s (see ``read_finished``), one per
    question: a question written twice (two runs at once, before runs locked their folder)
    counts once, as its first line."""
    records = read_finished(path)
    lines: dict[str, ResultLine] = {}
    for record in records:
        line = ResultLine.from_json(record, str(path))
        lines.setdefault(str(line.id), line)
    if len(lines) < len(records):
        logger.warning("%s: ignoring %d repeated lines", path, len(records) - len(lines))
    return list(lines.values())


def drop_failed(path: Path) -> int:
    """Removes the lines of failed questions from ``path`` atomically; how many went."""
    lines = read_finished(path)
    kept = [line for line in lines if line.get("error") is None]
    if len(kept) == len(lines):
        return 0
    tmp = path.with_suffix(".retry.tmp")
    tmp.unlink(missing_ok=True)
    append_lines(tmp, kept)
    os.replace(tmp, path)
    return len(lines) - len(kept)


def evaluate(
    samples: Sequence[Sample],
    load_image: Callable[[Sample], Any],
    method: Method,
    ctx: MethodContext,
    out: Path,
    *,
    batch_size: int = 16,
    seed: int = 0,
    reward: RewardConfig = RewardConfig(),
    judge: AnswerJudge | None = None,
    on_batch: Callable[[list[ResultLine]], None] | None = None,
    retry_failed: bool = False,
) -> list[ResultLine]:
    """Evaluate the samples not yet finished in ``out``; returns every finished line."""
    path = out / TRAJECTORIES
    if retry_failed and (dropped := drop_failed(path)):
        logger.info("%s: retrying %d failed questions", out, dropped)
    done = read_results(path)
    finished = {str(line.id) for line in done}
    pending = [s for s in samples if s.id not in finished]
    if finished:
        logger.info("%s: %d questions already done, %d to go", out, len(finished), len(pending))
    for start in range(0, len(pending), max(1, batch_size)):
        batch = pending[start : start + max(1, batch_size)]
        items = [EvalItem.from_sample(s, load_image(s)) for s in batch]
        seeds: list[int | None] = [sample_seed(seed, s.id) for s in batch]
        trajectories = method.run(items, ctx, seeds)
        with ThreadPoolExecutor(max_workers=max(1, ctx.tool_workers)) as pool:  # judge calls
            lines = list(
                pool.map(
                    lambda tsi: result_line(
                        tsi[0],
                        tsi[1],
                        method.name,
                        reward=reward,
                        judge=judge,
                        image_dir=out / IMAGES,
                        bare_answer=ctx.untagged and method.may_answer_untagged,
                        image=tsi[2].image,
                    ),
                    zip(trajectories, batch, items, strict=True),
                )
            )
        append_lines(path, (line.to_json() for line in lines))
        done.extend(lines)
        if on_batch is not None:
            on_batch(lines)
    return done
