"""A digest of the SFT teacher's conversations: proof that a refactor changed no training data.

Draws ``--draws`` conversations of every teacher kind from a fixed seed over a built world and
its index, and hashes each conversation's roles, texts and images (pixels, not file bytes).
Prints one digest per kind and one over all; equal digests before and after a change mean the
teacher writes the same conversations, in the same order.

    python bench/teacher_digest.py --world W --index IDX
    python bench/teacher_digest.py --world W --index IDX --draws 40 --json digest.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import Any


def turn_digest(h: Any, turns: list[Any]) -> None:
    """Feed ``turns`` (roles, texts, images as RGB pixels) into the hash ``h``."""
    for turn in turns:
        h.update(str(turn.role).encode())
        h.update(b"\0" + turn.text.encode("utf-8") + b"\0")
        for image in turn.images:
            rgb = image.convert("RGB")
            h.update(f"{rgb.size}".encode())
            h.update(rgb.tobytes())


def digests(world: Path, index: Path, draws: int, seed: int) -> dict[str, str]:
    """One digest per teacher kind and ``all``, in ``KINDS`` order."""
    from mmsr.teacher.draw import KINDS, Teacher
    from mmsr.teacher.world_kit import WorldKit

    kit = WorldKit.open(world, index)
    teacher = Teacher(kit, seed=seed)
    every = hashlib.sha256()
    out: dict[str, str] = {}
    for kind in KINDS:
        h = hashlib.sha256()
        for _ in range(draws):
            turns = teacher.draw(kind)
            turn_digest(h, turns)
            turn_digest(every, turns)
        out[kind] = h.hexdigest()[:16]
    out["all"] = every.hexdigest()[:16]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world", type=Path, required=True, help="a world from 'mmsr world build'")
    parser.add_argument("--index", type=Path, required=True, help="the local index over it")
    parser.add_argument("--draws", type=int, default=20, help="conversations per kind")
    parser.add_argument("--seed", type=int, default=0, help="the teacher's seed")
    parser.add_argument("--json", type=Path, help="also write the digests here")
    args = parser.parse_args(argv)
    if args.draws < 1:
        parser.error("--draws must be at least 1")
    for folder in (args.world, args.index):
        if not folder.is_dir():
            parser.error(f"{folder} is not a folder")
    out = digests(args.world, args.index, args.draws, args.seed)
    for kind, value in out.items():
        print(f"{kind:12s} {value}")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
