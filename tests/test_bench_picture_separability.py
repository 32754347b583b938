"""``bench/picture_separability.py``: linear and nearest-neighbour read-outs of head vs tail."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import torch

BENCH = Path(__file__).resolve().parents[1] / "bench" / "picture_separability.py"


def _bench() -> Any:
    spec = importlib.util.spec_from_file_location("picture_separability", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["picture_separability"] = module
    spec.loader.exec_module(module)
    return module


def test_nearest_neighbours_read_an_arbitrary_split_that_a_line_cannot() -> None:
    bench = _bench()
    gen = torch.Generator().manual_seed(0)
    centres = torch.randn(40, 16, generator=gen)  # 40 "entities", every other one "tail"
    kinds = ["tail" if i % 2 else "head" for i in range(40)]

    def draw(n: int) -> tuple[torch.Tensor, list[str]]:
        ids = torch.randint(0, 40, (n,), generator=gen)
        x = centres[ids] + 0.1 * torch.randn(n, 16, generator=gen)
        return x, [kinds[int(i)] for i in ids]

    train, train_y = draw(400)
    test, test_y = draw(200)
    share = bench.knn_tail_share(train, test, train_y, 1)
    right = sum((s > 0.5) == (y == "tail") for s, y in zip(share, test_y, strict=True))
    assert right / len(test_y) > 0.95


def test_over_a_small_world(small_world: tuple[Path, Path]) -> None:
    out = _bench().separability(small_world[0], train_limit=60, ks=(1,))
    assert out["n_train"] > 0 and out["n_test"] > 0
    assert 0.0 <= out["knn"]["1"]["accuracy"] <= 1.0
