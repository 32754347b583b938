"""``mmsr report``: eval run folders → a Table-1-style Markdown/CSV table and an HTML page.

Rows are (policy, method), columns are each benchmark's accuracy and search ratio (the share
of questions with any search), then their averages over the row's benchmarks — the layout of
the paper's Table 1. A second table shows each run's failures: failed questions, failed image
and text calls, and the search ratio counting successful calls only. All numbers are
percentages with one decimal, read from each run's ``metrics.json``; one accuracy measure
(``--metric``) is used for every cell so that runs compare. The HTML page is one
self-contained file: plots (accuracy vs search ratio; accuracy per category and per search
need) are PNGs embedded as base64. Matplotlib is imported only
here, with the Agg backend.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmsr.inspect import inspect_command, inspector_link

METRIC_KEYS = {"em": "accuracy_em", "subem": "accuracy_subem", "f1": "accuracy_f1"}
METRIC_KEYS["judge"] = "accuracy_judge"


@dataclass(frozen=True)
class RunSummary:
    """What the report needs from one run folder."""

    path: Path
    policy: str
    method: str
    benchmark: str
    metrics: dict[str, Any]

    @property
    def row(self) -> tuple[str, str]:
        return (self.policy, self.method)


def load_run(path: Path) -> RunSummary:
    """The summary of one ``mmsr eval`` folder (``ValueError`` without ``metrics.json``)."""
    file = path / "metrics.json"
    if not file.is_file():
        raise ValueError(f"{path}: no metrics.json (not a finished mmsr eval run)")
    metrics = json.loads(file.read_text(encoding="utf-8"))
    run = metrics.get("run", {})
    return RunSummary(
        path=path,
        policy=str(run.get("policy", path.name)),
        method=str(run.get("method", "?")),
        benchmark=str(run.get("benchmark") or Path(str(run.get("data", path.name))).stem),
        metrics=metrics,
    )


def pick_metric(runs: Sequence[RunSummary], metric: str) -> str:
    """The key of the accuracy shown: ``auto`` is the judge when every run has it, else EM."""
    if metric == "auto":
        judged = all("accuracy_judge" in r.metrics["overall"] for r in runs)
        metric = "judge" if judged else "em"
    key = METRIC_KEYS[metric]
    missing = [str(r.path) for r in runs if key not in r.metrics["overall"]]
    if missing:
        raise ValueError(f"runs without {key}: {', '.join(missing)}")
    return key


@dataclass(frozen=True)
class Table:
    """Table 1: ``cells[row][benchmark] = (accuracy %, search ratio %)``; a published row
    may lack its search ratio (None)."""

    rows: list[tuple[str, str]]
    benchmarks: list[str]
    cells: dict[tuple[str, str], dict[str, tuple[float, float | None]]]

    def average(self, row: tuple[str, str]) -> tuple[float, float | None]:
        values = list(self.cells[row].values())
        ratios = [v[1] for v in values if v[1] is not None]
        return (
            sum(v[0] for v in values) / len(values),
            sum(ratios) / len(ratios) if len(ratios) == len(values) else None,
        )


def build_table(runs: Sequence[RunSummary], key: str) -> Table:
    rows: list[tuple[str, str]] = []
    benchmarks: list[str] = []
    cells: dict[tuple[str, str], dict[str, tuple[float, float | None]]] = {}
    where: dict[tuple[tuple[str, str], str], Path] = {}
    for run in runs:
        if (run.row, run.benchmark) in where:
            raise ValueError(
                f"{where[run.row, run.benchmark]} and {run.path} are both "
                f"{run.policy} / {run.method} on {run.benchmark}"
            )
        where[run.row, run.benchmark] = run.path
        rows += [run.row] if run.row not in rows else []
        benchmarks += [run.benchmark] if run.benchmark not in benchmarks else []
        overall = run.metrics["overall"]
        sr = overall["search_ratio"]
        cells.setdefault(run.row, {})[run.benchmark] = (
            100 * overall[key],
            None if sr is None else 100 * sr,
        )
    return Table(rows, benchmarks, cells)


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f}"


def table_rows(table: Table) -> list[list[str]]:
    """Header plus one line per row: policy, method, (acc, SR) per benchmark, average."""
    header = ["Policy", "Method"]
    for bench in table.benchmarks:
        header += [f"{bench} Acc", f"{bench} SR"]
    lines = [[*header, "Avg Acc", "Avg SR"]]
    for row in table.rows:
        line = list(row)
        for bench in table.benchmarks:
            acc, sr = table.cells[row].get(bench, (None, None))
            line += [_fmt(acc), _fmt(sr)]
        avg_acc, avg_sr = table.average(row)
        lines.append([*line, _fmt(avg_acc), _fmt(avg_sr)])
    return lines


def failure_rows(runs: Sequence[RunSummary]) -> list[list[str]]:
    """Header and one row per run: what failed, and the search ratio of successful calls."""
    rows = [["policy", "method", "benchmark", "failed q", "failed image", "failed text", "SR ok"]]
    for r in runs:
        o = r.metrics["overall"]
        ok = o.get("search_ratio_successful")
        rows.append(
            [r.policy, r.method, r.benchmark]
            + [str(o.get(k, "–")) for k in ("failed_questions", "failed_image_calls")]
            + [str(o.get("failed_text_calls", "–")), _fmt(None if ok is None else 100 * ok)]
        )
    return rows


def markdown(table: Table, key: str, runs: Sequence[RunSummary] = ()) -> str:
    lines = table_rows(table)
    out = [
        "# Evaluation report",
        "",
        f"Accuracy: `{key}`; SR: search ratio (share of questions with any search). "
        "Percentages; averages over each row's benchmarks.",
        "",
        "| " + " | ".join(lines[0]) + " |",
        "|" + "|".join("---" if i < 2 else "---:" for i in range(len(lines[0]))) + "|",
    ]
    out += ["| " + " | ".join(cells) + " |" for cells in lines[1:]]
    if runs:
        failures = failure_rows(runs)
        out += ["", "## Failures", "", "SR ok: search ratio counting successful calls only.", ""]
        out += ["| " + " | ".join(failures[0]) + " |", "|---|---|---|---:|---:|---:|---:|"]
        out += ["| " + " | ".join(cells) + " |" for cells in failures[1:]]
    return "\n".join(out) + "\n"


# --- plots ---


def _png(fig: Any) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return buffer.getvalue()


def scatter_png(runs: Sequence[RunSummary], key: str) -> bytes:
    """Accuracy vs search ratio: one point per run, a colour per policy/method, a marker
    per benchmark."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    rows = list(dict.fromkeys(r.row for r in runs))
    benches = list(dict.fromkeys(r.benchmark for r in runs))
    markers = "osD^v<>Pp*X"
    colors = plt.get_cmap("tab10")
    fig, ax = plt.subplots(figsize=(7, 5))
    seen: dict[tuple[float, float], int] = {}
    for run in runs:
        overall = run.metrics["overall"]
        x, y = 100 * overall["search_ratio"], 100 * overall[key]
        color = colors(rows.index(run.row) % 10)
        marker = markers[benches.index(run.benchmark) % len(markers)]
        ax.scatter(x, y, s=80, color=color, marker=marker, edgecolor="black", zorder=3)
        stacked = seen[round(x, 1), round(y, 1)] = seen.get((round(x, 1), round(y, 1)), -1) + 1
        # points on the same spot get their labels stacked, so none hides another
        ax.annotate(
            run.method,
            (x, y),
            xytext=(7, 5 + 10 * stacked),
            textcoords="offset points",
            fontsize=7,
            color=color,
        )
    for i, row in enumerate(rows):
        ax.scatter([], [], color=colors(i % 10), label=f"{row[0]} · {row[1]}")
    for j, bench in enumerate(benches):
        marker = markers[j % len(markers)]
        ax.scatter([], [], facecolor="white", edgecolor="black", marker=marker, label=bench)
    ax.set(xlabel="search ratio (%)", ylabel=f"accuracy (%, {key})", xlim=(-5, 105))
    ax.set_ylim(bottom=-5, top=max(105.0, ax.get_ylim()[1]))
    ax.set_title("Accuracy vs search ratio")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    data = _png(fig)
    plt.close(fig)
    return data


