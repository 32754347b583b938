"""Phase 3 of ``bench/soak.py``: kill -9 / resume cycles of ``mmsr train grpo`` (issue 18).

A small world (``mmsr world build --small``) and its local index are built in a temporary
folder. A reference run trains ``steps`` steps of the committed warm start without a stop; the
same config and seed then train in a second folder, killed with SIGKILL ``kills`` times at
seeded random moments (model loading, rollouts, updates, checkpoint writes) and resumed each
time with ``--resume``, then run to the end. Faults beside the kills (``soak_faults.py``): a
first launch meets a second writer on its folder and is then killed too; after the kills, one
per stop, the last metrics line is cut mid-line and the newest checkpoint's
``model.safetensors``, then its ``trainer.pt``, is cut to half (a fault no stop allowed is
injected into the finished run, which is resumed once more).

What is compared: the final checkpoint's weights, tensor by tensor with ``torch.equal``, and
every step's line of ``metrics.jsonl`` except timings (``perf/*``, ``search/latency_s``). A
resume restores weights, optimiser, scheduler and RNG states from the newest checkpoint, and
the data order and rollout seeds are functions of the step, so with ``save_every`` 1 the claim
is bit-identity whatever the kill moment: only the step under way is redone. The warm start
(not a random model) is used because a random model never answers: every reward is 0, the
gradient is 0 and the weights never move, which would make the comparison empty. A damaged
checkpoint is skipped for the one before it, whose step the resume redoes: the claim holds.
Each step's sample dump must hold its rollouts once, line for line those of the reference.

Not a library module: a bench helper, imported by ``soak.py`` and its tests.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from soak_faults import (
    DAMAGED_FILES,
    DUMP_CHECKS,
    cut_metrics_line,
    damage_checkpoint,
    dump_ledger,
    second_writer,
)

REPO = Path(__file__).resolve().parents[1]
WARMSTART = REPO / "mmsr" / "assets" / "warmstart-tiny"
# timings differ between two runs of the same config; every other metric must not
TIMING_KEYS = ("perf/", "search/latency_s")
PROMPTS, GROUP = 2, 4  # a step's rollouts: PROMPTS * GROUP lines in its sample dump
OVERRIDES = (
    f"--model.path={WARMSTART}",
    f"--algo.prompts_per_step={PROMPTS}",
    f"--algo.group_size={GROUP}",
    "--limits.max_new_tokens=32",
    "--run.save_every=1",
    "--run.sample_every=1",  # every step's dump, to check it after kills (soak_faults)
    "--run.progress=false",
    "--run.tensorboard=false",
    "--run.threads=1",  # one thread: the same reduction order in every process
    "--data.train=world/train.parquet",
    "--search.spec=local:index",
)


# --- pure helpers ---


def step_ledger(steps: Sequence[int], planned: int) -> dict[str, int]:
    """Lost, duplicated, unplanned and out-of-order steps among metrics lines.

    >>> step_ledger([1, 2, 2, 4], 4)
    {'lost': 1, 'duplicated': 1, 'unplanned': 0, 'out_of_order': 0}
    """
    counts = Counter(steps)
    return {
        "lost": sum(s not in counts for s in range(1, planned + 1)),
        "duplicated": sum(n - 1 for n in counts.values()),
        "unplanned": sum(not 1 <= s <= planned for s in counts),
        "out_of_order": int(list(steps) != sorted(steps)),
    }


def differing_metrics(
    expected: Sequence[Mapping[str, float]], got: Sequence[Mapping[str, float]]
) -> list[str]:
    """``step:key`` of every non-timing metric that differs (a missing line: ``step:*``)."""
    by_step = {int(row["step"]): row for row in got}
    out = []
    for row in expected:
        other = by_step.get(int(row["step"]))
        if other is None:
            out.append(f"{int(row['step'])}:*")
            continue
        keys = {k for k in (*row, *other) if not k.startswith(TIMING_KEYS)}
        out += [f"{int(row['step'])}:{k}" for k in sorted(keys) if row.get(k) != other.get(k)]
    return out


def kill_delays(rng: random.Random, kills: int, startup_s: float, train_s: float) -> list[float]:
    """Seconds after each launch to send SIGKILL, from the reference run's timings.

    From half the start-up (still loading) to the start-up plus twice a ``kills + 1``-th of
    the training: on average the kills spread over the run and the last launch has some left.
    """
    lo, hi = 0.5 * startup_s, startup_s + 2 * train_s / (kills + 1)
    return [rng.uniform(lo, hi) for _ in range(kills)]


def differing_tensors(expected: Mapping[str, Any], got: Mapping[str, Any]) -> list[str]:
    """Names of the tensors that are missing on either side or not bit-identical."""
    import torch

    names = sorted(set(expected) | set(got))
    return [
        n
        for n in names
        if n not in expected or n not in got or not torch.equal(expected[n], got[n])
    ]


# --- the runs ---


def read_metrics(out: Path) -> tuple[list[dict[str, float]], int]:
    """The lines of ``out/metrics.jsonl`` that are JSON objects, and how many others there
    are (a cut line a resume left in place: the soak reports it rather than stopping)."""
    path, rows, bad = out / "metrics.jsonl", [], 0
    for line in path.read_text(encoding="utf-8").splitlines() if path.is_file() else []:
        try:
            row = json.loads(line)
        except ValueError:
            row = None
        if isinstance(row, dict) and "step" in row:
            rows.append(row)
        else:
            bad += bool(line.strip())
    return rows, bad


def _grpo_cmd(out: str, steps: int, seed: int, resume: bool) -> list[str]:
    cmd = [sys.executable, "-m", "mmsr.cli", "train", "grpo", "--preset", "tiny-cpu", "--out", out]
    cmd += ["--resume"] if resume else []
    run = [f"--search.cache={out}.sqlite", f"--run.steps={steps}", f"--run.seed={seed}"]
    return [*cmd, *OVERRIDES, *run]  # overrides come last


class Launcher:
    """Starts commands in ``work`` with the checkout on PYTHONPATH, logs to one file, bounded."""

    def __init__(self, work: Path, deadline: float) -> None:
        self.work, self.deadline = work, deadline
        self.env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(
                p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p
            ),
        }
        self.log_path = work / "soak_grpo.log"
        self.log = self.log_path.open("ab")

    def start(self, cmd: list[str]) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            cmd, cwd=self.work, env=self.env, stdout=self.log, stderr=subprocess.STDOUT
        )

    def wait(
        self, proc: subprocess.Popen[bytes], watch: Path | None = None
    ) -> tuple[int, float | None]:
        """Exit status, and seconds until ``watch`` was a non-empty file (None: never seen).

        Past the deadline the process is killed and ``TimeoutError`` raised.
        """
        started, seen = time.monotonic(), None
        while proc.poll() is None:
            if time.monotonic() > self.deadline:
                proc.kill()
                proc.wait()
                raise TimeoutError("phase 3 ran past --grpo-seconds")
            if seen is None and watch is not None and watch.is_file() and watch.stat().st_size:
                seen = time.monotonic() - started
            time.sleep(0.1)
        return proc.returncode, seen

    def tail(self) -> str:
        return self.since(0)[-400:]

    def size(self) -> int:
        """Bytes in the log so far (the commands write to it directly)."""
        self.log.flush()
        return self.log_path.stat().st_size

    def since(self, offset: int) -> str:
        """The log from byte ``offset`` on."""
        self.log.flush()
        return self.log_path.read_bytes()[offset:].decode(errors="replace")


def build_world(launch: Launcher) -> None:
    for args in (
        ["world", "build", "--out", "world", "--seed", "3", "--small"],
        ["index", "build", "--corpus", "world/corpus", "--out", "index"],
    ):
        rc, _ = launch.wait(launch.start([sys.executable, "-m", "mmsr.cli", *args]))
        if rc:
            raise RuntimeError(f"mmsr {' '.join(args[:2])} failed: {launch.tail()}")


def _after_kill(out: Path) -> dict[str, int]:
    """What a kill left: the newest checkpoint, a half-written one, lines and sample dumps the
    resume must drop or replace.

    ``torn``: lines of ``metrics.jsonl`` that are not JSON (a write cut short by the kill);
    ``orphan_dumps``: sample dumps past the newest checkpoint, or half written.
    """
    from mmsr.train.checkpoint import latest_checkpoint

    root = out / "checkpoints"
    latest = latest_checkpoint(root)
    at = int(latest.name.split("_")[1]) if latest else 0
    tmp = root.is_dir() and any(p.name.startswith(".tmp-") for p in root.iterdir())
    path, steps, torn = out / "metrics.jsonl", [], 0
    for line in path.read_text(encoding="utf-8").splitlines() if path.is_file() else []:
        try:
            steps.append(int(json.loads(line)["step"]))
        except (ValueError, KeyError, TypeError):
            torn += 1
    return {
        "at": at,
        "mid_checkpoint": int(tmp),
        "orphans": sum(s > at for s in steps),
        "torn": torn,
        "orphan_dumps": dumps_from(out, at + 1),
    }


def dumps_from(out: Path, step: int) -> int:
    """Sample dumps of ``step`` and later in ``out``, and half-written ones: those a resume
    from an earlier checkpoint must replace (redone steps) or drop."""
    folder = out / "samples"
    names = [p.name for p in folder.iterdir()] if folder.is_dir() else []
    return sum(n.startswith(".tmp-") or int(n.split("_")[1]) >= step for n in names)


def check_checkpoints(root: Path) -> dict[str, int]:
    """Every complete checkpoint loads (weights and trainer state, the right step); no temp left."""
    from mmsr.models.io import load_model
    from mmsr.train.checkpoint import list_checkpoints, load_trainer_state

    found, bad = list_checkpoints(root), 0
    for checkpoint in found:
        try:
            load_model(checkpoint / "model")
            bad += load_trainer_state(checkpoint)["step"] != int(checkpoint.name.split("_")[1])
        except Exception:  # any failure to load is what is counted here
            bad += 1
    stale = sum(p.name.startswith(".tmp-") for p in root.iterdir()) if root.is_dir() else 0
    return {"checkpoints": len(found), "unloadable": bad, "stale_tmp": stale}


STOPPED_FAULTS = ("cut_metrics", *(f"damage:{f}" for f in DAMAGED_FILES))
"""Injected into the stopped run, one per stop: after a kill, or after the end when no kill
left a state that allows it (a metrics line to cut, two checkpoints to fall back between)."""


class StoppedFaults:
    """The faults still to inject into the stopped run ``killed``, and those injected with
    where the log stood (the resumes after it must say what they dropped or skipped)."""

    def __init__(self, launch: Launcher) -> None:
        self.launch = launch
        self.pending = list(STOPPED_FAULTS)
        self.done: list[dict[str, Any]] = []

    def inject_next(self) -> bool:
        """Inject the first pending fault the run's state allows; False when none does."""
        out = self.launch.work / "killed"
        for fault in self.pending:
            if fault == "cut_metrics":
                record: Mapping[str, Any] | None = cut_metrics_line(out)
            else:
                record = damage_checkpoint(out / "checkpoints", fault.removeprefix("damage:"))
            if record is not None:
                self.pending.remove(fault)
                redone = dumps_from(out, record["step"])  # the resume redoes from that step
                self.done.append({"fault": fault, "log_from": self.launch.size(), **record,
                                  "dumps_to_replace": redone})  # fmt: skip
                return True
        return False

    def report(self) -> dict[str, Any]:
        """Faults injected, and how many resumes after them said so in their log: the cut
        line dropped, the damaged checkpoint skipped for the one before it."""
        cuts = [f for f in self.done if f["fault"] == "cut_metrics"]
        damages = [f for f in self.done if f["fault"] != "cut_metrics"]
        root = Path("killed") / "checkpoints"  # as the run names it, from its --out

        def said(fault: Mapping[str, Any], *texts: str) -> bool:
            log = self.launch.since(fault["log_from"])
            return all(text in log for text in texts)

        return {
            "grpo_fault_dumps_to_replace": sum(f["dumps_to_replace"] for f in self.done),
            "grpo_metrics_cuts": len(cuts),
            "grpo_metrics_cut_steps": [f["step"] for f in cuts],
            "grpo_metrics_cut_checkpoints_removed": sum(f["checkpoints_removed"] for f in cuts),
            "grpo_metrics_cut_warned": sum(
                said(f, f"{Path('killed') / 'metrics.jsonl'}: dropping a line cut off")
                for f in cuts
            ),
            "grpo_damaged_checkpoints": [f"{f['damaged']}/{f['file']}" for f in damages],
            "grpo_damage_skipped": sum(
                said(
                    f,
                    f"skipping damaged checkpoint {root / f['damaged']}: ",
                    f"resumed from {root / f['previous']} (",
                )
                for f in damages
            ),
            "grpo_faults_not_injected": list(self.pending),
        }


