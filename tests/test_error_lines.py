"""A bad input is one line on stderr, never a traceback: the ``mmsr`` command in a subprocess,
as a user meets each error, fed inputs that fail before any model loads. Each line names the
file, option or value at fault where there is one."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from _data_builders import world_row, write_world
from loopback import json_reply, loopback_server

from mmsr.data import open_image
from mmsr.data.images import image_problem

DEEP = "[" * 100_000 + "]" * 100_000
DEEP_ARG = "[" * 5_000 + "]" * 5_000  # one argument may not pass 128 KiB
SCRIPTED = ("--policy", "scripted:top-title", "--method", "direct", "--no-progress")


def mmsr(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mmsr.cli", *args],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
        cwd=cwd,
    )


def error_line(out: subprocess.CompletedProcess[str], code: int = 1) -> str:
    """The last stderr line of a command that failed with ``code`` and printed no traceback
    (log lines may come before it)."""
    assert out.returncode == code, out.stderr[-3000:]
    assert "Traceback" not in out.stderr, out.stderr[-3000:]
    return out.stderr.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two world questions with their images."""
    folder = tmp_path_factory.mktemp("data")
    return write_world(folder / "q.parquet", [world_row(i) for i in range(2)])


def eval_cmd(data: Path, out: Path, *extra: str) -> list[str]:
    return ["eval", *SCRIPTED, "--data", str(data), "--out", str(out), *extra]


# --- a. search configs nested deeper than a parser recurses -------------------------------


@pytest.mark.parametrize("name", ["deep.json", "deep.toml"])
def test_a_deeply_nested_search_config_is_one_line(tmp_path: Path, data: Path, name: str) -> None:
    config = tmp_path / name
    config.write_text(DEEP if name.endswith(".json") else f"a = {DEEP}\n", encoding="utf-8")
    line = error_line(mmsr(*eval_cmd(data, tmp_path / "run", "--search", str(config))))
    assert line.startswith("mmsr: error:") and "nested too deeply" in line


def test_a_deeply_nested_override_names_it() -> None:
    line = error_line(mmsr("train", "grpo", "--print-config", "--search.spec", DEEP_ARG))
    assert line == "mmsr: error: override --search.spec: not valid YAML (nested too deeply)"


# --- b. resuming an eval over a damaged line of its results --------------------------------