def bars_png(runs: Sequence[RunSummary], key: str, group: str) -> bytes | None:
    """Accuracy per ``group`` ("by_category" or "by_need"): one panel per benchmark, a bar
    per policy/method; ``None`` when no run has such groups."""
    benches = list(dict.fromkeys(r.benchmark for r in runs))
    benches = [b for b in benches if any(r.metrics.get(group) for r in runs if r.benchmark == b)]
    if not benches:
        return None
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    rows = list(dict.fromkeys(r.row for r in runs))
    colors = plt.get_cmap("tab10")
    fig, axes = plt.subplots(1, len(benches), figsize=(6 * len(benches), 4), squeeze=False)
    for ax, bench in zip(axes[0], benches, strict=True):
        bench_runs = [r for r in runs if r.benchmark == bench]
        groups = sorted({g for r in bench_runs for g in r.metrics.get(group, {})})
        width = 0.8 / max(1, len(bench_runs))
        for slot, run in enumerate(bench_runs):
            color = colors(rows.index(run.row) % 10)
            values = [100 * run.metrics[group].get(g, {}).get(key, 0.0) for g in groups]
            xs = [g + slot * width - 0.4 + width / 2 for g in range(len(groups))]
            ax.bar(xs, values, width, color=color, label=f"{run.row[0]} · {run.row[1]}")
        ax.set_xticks(range(len(groups)), groups)
        ax.set(title=f"{bench}: accuracy {group.replace('_', ' ')}", ylabel="accuracy (%)")
        ax.set_ylim(0, 105)
        ax.grid(axis="y", alpha=0.3)
    axes[0][-1].legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    data = _png(fig)
    plt.close(fig)
    return data