def _kill(launch: Launcher, proc: subprocess.Popen[bytes], faults: StoppedFaults) -> dict[str, int]:
    """SIGKILL ``proc``, note what it left, then inject the next stopped fault."""
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    left = _after_kill(launch.work / "killed")
    faults.inject_next()
    return left


def _meet_second_writer(
    launch: Launcher, cmd: list[str], faults: StoppedFaults, startup_s: float
) -> tuple[dict[str, Any], list[dict[str, int]]]:
    """Launch ``cmd``, run it a second time while the first holds the folder (paused; or, if it
    takes no lock, after twice the reference's ``startup_s``: it takes the lock before it loads
    the model), then SIGKILL the first: what the second writer got, and what the kill left."""
    proc = launch.start(cmd)
    writer = second_writer(cmd, "killed", proc, cwd=launch.work, env=launch.env,
                           hold_s=2 * startup_s)  # fmt: skip
    if proc.poll() is not None:  # it finished meanwhile: nothing left to interrupt
        return writer, []
    return writer, [_kill(launch, proc, faults)]


def _kill_cycles(
    launch: Launcher, cmd: list[str], delays: Sequence[float], faults: StoppedFaults
) -> list[dict[str, int]]:
    """Launch ``cmd`` once per delay and SIGKILL it that many seconds after its start (if still
    running), then inject the next stopped fault."""
    kills = []
    for delay in delays:
        proc = launch.start(cmd)
        try:
            proc.wait(timeout=max(min(delay, launch.deadline - time.monotonic()), 0.1))
        except subprocess.TimeoutExpired:
            kills.append(_kill(launch, proc, faults))
        else:  # it finished before the kill: nothing left to interrupt
            break
    return kills


