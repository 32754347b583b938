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
    """A small world and the local index of its corpus: ``(world, index)``, built once."""
    from mmsr.search.local.index import build_index
    from mmsr.world.build import BuildConfig, build_world

    root = tmp_path_factory.mktemp("small_world")
    build_world(BuildConfig(out=root / "world", small=True, seed=7))
    build_index(root / "world" / "corpus", root / "index")
    return root / "world", root / "index"


@pytest.fixture(scope="session")
def kit(small_world: tuple[Path, Path]) -> Any:
    """The SFT teacher's view of ``small_world``."""
    from mmsr.train.world_kit import WorldKit

    return WorldKit.open(*small_world)