# --- the files ---


def _inspect_cell(runs: Sequence[RunSummary], row: tuple[str, str]) -> str:
    """Links that open the row's runs in ``mmsr inspect`` (one per benchmark)."""
    links = [
        f"<a href='{html.escape(inspector_link([r.path]))}'>{html.escape(r.benchmark)}</a>"
        for r in runs
        if r.row == row
    ]
    return " ".join(links)


def _html_table(table: Table, runs: Sequence[RunSummary] = ()) -> str:
    lines = table_rows(table)
    head = "".join(f"<th>{html.escape(c)}</th>" for c in lines[0]) + "<th>inspect</th>"
    body = "".join(
        "<tr>"
        + "".join(f"<td>{html.escape(c)}</td>" for c in cells)
        + f"<td>{_inspect_cell(runs, row)}</td></tr>"
        for row, cells in zip(table.rows, lines[1:], strict=True)
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _img(title: str, png: bytes) -> str:
    data = base64.b64encode(png).decode("ascii")
    label = html.escape(title)
    return f'<h2>{label}</h2><img alt="{label}" src="data:image/png;base64,{data}">'


def html_page(table: Table, key: str, runs: Sequence[RunSummary], plots: dict[str, bytes]) -> str:
    sources = "".join(
        f"<li>{html.escape(r.policy)} · {html.escape(r.method)} · {html.escape(r.benchmark)}: "
        f"<code>{html.escape(str(r.path))}</code> ({r.metrics['overall']['n']} questions)</li>"
        for r in runs
    )
    style = (
        "body{font-family:sans-serif;margin:2em;max-width:1200px}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px}"
        "td{text-align:right}td:nth-child(-n+2){text-align:left}img{max-width:100%}"
    )
    figures = "".join(_img(title, png) for title, png in plots.items())
    paths = [r.path for r in runs]
    failures = failure_rows(runs)
    failure_table = (
        "<h2>Failures</h2><table>"
        + "".join(
            "<tr>" + "".join(f"<{t}>{html.escape(c)}</{t}>" for c in row) + "</tr>"
            for t, row in [("th", failures[0])] + [("td", r) for r in failures[1:]]
        )
        + "</table>"
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>mmsr evaluation report"
        f"</title><style>{style}</style></head><body><h1>Evaluation report</h1>"
        f"<p>Accuracy: <code>{html.escape(key)}</code>; SR: search ratio (share of questions "
        f"with any search). Percentages; averages over each row's benchmarks. The inspect "
        f"links open a row's runs in <code>{html.escape(inspect_command(paths))}</code> once "
        f"it runs.</p>{_html_table(table, runs)}{failure_table}{figures}"
        f"<h2>Runs</h2><ul>{sources}</ul></body></html>\n"
    )


REFERENCE_COLUMNS = ("source", "policy", "method", "benchmark", "accuracy", "search_ratio")


def load_reference(path: Path, key: str) -> list[RunSummary]:
    """Published rows to show beside ours: a CSV file with ``REFERENCE_COLUMNS`` (percentages;
    ``search_ratio`` may be empty), typed by the user from a paper. ``source`` names the table
    and row (e.g. ``paper Table 1``) and is shown with the policy, so a published row is never
    mistaken for a measured one."""
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in REFERENCE_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path}: missing column(s) {', '.join(missing)}")
        out = []
        for line, row in enumerate(reader, start=2):
            try:
                acc = float(row["accuracy"])
                sr = float(row["search_ratio"]) if (row["search_ratio"] or "").strip() else None
            except ValueError:
                raise ValueError(f"{path}:{line}: accuracy and search_ratio are numbers") from None
            if not 0 <= acc <= 100 or (sr is not None and not 0 <= sr <= 100):
                raise ValueError(f"{path}:{line}: percentages are between 0 and 100")
            if not all((row[c] or "").strip() for c in ("source", "policy", "method", "benchmark")):
                raise ValueError(f"{path}:{line}: source, policy, method and benchmark are needed")
            overall = {key: acc / 100, "search_ratio": None if sr is None else sr / 100}
            policy = f"{row['policy'].strip()} ({row['source'].strip()})"
            out.append(
                RunSummary(
                    path,
                    policy,
                    row["method"].strip(),
                    row["benchmark"].strip(),
                    {"overall": overall},
                )
            )
    if not out:
        raise ValueError(f"{path}: no rows")
    return out