def _resume_to_end(launch: Launcher, cmd: list[str], faults: StoppedFaults) -> list[int]:
    """Exit statuses of the resume that runs to the end, then of one more per fault still
    pending, injected into the finished run."""
    exits = [launch.wait(launch.start(cmd))[0]]
    while faults.pending and faults.inject_next():
        exits.append(launch.wait(launch.start(cmd))[0])
    return exits


def _final_weights(out: Path) -> dict[str, Any]:
    """The newest checkpoint's weights; none when there is none, or it does not load (then
    every tensor counts as differing, and ``check_checkpoints`` counts it unloadable)."""
    from mmsr.models.io import load_model
    from mmsr.train.checkpoint import latest_checkpoint

    latest = latest_checkpoint(out / "checkpoints")
    try:
        return {} if latest is None else dict(load_model(latest / "model")[0].state_dict())
    except Exception:  # any failure to load is what is counted
        return {}


def _reference(
    launch: Launcher, steps: int, seed: int
) -> tuple[list[dict[str, float]], float, float]:
    """The uninterrupted run: its metrics lines, its seconds, and those of its start-up."""
    started = time.monotonic()
    rc, first_line = launch.wait(
        launch.start(_grpo_cmd("reference", steps, seed, resume=False)),
        watch=launch.work / "reference" / "metrics.jsonl",
    )
    reference_s = time.monotonic() - started
    expected, bad = read_metrics(launch.work / "reference")
    if rc or bad or not expected or first_line is None:
        raise RuntimeError(f"the reference run failed ({rc}): {launch.tail()}")
    return expected, reference_s, max(first_line - expected[0]["perf/step_s"], 0.1)


