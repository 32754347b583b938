"""Search configs from command-line specs."""

from __future__ import annotations

from pathlib import Path

import pytest

from mmsr.search.registry import search_config_from_spec


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("local:/data/idx", {"backend": "local", "index": "/data/idx"}),  # local index
        ("http:http://h:8000", {"backend": "http", "url": "http://h:8000"}),  # the service
        ("none", {}),  # no search tools
    ],
)
def test_specs(spec: str, expected: dict[str, str]) -> None:
    assert search_config_from_spec(spec) == expected


def test_config_files(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text('{"backend": "local", "index": "x"}')
    (tmp_path / "b.toml").write_text('backend = "web"\n[cache]\nmode = "replay"\n')
    assert search_config_from_spec(str(tmp_path / "a.json"))["index"] == "x"
    assert search_config_from_spec(str(tmp_path / "b.toml"))["cache"] == {"mode": "replay"}
    (tmp_path / "c.json").write_text("[1]")
    with pytest.raises(ValueError, match="must be an object"):
        search_config_from_spec(str(tmp_path / "c.json"))


def test_unknown_spec() -> None:
    with pytest.raises(ValueError, match="expected local:INDEX_DIR"):
        search_config_from_spec("bing:xyz")