def write_report(
    run_dirs: Sequence[Path], out: Path, *, metric: str = "auto", reference: Path | None = None
) -> list[Path]:
    """Write ``report.md``, ``results.csv``, ``report.html`` and the plots' PNGs to ``out``;
    with ``reference``, the published rows of that CSV file (``load_reference``) in the
    tables beside ours."""
    runs = [load_run(Path(d)) for d in run_dirs]
    if not runs:
        raise ValueError("no run folders given")
    key = pick_metric(runs, metric)
    published = load_reference(reference, key) if reference is not None else []
    table = build_table([*runs, *published], key)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.md").write_text(markdown(table, key, runs), encoding="utf-8")
    with (out / "results.csv").open("w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows(table_rows(table))
    plots = {"Accuracy vs search ratio": scatter_png(runs, key)}
    for group, title in (
        ("by_category", "Accuracy per category"),
        ("by_need", "Accuracy per search need"),
    ):
        png = bars_png(runs, key, group)
        if png is not None:
            plots[title] = png
    names = {}
    for title, png in plots.items():
        name = title.lower().replace(" ", "_") + ".png"
        (out / name).write_bytes(png)
        names[title] = name
    (out / "report.html").write_text(html_page(table, key, runs, plots), encoding="utf-8")
    return [out / "report.md", out / "results.csv", out / "report.html"] + [
        out / n for n in names.values()
    ]