@pytest.fixture(scope="module")
def finished_run(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished two-question eval run folder."""
    out = tmp_path_factory.mktemp("runs") / "run"
    done = mmsr(*eval_cmd(data, out))
    assert done.returncode == 0, done.stderr
    return out


@pytest.mark.parametrize(
    ("damage", "says"),
    [
        # a field of the wrong type: was a TypeError from tuple(7)
        ({"turns": 7}, "'turns' must be an array, got int"),
        # hits that are not objects
        ({"tool_calls": [1]}, "'tool_calls' must hold objects"),
        # a reward that is not an object (the metrics index it)
        ({"reward": "high"}, "'reward' must be an object"),
    ],
)
def test_resume_over_a_wrong_typed_line_names_the_file(
    finished_run: Path, data: Path, tmp_path: Path, damage: dict[str, object], says: str
) -> None:
    run = shutil.copytree(finished_run, tmp_path / "run")
    lines = (run / "trajectories.jsonl").read_text(encoding="utf-8").splitlines()
    lines[0] = json.dumps({**json.loads(lines[0]), **damage})
    (run / "trajectories.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    line = error_line(mmsr(*eval_cmd(data, run)))
    assert "trajectories.jsonl" in line and says in line


@pytest.mark.parametrize(
    ("bad", "says"),
    [
        # deeper than json recurses: was a RecursionError
        ('{"id": "x", "turns": ' + DEEP + "}", "line 3 is nested too deeply"),
        # JSON, but not an object: was a TypeError
        ("[1, 2]", "line 3 is a JSON list, not an object"),
    ],
)
def test_resume_over_an_unreadable_line_names_the_file_and_line(
    finished_run: Path, data: Path, tmp_path: Path, bad: str, says: str
) -> None:
    run = shutil.copytree(finished_run, tmp_path / "run")
    with (run / "trajectories.jsonl").open("a", encoding="utf-8") as handle:
        handle.write(bad + "\n")
    line = error_line(mmsr(*eval_cmd(data, run)))
    assert "trajectories.jsonl" in line and says in line


# --- c. YAML presets that do not parse -----------------------------------------------------


@pytest.mark.parametrize(
    ("text", "says"),
    [
        # a syntax error: PyYAML's own message spans four lines
        ("rollout: {temperature: [1,\n", "not valid YAML (expected the node content"),
        # nested deeper than PyYAML recurses
        (f"rollout: {DEEP}\n", "not valid YAML (nested too deeply)"),
    ],
)
def test_a_grpo_preset_that_does_not_parse_names_the_file(
    tmp_path: Path, text: str, says: str
) -> None:
    preset = tmp_path / "preset.yaml"
    preset.write_text(text, encoding="utf-8")
    line = error_line(mmsr("train", "grpo", "--preset", str(preset), "--print-config"))
    assert line.startswith(f"mmsr: error: {preset}: {says}")


def test_an_sft_preset_that_does_not_parse_names_the_file(tmp_path: Path) -> None:
    preset = tmp_path / "preset.yaml"
    preset.write_text("optim: [1,\n", encoding="utf-8")
    out = mmsr(
        "train", "sft", "--preset", str(preset), "--world", "w", "--index", "i", "--out", "o"
    )
    assert f"{preset}: not valid YAML" in error_line(out)


# --- d. numbers that are not numbers ------------------------------------------------------


@pytest.mark.parametrize(
    ("override", "says"),
    [
        # NaN passed every check (each comparison with it is false)
        ("--rollout.temperature=nan", "rollout.temperature: expected a number, got 'nan'"),
        ("--optim.lr=.nan", "optim.lr: expected a number, got nan"),
        # an infinite temperature is no sampling distribution
        ("--rollout.temperature=inf", "rollout.temperature must be at least 0 and finite"),
    ],
)
def test_grpo_refuses_non_finite_numbers(override: str, says: str) -> None:
    assert says in error_line(mmsr("train", "grpo", override, "--print-config"))


@pytest.mark.parametrize("value", ["nan", "inf"])
def test_eval_refuses_a_non_finite_temperature(tmp_path: Path, value: str) -> None:
    out = mmsr(*eval_cmd(tmp_path / "q.jsonl", tmp_path / "run", "--temperature", value))
    assert f"temperature must be at least 0 and finite, got {value}" in error_line(out)


# --- e. a cache path that is not an SQLite file --------------------------------------------


@pytest.fixture
def text_file(tmp_path: Path) -> Path:
    path = tmp_path / "notes.txt"
    path.write_text("not a database\n", encoding="utf-8")
    return path


def test_eval_with_a_cache_that_is_not_sqlite_names_it(
    tmp_path: Path, data: Path, text_file: Path
) -> None:
    cache = {"store": "sqlite", "path": str(text_file)}
    config = tmp_path / "search.json"
    config.write_text(json.dumps({"backend": "http", "url": "http://127.0.0.1:9", "cache": cache}))
    line = error_line(mmsr(*eval_cmd(data, tmp_path / "run", "--search", str(config))))
    assert f"{text_file}: not a usable SQLite cache file" in line
    assert text_file.read_text(encoding="utf-8") == "not a database\n"  # left as it was


def test_grpo_with_a_cache_that_is_not_sqlite_names_it(
    tmp_path: Path, data: Path, text_file: Path
) -> None:
    out = mmsr(
        *("train", "grpo", "--out", str(tmp_path / "run"), "--data.train", str(data)),
        *("--search.spec", "http:http://127.0.0.1:9", "--search.cache", str(text_file)),
    )
    assert f"{text_file}: not a usable SQLite cache file" in error_line(out)
    assert not (tmp_path / "run" / "initial_model").exists()  # refused before the model


# --- f. ports out of range -----------------------------------------------------------------


@pytest.mark.parametrize(
    "command",
    [
        ("search", "serve", "--index", ".", "--insecure-no-auth"),
        ("inspect", "."),
    ],
)
@pytest.mark.parametrize("port", ["99999", "-1"])  # 99999 was an OverflowError from socket
def test_a_port_out_of_range_is_a_usage_error(command: tuple[str, ...], port: str) -> None:
    # argparse's usage lines, then the one error line (exit code 2, as for any bad option)
    line = error_line(mmsr(*command, f"--port={port}"), code=2)
    assert line.endswith(f"error: argument --port: {port} is not a port (0 to 65535)")


# --- g. a chat API that stays unreachable --------------------------------------------------


def test_an_unreachable_chat_api_is_one_line_naming_it(tmp_path: Path, data: Path) -> None:
    # overloaded at every try (Retry-After: 0 keeps the retries quick): a retryable ChatError
    def busy(*_: object) -> tuple[int, dict[str, str], bytes]:
        return json_reply(503, {"error": "overloaded"}, {"Retry-After": "0"})

    with loopback_server(busy) as url:
        host = url.removeprefix("http://")
        out = mmsr(
            *("eval", "--policy", f"openai:http://user:pw@{host}/v1#tiny", "--method", "direct"),
            *("--data", str(data), "--out", str(tmp_path / "run"), "--no-progress"),
        )
    line = error_line(out)
    assert line == f"mmsr: error: chat API at http://{host}/v1/ failed after 5 attempts: HTTP 503"
    assert "pw" not in out.stderr


# --- h. one-line errors that now name their file -------------------------------------------


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("cut.json", '{"backend": "local", "ind'),  # cut short
        ("bad.toml", "backend = [\n"),  # a TOML syntax error
        ("deep.json", DEEP),  # nested too deeply
    ],
)
def test_an_unreadable_search_config_names_the_file(
    tmp_path: Path, data: Path, name: str, text: str
) -> None:
    config = tmp_path / name
    config.write_text(text, encoding="utf-8")
    line = error_line(mmsr(*eval_cmd(data, tmp_path / "run", "--search", str(config))))
    assert line.startswith(f"mmsr: error: {config}: not valid")


def test_a_damaged_saved_eval_config_names_the_file(
    finished_run: Path, data: Path, tmp_path: Path
) -> None:
    run = shutil.copytree(finished_run, tmp_path / "run")
    text = (run / "config.json").read_text(encoding="utf-8")
    (run / "config.json").write_text(text[: len(text) // 2], encoding="utf-8")
    line = error_line(mmsr(*eval_cmd(data, run)))
    assert line.startswith(f"mmsr: error: {run / 'config.json'}: not valid JSON (")


def test_a_damaged_model_config_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text('{"model_type": "qwen2_5_vl", ', encoding="utf-8")
    out = mmsr("train", "grpo", "--model.path", str(tmp_path), "--dry-run")
    assert error_line(out).startswith(f"mmsr: error: {tmp_path / 'config.json'}: not valid JSON")


def test_an_unreadable_image_names_its_question_not_a_buffer() -> None:
    with pytest.raises(ValueError, match=r"^question 'q7': not a readable image") as caught:
        open_image(b"not an image", data_id="q7")
    assert "BytesIO" not in str(caught.value)
    assert "BytesIO" not in str(image_problem(b"not an image"))


# --- i. --out naming a file ----------------------------------------------------------------


def test_out_naming_a_file_says_so(tmp_path: Path, data: Path, text_file: Path) -> None:
    line = error_line(mmsr(*eval_cmd(data, text_file)))
    assert (
        line == f"mmsr: error: --out {text_file} is a file, not a folder; give a folder for the run"
    )


# --- j. a search url that is no url --------------------------------------------------------


@pytest.mark.parametrize("url", ["notaurl", "ftp://host/x", "http://host:99999", "http://[::1"])
def test_a_search_url_that_is_no_url_is_refused_before_the_run(
    tmp_path: Path, data: Path, url: str
) -> None:
    line = error_line(mmsr(*eval_cmd(data, tmp_path / "run", "--search", f"http:{url}")))
    assert line == f"mmsr: error: http search backend: url {url!r} is not http(s)://HOST[:PORT]"
    assert not (tmp_path / "run").exists()  # refused before the run folder was made
