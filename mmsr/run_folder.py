"""What every run folder shares (``mmsr eval``, ``mmsr train grpo``): its lock, and reading
back the JSON-lines files a killed run may have cut.

``hold_run_folder`` takes an exclusive ``flock`` on ``FOLDER/.lock`` for the length of a run,
so that a second run on the same folder is refused at once instead of writing every line
twice. The kernel drops the lock when its process ends, however it ends (SIGKILL included):
a crash never leaves a stale lock behind. ``read_finished`` reads a JSON-lines file whose last
line a kill may have cut. Standard library only: training and evaluation both import it, and
it imports neither. ``replace_folder`` swaps a finished folder into place, ``write_json`` a
finished JSON file.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

LOCK_FILE = ".lock"

# Folders this process holds, with how many blocks hold each: the CLI takes a folder before it
# loads a model, the training loop takes it again, and flock would refuse that second take.
_HELD: dict[Path, int] = {}


class RunFolderBusy(ValueError):
    """Another process holds the run folder."""


def _lock(folder: Path) -> int:
    """An open descriptor of ``folder``'s lock file, flocked; ``RunFolderBusy`` if taken."""
    if folder.exists() and not folder.is_dir():  # mkdir would only say "File exists"
        raise ValueError(f"--out {folder} is a file, not a folder; give a folder for the run")
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 32).decode(errors="replace").strip()
        os.close(fd)
        who = f" (process {holder})" if holder.isdigit() else ""
        raise RunFolderBusy(
            f"{folder} is in use: another run holds it{who}; wait for it to end or use another "
            "--out"
        ) from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())  # for the message a refused run gives
    return fd


@contextlib.contextmanager
def hold_run_folder(folder: Path) -> Iterator[None]:
    """Hold ``folder`` (created if absent) for the block, or raise ``RunFolderBusy`` at once if
    another process holds it. Re-entrant within one process."""
    key = folder.resolve()
    fd = None if key in _HELD else _lock(folder)
    _HELD[key] = _HELD.get(key, 0) + 1
    try:
        yield
    finally:
        _HELD[key] -= 1
        if not _HELD[key]:
            del _HELD[key]
        if fd is not None:
            os.close(fd)  # releases the lock


def read_finished(path: Path) -> list[dict[str, Any]]:
    """The whole lines of the JSON-lines file ``path`` (none if absent). A last line cut short
    by a killed run is dropped, with a warning, and the file truncated back to its last whole
    line; any other line that is not JSON is an error naming the file and the line."""
    if not path.is_file():
        return []
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    if end < len(data):
        logger.warning("%s: dropping a line cut off by an interrupted run", path)
        with path.open("r+b") as f:
            f.truncate(end)
    records = []
    for number, line in enumerate(data[:end].splitlines(), start=1):
        if line.strip():
            records.append(_record(line, f"{path}: line {number}"))
    return records


def _record(line: bytes, where: str) -> dict[str, Any]:
    """The JSON object on ``line``; a ``ValueError`` naming ``where`` for anything else (not
    JSON, not UTF-8, nested deeper than the parser recurses, not an object)."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError as err:
        raise ValueError(f"{where} is not JSON ({err.msg})") from None
    except ValueError as err:  # not UTF-8, or an integer of thousands of digits
        raise ValueError(f"{where} is not readable JSON ({err})") from None
    except RecursionError:
        raise ValueError(f"{where} is nested too deeply") from None
    if not isinstance(record, dict):
        raise ValueError(f"{where} is a JSON {type(record).__name__}, not an object")
    return record


def replace_folder(new: Path, target: Path) -> None:
    """Move the finished folder ``new`` to ``target``; an existing ``target`` is moved aside
    first and removed only after the move, so a crash never leaves ``target`` half written."""
    if target.exists():
        old = target.with_name(f".{target.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        target.rename(old)
        new.rename(target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        new.rename(target)


def write_json(path: Path, value: Any) -> None:
    """Write ``value`` as indented JSON to ``path`` through a temporary file and a rename, so a
    kill mid-write never leaves half a file under the real name."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(value, indent=1) + "\n", encoding="utf-8")
    tmp.replace(path)
