"""The inspector's access to disk: which run folders it serves, their trajectory lines, the
images beside them and the metrics files. Read only: nothing here opens a file for writing.

A served folder is one of:
- a *run*: it holds ``trajectories.jsonl`` (``mmsr eval``, ``mmsr rollout``, one GRPO
  ``samples/step_N/``);
- a *training* folder: it holds ``samples/step_*/`` (``mmsr train grpo``); each step is a run;
- a folder of those, one level down (``runs/demo/eval``, ``runs/demo``).
Runs are found again on every listing, so steps that a training job adds show up.

Files are read defensively: a line that is not a JSON object (or nests deeper than
``MAX_DEPTH``) becomes a bad row, a missing metrics file an empty one, a damaged one a note.
A trajectory file is indexed once (each line's offset and row) and then read on from where it
ended, so lines appended while the inspector is open show on the next request; a file that
shrank, was replaced or was rewritten in place is indexed afresh.

Paths from requests are never joined onto the disk: runs are looked up by key among those
found, images by a plain file name inside the run's ``images/`` folder.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Literal

from mmsr.inspect.rows import Row, bad_row, summarize

logger = logging.getLogger(__name__)

TRAJECTORIES = "trajectories.jsonl"
IMAGE_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg"}
_IMAGE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}\.(png|jpe?g)")
MAX_LINE_BYTES = 64 * 1024 * 1024
"""A longer line is reported as bad, not parsed."""
MAX_DEPTH = 64
"""Lists and objects nested deeper make a line bad: real lines nest a few levels, while the
parser and the answer's serializer recurse, so 100,000 brackets would exhaust the stack."""
_EDGE = 1024
"""Bytes kept of a trajectory file's start and of what precedes where it was read to: a file
truncated and written again in place keeps its inode, but not these bytes."""


class NotFound(LookupError):
    """What a request asked for is not among the served files."""


@dataclass(frozen=True)
class Run:
    """One folder with ``trajectories.jsonl``."""

    key: str
    path: Path
    kind: Literal["eval", "rollout", "samples"]
    training: str | None = None
    """The key of the training folder this is a step of."""
    step: int | None = None


@dataclass(frozen=True)
class Training:
    """A GRPO output folder; its steps are runs."""

    key: str
    path: Path
    steps: tuple[str, ...]


def _step_number(folder: Path) -> int | None:
    tail = folder.name.removeprefix("step_")
    return int(tail) if tail.isdigit() else None


def _run_kind(folder: Path) -> Literal["eval", "rollout", "samples"]:
    if (folder / "metrics.json").is_file():
        return "eval"
    return "samples" if folder.parent.name == "samples" else "rollout"


def discover(
    roots: Sequence[Path],
) -> tuple[dict[str, Run], dict[str, Training]]:
    """The runs and training folders under ``roots`` (keys: ``N`` for the N-th root, then
    ``/``-joined names below it)."""
    runs: dict[str, Run] = {}
    trainings: dict[str, Training] = {}

    def visit(folder: Path, key: str, depth: int) -> None:
        if (folder / TRAJECTORIES).is_file():
            runs[key] = Run(key, folder, _run_kind(folder))
            return
        steps = sorted(
            (s for s in (folder / "samples").glob("step_*") if (s / TRAJECTORIES).is_file()),
            key=lambda s: (_step_number(s) or 0, s.name),
        )
        if steps:
            keys = tuple(f"{key}/samples/{s.name}" for s in steps)
            trainings[key] = Training(key, folder, keys)
            for step_key, step in zip(keys, steps, strict=True):
                runs[step_key] = Run(step_key, step, "samples", key, _step_number(step))
            return
        if depth > 0 and folder.is_dir():
            for child in sorted(p for p in folder.iterdir() if p.is_dir()):
                visit(child, f"{key}/{child.name}", depth - 1)

    for i, root in enumerate(roots):
        visit(root, str(i), 1)
    return runs, trainings