def _soak(launch: Launcher, steps: int, kills: int, seed: int) -> dict[str, Any]:
    from transformers.utils import logging as hf_logging

    from mmsr.models.io import load_model

    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]  # we load models below

    build_world(launch)
    expected, reference_s, startup = _reference(launch, steps, seed)
    delays = kill_delays(random.Random(seed), kills, startup, reference_s - startup)
    cmd = _grpo_cmd("killed", steps, seed, resume=True)
    faults = StoppedFaults(launch)
    writer, cycles = _meet_second_writer(launch, cmd, faults, startup)
    cycles += _kill_cycles(launch, cmd, delays, faults)
    exits = _resume_to_end(launch, cmd, faults)
    work = launch.work
    rows, bad_lines = read_metrics(work / "killed")
    ledger = step_ledger([int(r["step"]) for r in rows], steps)
    checkpoints = check_checkpoints(work / "killed" / "checkpoints")
    dumps = dump_ledger(work / "reference", work / "killed", steps, PROMPTS * GROUP)
    want, got = _final_weights(work / "reference"), _final_weights(work / "killed")
    trained = differing_tensors(dict(load_model(WARMSTART)[0].state_dict()), want)
    return {
        "grpo_steps": steps,
        "grpo_kills": kills,
        "grpo_resumes": len(cycles),
        "grpo_kill_steps": [c["at"] for c in cycles],
        "grpo_kills_mid_checkpoint": sum(c["mid_checkpoint"] for c in cycles),
        "grpo_lines_redone": sum(c["orphans"] for c in cycles),
        "grpo_torn_lines": sum(c["torn"] for c in cycles),
        "grpo_dumps_to_replace": sum(c["orphan_dumps"] for c in cycles),
        "grpo_exit": next((rc for rc in exits if rc), 0),
        "grpo_resumes_after_end": len(exits) - 1,
        "grpo_final_step": int(rows[-1]["step"]) if rows else 0,
        **{f"grpo_{k}_steps": v for k, v in ledger.items()},
        "grpo_bad_metrics_lines": bad_lines,
        **{f"grpo_{k}": v for k, v in checkpoints.items()},
        **{f"grpo_dump_{k}": v for k, v in dumps.items()},
        **faults.report(),
        **{f"grpo_second_writer_{k}": v for k, v in writer.items()},
        "grpo_tensors": len(want),
        "grpo_tensors_trained": len(trained),
        "grpo_tensors_differing": len(differing_tensors(want, got)),
        "grpo_metrics_differing": len(differing_metrics(expected, rows)),
        "grpo_reference_s": round(reference_s, 1),
    }


