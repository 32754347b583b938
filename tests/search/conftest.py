"""Fixtures of the search tests: one tiny local index built once per session."""

from __future__ import annotations

from pathlib import Path

import pytest
from search_helpers import write_corpus

from mmsr.search.local.index import build_index


@pytest.fixture(scope="session")
def local_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="session")
def local_index(local_corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("indexes") / "index"
    build_index(local_corpus, out)
    return out