@dataclass
class _Index:
    """What is known of one trajectory file: its identity, how far it was read (bytes and
    lines), the rows of its non-blank lines and each one's (offset, length) by line number,
    and its first and last read bytes (up to ``_EDGE`` each)."""

    identity: tuple[int, int] = (0, 0)
    read_to: int = 0
    lines: int = 0
    spans: dict[int, tuple[int, int]] = field(default_factory=dict)
    rows: list[Row] = field(default_factory=list)
    head: bytes = b""
    tail: bytes = b""

    def matches(self, f: BinaryIO, identity: tuple[int, int], size: int) -> bool:
        """Whether the open file ``f`` is still the one indexed, grown or not: the same
        inode, no shorter, the same bytes at its start and just before ``read_to``."""
        if identity != self.identity or size < self.read_to:
            return False
        f.seek(0)
        if f.read(len(self.head)) != self.head:
            return False
        f.seek(self.read_to - len(self.tail))
        return f.read(len(self.tail)) == self.tail

    def read_on(self, data: bytes) -> None:
        """Keep the edges after reading on over ``data`` (whole lines, from ``read_to``)."""
        if len(self.head) < _EDGE:
            self.head = (self.head + data[:_EDGE])[:_EDGE]
        self.tail = (self.tail + data[-_EDGE:])[-_EDGE:]
        self.read_to += len(data)


def _too_deep(value: Any) -> bool:
    """Whether ``value`` nests lists and objects more than ``MAX_DEPTH`` deep (walked with a
    stack, not recursion)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_DEPTH:
            return True
        children = item.values() if isinstance(item, dict) else item
        stack.extend((c, depth + 1) for c in children if isinstance(c, dict | list))
    return False


def load_json(text: str) -> Any:
    """The value of JSON ``text``; ValueError when it is not JSON or nests too deep."""
    try:
        value = json.loads(text)
        too_deep = isinstance(value, dict | list) and _too_deep(value)
    except RecursionError:
        too_deep = True
    if too_deep:
        raise ValueError(f"nested more than {MAX_DEPTH} deep")
    return value


def _parse(data: bytes, line: int) -> tuple[dict[str, Any] | None, Row]:
    """The object and row of one line's bytes; ``None`` and a bad row when it is not a JSON
    object."""
    text = data.decode("utf-8", errors="replace")
    if len(data) > MAX_LINE_BYTES:
        return None, bad_row(line, f"line of {len(data)} bytes is too long to show", text)
    try:
        record = load_json(text)
    except json.JSONDecodeError as error:
        return None, bad_row(line, f"not JSON: {error}", text)
    except ValueError as error:  # JSON, but too deep, or a number of thousands of digits
        return None, bad_row(line, f"unreadable JSON: {error}", text)
    if not isinstance(record, dict):
        return None, bad_row(line, f"a JSON {type(record).__name__}, not an object", text)
    return record, summarize(record, line)


class TrajectoryFile:
    """The lines of one ``trajectories.jsonl``, read on as the file grows."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._index = _Index()
        self._lock = threading.Lock()

    def _refresh(self) -> tuple[_Index, Row | None]:
        """The index brought up to date, and the row of an unfinished last line (one
        without its newline yet: being written, or cut off), which is not kept."""
        with self._lock, self.path.open("rb") as f:
            stat = os.fstat(f.fileno())
            identity = (stat.st_dev, stat.st_ino)
            index = self._index
            if not index.matches(f, identity, stat.st_size):
                index = self._index = _Index(identity=identity)
            f.seek(index.read_to)
            data = f.read()
            end = data.rfind(b"\n") + 1
            at = index.read_to
            for raw in data[:end].split(b"\n")[:-1]:
                index.lines += 1
                if raw.strip():
                    _, row = _parse(raw, index.lines)
                    index.spans[index.lines] = (at, len(raw))
                    index.rows.append(row)
                at += len(raw) + 1
            index.read_on(data[:end])
            tail = data[end:]
        unfinished = None
        if tail.strip():
            record, unfinished = _parse(tail, index.lines + 1)
            if record is None:
                unfinished["bad"] = "unfinished last line (still being written, or cut off)"
        return index, unfinished

    def rows(self) -> list[Row]:
        """The rows of the file's lines in order (blank lines skipped; ``line`` counts them)."""
        index, unfinished = self._refresh()
        return index.rows + ([unfinished] if unfinished is not None else [])

    def record(self, line: int) -> tuple[dict[str, Any] | None, Row]:
        """The JSON object (``None``: a bad line) of line ``line`` (1-based) and its row."""
        index, unfinished = self._refresh()
        if unfinished is not None and line == index.lines + 1:
            with self.path.open("rb") as f:
                f.seek(index.read_to)
                return _parse(f.read(), line)[0], unfinished
        if line not in index.spans:
            raise NotFound(f"{self.path}: no line {line}")
        offset, length = index.spans[line]
        with self.path.open("rb") as f:
            f.seek(offset)
            return _parse(f.read(length), line)


