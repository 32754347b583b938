"""Shared test fixtures.

``shared_samples`` is the team's folder of real third-party records
(``../shared/benchmark_samples`` beside the checkout); tests using it skip when it is absent,
as it is in a user's clone.
"""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_SAMPLES = REPO_ROOT.parent / "shared" / "benchmark_samples"


@pytest.fixture
def shared_samples() -> Path:
    if not SHARED_SAMPLES.is_dir():
        pytest.skip(f"{SHARED_SAMPLES} is absent (the team's shared fixtures)")
    return SHARED_SAMPLES
