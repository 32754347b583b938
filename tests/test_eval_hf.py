"""``mmsr eval --policy hf:DIR``: a saved micro Qwen2.5-VL runs every method end to end on a
small world (untrained, so its answers are noise; what is tested is that the token-level path
runs through each method, keeps its token ids and writes metrics), then ``mmsr report``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import tiny_models

from mmsr.cli import main
from mmsr.eval.loop import TRAJECTORIES
from mmsr.models import build_tiny_model
from mmsr.models.io import save_pretrained


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("micro")
    tok = tiny_models.tokenizer()
    model = build_tiny_model("micro", tok, seed=0).eval()
    return save_pretrained(model, tok, tiny_models.image_processor("micro"), folder)


def test_hf_policy_runs_every_method(
    model_dir: Path, small_world: tuple[Path, Path], tmp_path: Path
) -> None:
    data = small_world[0] / "test.parquet"
    runs = []
    for method in ("direct", "rag", "on-demand", "oracle"):
        out = tmp_path / method
        runs.append(str(out))
        args = ["eval", "--policy", f"hf:{model_dir}", "--method", method, "--data", str(data)]
        args += ["--search", f"local:{small_world[1]}"]
        args += ["--out", str(out), "--limit", "3", "--max-new-tokens", "8", "--no-progress"]
        assert main(args) == 0
        lines = [json.loads(x) for x in (out / TRAJECTORIES).read_text().splitlines()]
        assert len(lines) == 3
        # token-level: the model's own tokens are kept, at most 8 per assistant turn
        assert all(0 < line["n_trained_tokens"] <= 8 * line["n_assistant_turns"] for line in lines)
        metrics = json.loads((out / "metrics.json").read_text())
        assert metrics["run"]["policy"] == f"hf:{model_dir}" and metrics["overall"]["n"] == 3
    assert main(["report", *runs, "--out", str(tmp_path / "report")]) == 0
    assert "| hf:" in (tmp_path / "report" / "report.md").read_text()
