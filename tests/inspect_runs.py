"""Small run folders for the inspector's tests, written by the project's own writers
(``result_line``, ``write_trajectories``) from hand-made trajectories: two eval runs of the
same questions (a "warm start" that never searches, an "rl" one that does) and a GRPO
training folder with two dumped steps. Some lines carry hostile text (markup, a
``javascript:`` url) to show that the page never runs it."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

from mmsr.eval.loop import result_line
from mmsr.rewards import score_trajectory
from mmsr.rollout.trajectory import EndReason, ToolCall, Trajectory, hit_record, write_trajectories
from mmsr.types import Answer, ImageHit, ImageSearch, Role, Sample, TextHit, TextSearch, Turn

HOSTILE = '<img src=x onerror="window.__xss=1">'
"""Markup in a question: the page must show it as text."""
HOSTILE_TITLE = "<script>window.__xss=2</script>Evil page"
HOSTILE_URL = "javascript:window.__xss=3"

ANIMALS = ["owl", "lion", "fox", "cat", "dog", "bee"]
COLORS = {"owl": "#8b5a2b", "lion": "#e0a030", "fox": "#d2691e", "cat": "#777777"}


def picture(name: str, size: int = 48) -> Image.Image:
    """A distinct little picture per name: its colour and a letter."""
    image = Image.new("RGB", (size, size), COLORS.get(name, "#3366aa"))
    ImageDraw.Draw(image).text((size // 3, size // 3), name[0].upper(), fill="white")
    return image


def sample(name: str, i: int) -> Sample:
    hard = i % 2 == 1
    return Sample(
        id=f"q-{name}",
        question=f"What is this animal called? ({name})" if name != "cat" else f"{HOSTILE} Who?",
        answer=name.capitalize(),
        category="search_required" if hard else "search_free",
        extra={"search_need": "image" if hard else "none"},
    )


def direct(s: Sample, answer: str) -> Trajectory:
    """Answers at once."""
    first = Turn(Role.USER, f"Image: <image>\nQuestion: {s.question}", (picture(s.id[2:]),))
    reply = f"<reason>I know this one.</reason><answer>{answer}</answer>"
    turns = (first, Turn(Role.ASSISTANT, reply))
    return Trajectory(s.id, s.question, turns, (Answer(answer),), (), EndReason.ANSWERED)


def searching(s: Sample, answer: str) -> Trajectory:
    """Searches the image, then the text, then answers."""
    name = s.id[2:]
    image_hits = [
        ImageHit(n.capitalize(), f"https://en.example.org/{n}", picture(n)) for n in (name, "fox")
    ]
    image_hits.append(ImageHit(HOSTILE_TITLE, HOSTILE_URL, None))
    text_hits = [
        TextHit(name.capitalize(), f"https://en.example.org/{name}", f"A {name} is an animal.")
    ]
    first = Turn(Role.USER, f"Image: <image>\nQuestion: {s.question}", (picture(name),))
    shown = "\n".join(f"{i}. <image> {h.title}" for i, h in enumerate(image_hits[:2], 1))
    turns = (
        first,
        Turn(Role.ASSISTANT, "<reason>Not sure.</reason><search><img></search>"),
        Turn(
            Role.USER,
            f"<information>\n{shown}\n3. {HOSTILE_TITLE}\n</information>",
            tuple(h.thumbnail for h in image_hits[:2]),
        ),
        Turn(
            Role.ASSISTANT, f"<reason>Look it up.</reason><text_search>{name} animal</text_search>"
        ),
        Turn(
            Role.USER,
            f"<information>\n1. {text_hits[0].url}\n{text_hits[0].summary}\n</information>",
        ),
        Turn(Role.ASSISTANT, f"<reason>Found it.</reason><answer>{answer}</answer>"),
    )
    calls = (
        ToolCall(0, "image", None, 3, None, 0.25, tuple(hit_record(h) for h in image_hits)),
        ToolCall(
            1, "text", f"{name} animal", 1, None, 0.5, tuple(hit_record(h) for h in text_hits)
        ),
    )
    actions = (ImageSearch(), TextSearch(f"{name} animal"), Answer(answer))
    return Trajectory(s.id, s.question, turns, actions, calls, EndReason.ANSWERED)


def write_eval_run(folder: Path, method: str, searches: bool, bad_line: bool = False) -> Path:
    """An eval-like run: one line per animal, right on even questions (and, searching, on
    every one), a ``metrics.json``; with ``bad_line``, a damaged line in the middle."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for i, name in enumerate(ANIMALS):
        s = sample(name, i)
        right = searches or i % 2 == 0
        answer = s.answer if right else "Rock"
        traj = searching(s, answer) if searches and i % 2 == 1 else direct(s, answer)
        lines.append(
            json.dumps(result_line(traj, s, method, image_dir=folder / "images").to_json())
        )
    if bad_line:
        lines.insert(2, '{"id": "broken", "question": "cut off')
    (folder / "trajectories.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    overall = {
        "n": len(ANIMALS),
        "accuracy_em": 1.0 if searches else 0.5,
        "search_ratio": 0.5 if searches else 0.0,
    }
    metrics = {"overall": overall, "run": {"method": method, "policy": "test"}}
    (folder / "metrics.json").write_text(json.dumps(metrics), encoding="utf-8")
    return folder


def write_served_runs(root: Path) -> Path:
    """What the inspector tests serve: ``root/warm`` (no searches, one bad line) and
    ``root/rl`` (searches), two eval runs of the same questions, and ``root/grpo``."""
    write_eval_run(root / "warm", "on-demand", searches=False, bad_line=True)
    write_eval_run(root / "rl", "on-demand", searches=True)
    write_training_run(root / "grpo")
    return root


def write_training_run(folder: Path, steps: tuple[int, ...] = (2, 4), group_size: int = 2) -> Path:
    """A GRPO-like output folder: ``samples/step_N/`` with the fields the trainer's
    ``sample_fields`` adds (step, group, golds, labels, reward, advantage) and ``metrics.jsonl``."""
    metrics = []
    for step in steps:
        trajectories, extras = [], []
        for g, name in enumerate(ANIMALS[:2]):
            s = sample(name, g)
            for k in range(group_size):
                traj = direct(s, s.answer if k == 0 else "Rock")
                reward = score_trajectory(traj.assistant_texts, s.golds)
                trajectories.append(traj)
                extras.append(_sample_fields(step, g, s, asdict(reward), 0.7 if k == 0 else -0.7))
        write_trajectories(trajectories, folder / "samples" / f"step_{step:06d}", extras)
        metrics.append({"step": step, "reward/mean": 0.55, "search/ratio": 0.0})
    (folder / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in metrics))
    return folder


def _sample_fields(
    step: int, group: int, s: Sample, reward: dict[str, Any], advantage: float
) -> dict[str, Any]:
    return {
        "step": step,
        "group": group,
        "golds": s.golds,
        "category": s.category or "",
        "need": str(s.extra["search_need"]),
        "reward": reward,
        "advantage": advantage,
    }
