"""Shared test fixtures.

``shared_samples`` is the team's folder of real third-party records
(``../shared/benchmark_samples`` beside the checkout); tests using it skip when it is absent,
as it is in a user's clone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_SAMPLES = REPO_ROOT.parent / "shared" / "benchmark_samples"


@pytest.fixture
def shared_samples() -> Path:
    if not SHARED_SAMPLES.is_dir():
        pytest.skip(f"{SHARED_SAMPLES} is absent (the team's shared fixtures)")
    return SHARED_SAMPLES


@pytest.fixture(scope="session")
def small_world(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A reduced offline world and its local search index: ``(world_dir, index_dir)``."""
    import subprocess
    import sys

    root = tmp_path_factory.mktemp("small_world")
    world, index = root / "world", root / "index"
    for args in (
        ["world", "build", "--out", str(world), "--seed", "3", "--small"],
        ["index", "build", "--corpus", str(world / "corpus"), "--out", str(index)],
    ):
        done = subprocess.run(
            [sys.executable, "-m", "mmsr.cli", *args], capture_output=True, text=True, check=False
        )
        assert done.returncode == 0, done.stderr[-2000:]
    return world, index


@pytest.fixture(scope="session")
def kit(small_world: tuple[Path, Path]) -> Any:
    """The SFT teacher's view of ``small_world``."""
    from mmsr.teacher.world_kit import WorldKit

    return WorldKit.open(*small_world)