def read_json(path: Path) -> tuple[Any, str | None]:
    """A JSON file's content (``None`` when it is missing or damaged) and, when damaged,
    what is wrong with it."""
    try:
        return load_json(path.read_text(encoding="utf-8")), None
    except FileNotFoundError:
        return None, None
    except (OSError, ValueError) as error:
        logger.warning("%s: %s", path, error)
        return None, str(error)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The JSON objects of a JSON-lines file; other lines are skipped."""
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return []
    out = []
    for line in lines:
        try:
            value = load_json(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            out.append(value)
    return out


class Store:
    """The served folders (see the module docstring)."""

    def __init__(self, roots: Sequence[str | Path]) -> None:
        self.roots = [Path(r).resolve() for r in roots]
        missing = [str(r) for r in self.roots if not r.is_dir()]
        if missing:
            raise ValueError(f"no such folder: {', '.join(missing)}")
        self._files: dict[Path, TrajectoryFile] = {}
        self._lock = threading.Lock()
        if not self.discover()[0]:
            raise ValueError(
                f"no {TRAJECTORIES} in {', '.join(map(str, self.roots))} or in the folders "
                "right below (nor samples/step_*/ of a training run)"
            )

    def discover(self) -> tuple[dict[str, Run], dict[str, Training]]:
        return discover(self.roots)

    def run(self, key: str) -> Run:
        run = self.discover()[0].get(key)
        if run is None:
            raise NotFound(f"no run {key!r}")
        return run

    def training(self, key: str) -> Training:
        training = self.discover()[1].get(key)
        if training is None:
            raise NotFound(f"no training folder {key!r}")
        return training

    def file(self, run: Run) -> TrajectoryFile:
        path = run.path / TRAJECTORIES
        with self._lock:
            return self._files.setdefault(path, TrajectoryFile(path))

    def rows(self, key: str) -> list[Row]:
        return self.file(self.run(key)).rows()

    def record(self, key: str, line: int) -> tuple[dict[str, Any] | None, Row]:
        return self.file(self.run(key)).record(line)

    def metrics(self, run: Run) -> dict[str, Any]:
        """What the run's metrics files say: ``metrics.json`` of an eval run (its overall
        figures and run description), or a step's line of its training's ``metrics.jsonl``."""
        if run.training is not None:
            lines = read_jsonl(run.path.parent.parent / "metrics.jsonl")
            mine = [m for m in lines if m.get("step") == run.step]
            return {"overall": mine[-1]} if mine else {}
        metrics, problem = read_json(run.path / "metrics.json")
        if problem is not None:
            return {"note": f"metrics.json is not shown: {problem}"}
        if not isinstance(metrics, dict):
            return {}
        return {k: metrics[k] for k in ("overall", "run") if isinstance(metrics.get(k), dict)}

    def training_metrics(self, training: Training) -> list[dict[str, Any]]:
        return read_jsonl(training.path / "metrics.jsonl")

    def image(self, key: str, name: str) -> tuple[Path, str]:
        """The file and media type of image ``name`` of a run: a plain file name (no folder
        part), a known image type, a regular file inside the run's ``images/``, which (links
        resolved) lies inside the run folder."""
        run = self.run(key)
        if not _IMAGE_NAME.fullmatch(name):
            raise NotFound(f"not an image name: {name!r}")
        folder = (run.path / "images").resolve()
        path = (folder / name).resolve()
        inside = folder.is_relative_to(run.path.resolve())
        if not inside or path.parent != folder or not path.is_file():
            raise NotFound(f"no image {name!r} in run {key!r}")
        return path, IMAGE_TYPES[path.suffix.lower()]

    def describe(self, run: Run) -> dict[str, Any]:
        """What the run list shows of a run."""
        size = (run.path / TRAJECTORIES).stat().st_size
        return {
            "key": run.key,
            "path": str(run.path),
            "name": _display_name(run, self.roots),
            "kind": run.kind,
            "training": run.training,
            "step": run.step,
            "bytes": size,
            "mtime": os.stat(run.path / TRAJECTORIES).st_mtime,
        }


def _display_name(run: Run, roots: Sequence[Path]) -> str:
    """The run's folder relative to the parent of its root: short, and tells runs apart."""
    root = roots[int(run.key.split("/", 1)[0])]
    return str(run.path.relative_to(root.parent))
