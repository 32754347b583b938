"""``mmsr.eval.report`` on hand-made run folders: the table, averages, metric choice, errors;
and the evaluation package stays free of torch and matplotlib at import."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from mmsr.eval.report import build_table, load_run, markdown, pick_metric, write_report


def _run(
    root: Path, name: str, method: str, bench: str, em: float, sr: float, **extra: Any
) -> Path:
    folder = root / name
    folder.mkdir()
    overall = {"n": 10, "accuracy_em": em, "search_ratio": sr, **extra}
    metrics = {
        "overall": overall,
        "by_category": {"search_free": overall},
        "by_need": {},
        "run": {"policy": "model-x", "method": method, "benchmark": bench},
    }
    (folder / "metrics.json").write_text(json.dumps(metrics), encoding="utf-8")
    return folder


def test_table_layout_and_averages(tmp_path: Path) -> None:
    runs = [
        load_run(_run(tmp_path, "a", "direct", "fvqa", 0.25, 0.0)),
        load_run(_run(tmp_path, "b", "direct", "infoseek", 0.5, 0.0)),
        load_run(_run(tmp_path, "c", "rag", "fvqa", 0.6, 1.0)),
    ]
    md = markdown(build_table(runs, "accuracy_em"), "accuracy_em")
    # one row per (policy, method); a benchmark a row lacks is a dash; the average is over
    # the row's own benchmarks
    assert "| Policy | Method | fvqa Acc | fvqa SR | infoseek Acc | infoseek SR | Avg Acc |" in md
    assert "| model-x | direct | 25.0 | 0.0 | 50.0 | 0.0 | 37.5 | 0.0 |" in md
    assert "| model-x | rag | 60.0 | 100.0 | – | – | 60.0 | 100.0 |" in md


@pytest.mark.parametrize(
    ("judged", "metric", "expected"),
    [
        # every run judged: auto shows the judge
        ((True, True), "auto", "accuracy_judge"),
        # one run without verdicts: auto falls back to exact match for all
        ((True, False), "auto", "accuracy_em"),
        # an explicit choice wins
        ((True, True), "em", "accuracy_em"),
    ],
)
def test_metric_choice(
    tmp_path: Path, judged: tuple[bool, bool], metric: str, expected: str
) -> None:
    runs = [
        load_run(
            _run(
                tmp_path, f"r{i}", f"m{i}", "b", 0.1, 0.0, **({"accuracy_judge": 0.2} if j else {})
            )
        )
        for i, j in enumerate(judged)
    ]
    assert pick_metric(runs, metric) == expected


@pytest.mark.parametrize(
    ("names", "message"),
    [
        # two runs for one cell of the table
        (("a", "b"), "are both model-x / direct on fvqa"),
        # a folder that is not a finished run
        (("a", "empty"), "no metrics.json"),
    ],
)
def test_report_errors(tmp_path: Path, names: tuple[str, str], message: str) -> None:
    _run(tmp_path, "a", "direct", "fvqa", 0.1, 0.0)
    _run(tmp_path, "b", "direct", "fvqa", 0.2, 0.0)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=message):
        write_report([tmp_path / n for n in names], tmp_path / "out")


def test_judge_metric_without_verdicts_is_an_error(tmp_path: Path) -> None:
    run = load_run(_run(tmp_path, "a", "direct", "fvqa", 0.1, 0.0))
    with pytest.raises(ValueError, match="runs without accuracy_judge"):
        pick_metric([run], "judge")


def test_eval_package_imports_without_torch_or_matplotlib() -> None:
    code = (
        "import sys, mmsr.eval.methods, mmsr.eval.loop, mmsr.eval.cli, mmsr.eval.report, "
        "mmsr.eval.run, mmsr.eval.config, mmsr.eval.records, "
        "mmsr.policy.baselines; print(sorted({'torch', 'matplotlib'} & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_infoseek_score_of_a_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from mmsr.cli import main

    run = tmp_path / "run"
    run.mkdir()
    answers = {"q1": "Paris", "q2": "about 300 m", "e1": None}  # e1 never answered
    lines = [json.dumps({"id": k, "answer": v}) for k, v in answers.items()]
    (run / "trajectories.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    refs = [
        {"data_id": "q1", "answer_eval": ["Paris"], "data_split": "val_unseen_question"},
        {
            "data_id": "q2",
            "answer_eval": [{"range": [290, 310]}],
            "data_split": "val_unseen_question",
        },
        {"data_id": "e1", "answer_eval": ["Rome"], "data_split": "val_unseen_entity"},
    ]
    qtypes = [{"data_id": "q1", "question_type": "String"}]
    qtypes += [{"data_id": "q2", "question_type": "Numerical"}]
    qtypes += [{"data_id": "e1", "question_type": "String"}]
    for name, rows in (("refs.jsonl", refs), ("qtypes.jsonl", qtypes)):
        (tmp_path / name).write_text("\n".join(map(json.dumps, rows)), encoding="utf-8")
    args = ["infoseek-score", str(run), "--references", str(tmp_path / "refs.jsonl")]
    assert main([*args, "--qtypes", str(tmp_path / "qtypes.jsonl")]) == 0
    scores = json.loads((run / "infoseek.json").read_text(encoding="utf-8"))
    # unseen question: both right (string, numeric range); unseen entity: wrong
    assert scores["unseen_question_score"]["score"] == 100.0
    assert scores["unseen_question_score"]["score_num"] == 100.0
    assert scores["unseen_entity_score"]["score"] == 0.0
    assert json.loads(capsys.readouterr().out) == scores


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        # a key that names a secret is masked, at any depth
        (
            {"cache": {"api_key": "sk-1", "mode": "replay"}},
            {"cache": {"api_key": "***", "mode": "replay"}},
        ),
        # credentials inside a URL are masked, the rest kept
        ("openai:https://user:pw@host/v1#m", "openai:https://***@host/v1#m"),
        # lists are walked; plain values stay
        ([{"token": 1}, 2], [{"token": "***"}, 2]),
    ],
)
def test_run_config_hides_secrets(value: Any, expected: Any) -> None:
    from mmsr.eval.config import redact

    assert redact(value) == expected


@pytest.mark.parametrize(
    ("spec", "model", "expected"),
    [
        # base URL and model in one
        ("http://h:8000/v1#qwen", None, ("http://h:8000/v1", "qwen")),
        # the model from --model
        ("https://h/v1", "m", ("https://h/v1", "m")),
        # no model anywhere
        ("http://h/v1", None, None),
        # not a URL
        ("h/v1#m", None, None),
    ],
)
def test_split_endpoint(spec: str, model: str | None, expected: tuple[str, str] | None) -> None:
    from mmsr.chat_client import split_endpoint

    if expected is None:
        with pytest.raises(ValueError, match="expected BASE_URL#MODEL"):
            split_endpoint(spec, model, "--policy")
    else:
        assert split_endpoint(spec, model, "--policy") == expected


def test_failures_table_shows_failed_calls_and_successful_search_ratio(tmp_path: Path) -> None:
    failing = _run(
        tmp_path,
        "f",
        "rag",
        "fvqa",
        0.4,
        1.0,
        failed_questions=2,
        failed_image_calls=3,
        failed_text_calls=1,
        search_ratio_successful=0.855,
    )
    old = _run(tmp_path, "o", "direct", "fvqa", 0.2, 0.0)  # metrics.json from before
    runs = [load_run(failing), load_run(old)]
    md = markdown(build_table(runs, "accuracy_em"), "accuracy_em", runs)
    assert "| model-x | rag | fvqa | 2 | 3 | 1 | 85.5 |" in md
    assert "| model-x | direct | fvqa | – | – | – | – |" in md
    paths = write_report([failing, old], tmp_path / "report")
    assert "<h2>Failures</h2>" in paths[2].read_text(encoding="utf-8")


def test_html_rows_link_to_their_runs_in_the_inspector(tmp_path: Path) -> None:
    from mmsr.inspect import inspector_link

    runs = [
        _run(tmp_path, "a", "direct", "fvqa", 0.25, 0.0),
        _run(tmp_path, "b", "rag", "fvqa", 0.5, 1.0),
    ]
    write_report(runs, tmp_path / "report")
    page = (tmp_path / "report" / "report.html").read_text(encoding="utf-8")
    assert "<th>inspect</th>" in page
    assert f"<td><a href='{inspector_link([runs[1]])}'>fvqa</a></td></tr>" in page
    assert f"mmsr inspect {runs[0]} {runs[1]}" in page


def test_published_rows_sit_beside_ours_and_bad_files_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ours = _run(tmp_path, "a", "on-demand", "fvqa", 0.25, 0.5)
    paper = tmp_path / "paper.csv"
    paper.write_text(
        "source,policy,method,benchmark,accuracy,search_ratio\n"
        "paper Table 1,model-y,on-demand,fvqa,58.4,67.1\n"
        "paper Table 1,model-y,direct,fvqa,30.0,\n",
        encoding="utf-8",
    )
    write_report([ours], tmp_path / "out", reference=paper)
    md = (tmp_path / "out" / "report.md").read_text(encoding="utf-8")
    assert "| model-x | on-demand | 25.0 | 50.0 | 25.0 | 50.0 |" in md
    # the source is named with the policy; a missing search ratio is a dash, not a zero
    assert "| model-y (paper Table 1) | on-demand | 58.4 | 67.1 | 58.4 | 67.1 |" in md
    assert "| model-y (paper Table 1) | direct | 30.0 | – | 30.0 | – |" in md
    html = (tmp_path / "out" / "report.html").read_text(encoding="utf-8")
    assert "model-y (paper Table 1)" in html
    bad = {
        "source,policy,method,benchmark,accuracy\n": "missing column(s) search_ratio",
        "source,policy,method,benchmark,accuracy,search_ratio\np,m,d,fvqa,high,\n": ":2:",
        "source,policy,method,benchmark,accuracy,search_ratio\np,m,d,fvqa,140,\n": "between 0",
        "source,policy,method,benchmark,accuracy,search_ratio\n,m,d,fvqa,40,\n": "are needed",
        "source,policy,method,benchmark,accuracy,search_ratio\n": "no rows",
    }
    for text, message in bad.items():
        paper.write_text(text, encoding="utf-8")
        with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
            write_report([ours], tmp_path / "out2", reference=paper)