def grpo_ok(result: Mapping[str, Any]) -> bool:
    """Every check of phase 3 holds: finished, nothing lost, loadable, bit-identical; each
    fault injected and answered (a cut line dropped with a warning, a damaged checkpoint
    skipped for the one before it, a second writer refused), each step's dump whole."""
    return (
        result.get("grpo_exit") == 0
        and result["grpo_final_step"] == result["grpo_steps"]
        and result["grpo_resumes"] > 0
        and not any(result[f"grpo_{k}_steps"] for k in ("lost", "duplicated", "unplanned"))
        and not (result["grpo_out_of_order_steps"] or result["grpo_bad_metrics_lines"])
        and result["grpo_checkpoints"] > 0
        and not (result["grpo_unloadable"] or result["grpo_stale_tmp"])
        and result["grpo_tensors_trained"] > 0  # else the comparison below says nothing
        and not (result["grpo_tensors_differing"] or result["grpo_metrics_differing"])
        and not any(result[f"grpo_dump_{k}"] for k in DUMP_CHECKS)
        and not result["grpo_faults_not_injected"]
        and result["grpo_metrics_cut_warned"] == result["grpo_metrics_cuts"] > 0
        and result["grpo_damage_skipped"] == len(result["grpo_damaged_checkpoints"]) > 0
        and result["grpo_second_writer_tried"] == result["grpo_second_writer_refused"] == 1
    )


def grpo_with_kills(
    work: Path, steps: int, kills: int, seed: int, seconds: float
) -> dict[str, Any]:
    """Phase 3 in ``work``, bounded by ``seconds``; the ``grpo_*`` figures of the report."""
    started = time.monotonic()
    launch = Launcher(work, started + seconds)
    try:
        result = _soak(launch, steps, kills, seed)
        result["grpo_ok"] = grpo_ok(result)
        if result["grpo_exit"]:
            result["grpo_log_tail"] = launch.tail()
    except (TimeoutError, RuntimeError) as err:
        result = {"grpo_ok": False, "grpo_error": str(err)[-600:]}
    finally:
        launch.log.close()
    return {**result, "grpo_seconds": round(time.monotonic() - started, 1)}
