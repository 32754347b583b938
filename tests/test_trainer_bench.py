"""``bench/trainer_bench.py`` runs (our side, a micro model) and ends with one JSON line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench" / "trainer_bench.py"


def test_trainer_bench_our_side_reports_json() -> None:
    args = ["--skip-trl", "--preset", "micro", "--steps", "2", "--prompts", "1", "--group", "2"]
    done = subprocess.run(
        [sys.executable, str(BENCH), *args, "--max-new-tokens", "4", "--threads", "1"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["trl"] is None and result["trl_skipped"] == "--skip-trl"
    assert result["ours"]["step_s_median"] > 0
    assert 1 <= result["ours"]["completion_tokens_mean"] <= 4
