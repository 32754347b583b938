"""The demo's report: ``summary.json``, ``report.md`` and ``report.html`` from its run folders.

Reads each evaluation's ``metrics.json`` and the GRPO run's ``metrics.jsonl``; plots the
reward and the search ratio over training steps and accuracy against search ratio per method
(matplotlib, Agg, imported here only; the PNGs are embedded so the page is one file).
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mmsr.inspect import inspect_command, inspector_link

# The paper's headline, in miniature: on-demand search after RL answers at least
# as well as the fixed RAG workflow while searching at most 70 % as often.
TARGET_SEARCH_FACTOR = 0.7
PROBE_LABEL = "the same training questions, greedy"
# Per-class search ratios in the GRPO metrics (measured from the labels, never shown to the policy).
NEED_KEYS = ("search/ratio/search_free", "search/ratio/search_required")
DECISION_DIR = "decision"
"""Where the demo writes each probed model's decision probe (``OUT/decision/<row>.json``)."""


def method_row(metrics: dict[str, Any]) -> dict[str, Any]:
    """The figures of one evaluation that the summary keeps (accuracy is EM)."""
    overall = metrics["overall"]
    row = {
        "accuracy": overall["accuracy_em"],
        "search_ratio": overall["search_ratio"],
        "search_call_ratio": overall["search_call_ratio"],
        "image_only_ratio": overall["image_only_ratio"],
        "text_only_ratio": overall["text_only_ratio"],
        "both_ratio": overall["both_ratio"],
        "mean_turns": overall["mean_turns"],
        "n": overall["n"],
    }
    for category, figures in metrics.get("by_category", {}).items():
        row[f"accuracy/{category}"] = figures["accuracy_em"]
        row[f"search_ratio/{category}"] = figures["search_ratio"]
    if "reward_mean" in metrics.get("run", {}):  # the training reward's formula, held out
        row["reward"] = metrics["run"]["reward_mean"]
    if "search_decision" in metrics:
        row["search_precision"] = metrics["search_decision"]["precision"]
        row["search_recall"] = metrics["search_decision"]["recall"]
    return row


def running_mean(values: Sequence[float], window: int) -> list[float]:
    """Trailing mean of up to ``window`` values at each position (the first ones average
    what there is so far)."""
    out = []
    for i in range(len(values)):
        part = values[max(0, i - window + 1) : i + 1]
        out.append(sum(part) / len(part))
    return out


def trend(values: Sequence[float]) -> float:
    """Least-squares slope of ``values`` against their index (0 for fewer than 2)."""
    n = len(values)
    if n < 2:
        return 0.0
    mean_x, mean_y = (n - 1) / 2, sum(values) / n
    cov = sum((i - mean_x) * (v - mean_y) for i, v in enumerate(values))
    return cov / sum((i - mean_x) ** 2 for i in range(n))


def training_summary(training: Sequence[dict[str, float]]) -> dict[str, Any]:
    """First and last step, the means of the run's two halves and the per-step trend of the
    reward (one step's mean is noisy: its few questions differ from step to step)."""
    nan = float("nan")
    rewards = [row.get("reward/mean", nan) for row in training]
    half = len(rewards) // 2
    first, last = training[0], training[-1]
    out = {
        "steps": len(training),
        "reward_first": round(rewards[0], 3),
        "reward_last": round(rewards[-1], 3),
        "search_ratio_first": round(first.get("search/ratio", nan), 3),
        "search_ratio_last": round(last.get("search/ratio", nan), 3),
    }
    if half:
        out["reward_mean_first_half"] = round(sum(rewards[:half]) / half, 3)
        out["reward_mean_second_half"] = round(sum(rewards[half:]) / (len(rewards) - half), 3)
    out["reward_trend_per_step"] = round(trend(rewards), 4)
    return out


def read_training(run: Path, name: str = "metrics.jsonl") -> list[dict[str, float]]:
    """The rows of a GRPO run's ``metrics.jsonl`` (or its ``probe.jsonl``); [] when absent."""
    path = run / name
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def target_check(methods: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    if "rag" not in methods or "on_demand_rl" not in methods:
        return None
    rag, rl = methods["rag"], methods["on_demand_rl"]
    accuracy_ok = rl["accuracy"] >= rag["accuracy"]
    search_ok = rl["search_ratio"] <= TARGET_SEARCH_FACTOR * rag["search_ratio"]
    return {
        "on_demand_rl_accuracy_at_least_rag": accuracy_ok,
        "on_demand_rl_search_ratio_at_most_0.7_rag": search_ok,
        "met": accuracy_ok and search_ok,
    }


def decision_check(methods: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    """The decision's bar: RL searches when it needs to, answers directly otherwise, and gains.

    Search ratio on search-required ≥ 0.85 and on search-free ≤ 0.25, search precision ≥ 0.8
    and recall ≥ 0.85; accuracy ≥ the warm start's and ≥ rag's + 3 points; search ratio ≤ 0.7 ×
    rag's. Each criterion is reported; ``met`` is all of them.
    """
    needed = ("rag", "on_demand_rl", "on_demand_warmstart")
    if any(name not in methods for name in needed):
        return None
    rag, rl, warm = (methods[name] for name in needed)
    nan = float("nan")
    checks = {
        "search_ratio_search_required_at_least_0.85": rl.get("search_ratio/search_required", nan)
        >= 0.85,
        "search_ratio_search_free_at_most_0.25": rl.get("search_ratio/search_free", nan) <= 0.25,
        "search_precision_at_least_0.8": rl.get("search_precision", nan) >= 0.8,
        "search_recall_at_least_0.85": rl.get("search_recall", nan) >= 0.85,
        "accuracy_at_least_warmstart": rl["accuracy"] >= warm["accuracy"],
        "accuracy_at_least_rag_plus_3_points": rl["accuracy"] >= rag["accuracy"] + 0.03,
        "search_ratio_at_most_0.7_rag": rl["search_ratio"]
        <= TARGET_SEARCH_FACTOR * rag["search_ratio"],
    }
    return {**checks, "met": all(checks.values())}


def regime_check(methods: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    """The paper's regime (§4): searching pays and rarely hurts a known answer, so only the
    penalty removes unneeded searches.

    rag on search-free ≥ direct's − 3 points and on search-required ≥ 70 %; oracle ≥ 75 %;
    rag ≥ direct + 20 points; on_demand_rl ≥ rag − 2 points at ≤ 0.75 × rag's search ratio,
    searching on ≤ 20 % of search-free and ≥ 90 % of search-required questions; and, where the
    ablation ran, the run without the penalty searches on search-free questions ≥ 15 points
    more often than the penalised one. Each criterion is reported; ``met`` is all of them.
    """
    needed = ("direct", "rag", "oracle", "on_demand_rl")
    if any(name not in methods for name in needed):
        return None
    direct, rag, oracle, rl = (methods[name] for name in needed)
    nan = float("nan")
    free, required = "accuracy/search_free", "accuracy/search_required"
    checks = {
        "rag_search_free_at_least_direct_minus_3_points": rag.get(free, nan)
        >= direct.get(free, nan) - 0.03,
        "rag_search_required_at_least_0.70": rag.get(required, nan) >= 0.70,
        "oracle_at_least_0.75": oracle["accuracy"] >= 0.75,
        "rag_at_least_direct_plus_20_points": rag["accuracy"] >= direct["accuracy"] + 0.20,
        "on_demand_rl_at_least_rag_minus_2_points": rl["accuracy"] >= rag["accuracy"] - 0.02,
        "on_demand_rl_search_ratio_at_most_0.75_rag": rl["search_ratio"]
        <= 0.75 * rag["search_ratio"],
        "on_demand_rl_search_free_at_most_0.20": rl.get("search_ratio/search_free", nan) <= 0.20,
        "on_demand_rl_search_required_at_least_0.90": rl.get("search_ratio/search_required", nan)
        >= 0.90,
    }
    if "on_demand_rl_no_penalty" in methods:
        no_penalty = methods["on_demand_rl_no_penalty"].get("search_ratio/search_free", nan)
        checks["penalty_removes_15_points_of_search_free_searches"] = (
            no_penalty >= rl.get("search_ratio/search_free", nan) + 0.15
        )
    return {**checks, "met": all(checks.values())}


def _png(fig: Any) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _plots(
    methods: dict[str, dict[str, Any]],
    training: list[dict[str, float]],
    probes: Sequence[dict[str, float]] = (),
) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plots: dict[str, str] = {}
    if training:
        fig, ax = plt.subplots(figsize=(6, 3.5))
        steps = [row.get("step", i + 1) for i, row in enumerate(training)]
        window = 4
        for key, label in (("reward/mean", "mean reward"), ("search/ratio", "search ratio")):
            values = [row.get(key, float("nan")) for row in training]
            (line,) = ax.plot(steps, values, marker=".", alpha=0.45, label=f"{label} (step)")
            ax.plot(
                steps,
                running_mean(values, window),
                color=line.get_color(),
                linewidth=2,
                label=f"{label} (mean of the last {window} steps)",
            )
        if probes:
            ax.plot(
                [row["step"] for row in probes],
                [row.get("probe/reward/mean", float("nan")) for row in probes],
                marker="s",
                color="black",
                linewidth=2,
                label=f"probe reward ({PROBE_LABEL})",
            )
        ax.set_xlabel("GRPO step")
        ax.set_ylim(0, 1.05)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
        ax.set_title("Training: reward and search ratio")
        plots["Training: reward and search ratio over steps"] = _png(fig)
        plt.close(fig)
        per_need = [k for k in NEED_KEYS if any(k in row for row in training)]
        if per_need:
            fig, ax = plt.subplots(figsize=(6, 3.5))
            for key in per_need:
                values = [row.get(key, float("nan")) for row in training]
                ax.plot(steps, values, marker=".", label=key.removeprefix("search/ratio/"))
            ax.set_xlabel("GRPO step")
            ax.set_ylabel("search ratio of the sampled rollouts")
            ax.set_ylim(-0.05, 1.05)
            ax.grid(alpha=0.3)
            ax.legend()
            ax.set_title("Training: search ratio per need class")
            plots["Training: search ratio per need class over steps"] = _png(fig)
            plt.close(fig)
    if _reads_decision(probes):
        plots["Who decides: the decision probe over steps"] = decision_plot(probes)
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, row in methods.items():
        ax.scatter(100 * row["search_ratio"], 100 * row["accuracy"], s=60)
        ax.annotate(
            name,
            (100 * row["search_ratio"], 100 * row["accuracy"]),
            xytext=(5, 4),
            textcoords="offset points",
        )
    ax.set_xlabel("search ratio (% of questions with any search)")
    ax.set_ylabel("accuracy (EM, %)")
    ax.set_xlim(-5, 105)
    ax.grid(alpha=0.3)
    ax.set_title("Accuracy vs search ratio on the held-out test split")
    plots["Accuracy vs search ratio per method"] = _png(fig)
    plt.close(fig)
    return plots


# The probe's decision figures (``run.probe_every`` on a world), with their plot labels.
DECISION_KEYS: tuple[tuple[str, str], ...] = (
    ("probe/decision/auc", "decision AUC (P(search): search-required vs search-free)"),
    ("probe/search/ratio/search_free", "search ratio, search-free (greedy)"),
    ("probe/search/ratio/search_required", "search ratio, search-required (greedy)"),
)


def _reads_decision(probes: Sequence[dict[str, float]]) -> bool:
    return any(key.startswith("probe/decision/") for row in probes for key in row)


def decision_plot(probes: Sequence[dict[str, float]], title: str = "") -> str:
    """The decision probe over GRPO steps, as a base64 PNG: the AUC of P(search) between the
    need classes and the greedy search ratio of each class on the probe's questions."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    steps = [row["step"] for row in probes]
    for key, label in DECISION_KEYS:
        values = [row.get(key, float("nan")) for row in probes]
        ax.plot(steps, values, marker="o", label=label)
    ax.axhline(0.5, color="grey", linewidth=0.8, linestyle=":")
    ax.set_xlabel("GRPO step")
    ax.set_ylim(-0.05, 1.05)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    ax.set_title(title or f"Who decides: the decision probe ({PROBE_LABEL})")
    png = _png(fig)
    plt.close(fig)
    return png


def decision_curve(probes: Sequence[dict[str, float]]) -> dict[str, list[float]]:
    """The decision figures of ``probes`` by step, rounded, for the summary ({} when the probe
    did not read the decision)."""
    if not _reads_decision(probes):
        return {}
    out: dict[str, list[float]] = {}
    for key, _ in DECISION_KEYS:
        name = key.replace("/", "_")
        out[name] = [round(row.get(key, float("nan")), 3) for row in probes]
    return out


def read_decisions(out: Path, names: Sequence[str]) -> dict[str, dict[str, Any]]:
    """The decision probes written for ``names`` (``OUT/decision/<name>.json``), by name."""
    found = {}
    for name in names:
        path = out / DECISION_DIR / f"{name}.json"
        if path.is_file():
            found[name] = json.loads(path.read_text(encoding="utf-8"))
    return found


RESULT_HEADER = (
    "method", "accuracy", "search ratio", "search calls / allowed", "acc. search-free",
    "acc. search-required", "SR search-free", "SR search-required", "search precision",
    "search recall", "reward",
)  # fmt: skip


def result_rows(methods: dict[str, dict[str, Any]]) -> list[list[str]]:
    """The results table's cells, one row per method (percentages with one decimal)."""
    rows = []
    for name, row in methods.items():
        nan = float("nan")
        rows.append(
            [
                name,
                f"{100 * row['accuracy']:.1f}",
                f"{100 * row['search_ratio']:.1f}",
                f"{100 * row['search_call_ratio']:.1f}",
                f"{100 * row.get('accuracy/search_free', nan):.1f}",
                f"{100 * row.get('accuracy/search_required', nan):.1f}",
                f"{100 * row.get('search_ratio/search_free', nan):.1f}",
                f"{100 * row.get('search_ratio/search_required', nan):.1f}",
                f"{row.get('search_precision', nan):.2f}",
                f"{row.get('search_recall', nan):.2f}",
                f"{row.get('reward', nan):.3f}",
            ]
        )
    return rows


def _notes(summary: dict[str, Any]) -> list[tuple[str, str, str]]:
    """The sentences under the table as (before, verdict, after): the verdict is bold."""
    notes = []
    target = summary.get("target")
    if target is not None:
        verdict = "met" if target["met"] else "not met"
        notes.append(
            ("Target (on_demand_rl accuracy ≥ rag, search ratio ≤ 0.7 × rag): ", verdict, ".")
        )
    decision_bar = (
        "Search decision (SR search-required ≥ 0.85, search-free ≤ 0.25, "
        "precision ≥ 0.8, recall ≥ 0.85, accuracy ≥ warm start and ≥ rag + 3): "
    )
    regime_bar = (
        "The paper's regime (rag ≥ direct + 20, rag on search-free ≥ direct − 3 and on "
        "search-required ≥ 70 %, oracle ≥ 75 %, RL ≥ rag − 2 at ≤ 0.75 × its searches, SR "
        "search-free ≤ 0.20 and search-required ≥ 0.90, the penalty removing ≥ 15 points): "
    )
    for key, before in (("decision", decision_bar), ("regime", regime_bar)):
        check = summary.get(key)
        if check is not None:
            failed = [k for k, v in check.items() if k != "met" and not v]
            verdict = "met" if check["met"] else "not met"
            notes.append((before, verdict, f" (short of: {', '.join(failed)})." if failed else "."))
    training = summary.get("training", {})
    if training:
        notes.append(("Training: " + ", ".join(f"{k} {v}" for k, v in training.items()), "", "."))
    timings = ", ".join(f"{k} {v}" for k, v in summary["timings"].items())
    notes.append(("Stage times (s): " + timings, "", ""))
    return notes


def _markdown(methods: dict[str, dict[str, Any]], summary: dict[str, Any]) -> str:
    lines = [
        "# mmsr demo",
        "",
        "Held-out test split of the offline world (accuracy = exact match; search ratio = share",
        "of questions with at least one search).",
        "",
        "| " + " | ".join(RESULT_HEADER) + " |",
        "|---|" + "---:|" * (len(RESULT_HEADER) - 1),
    ]
    lines += ["| " + " | ".join(cells) + " |" for cells in result_rows(methods)]
    for before, verdict, after in _notes(summary):
        lines += ["", before + (f"**{verdict}**" if verdict else "") + after]
    return "\n".join(lines) + "\n"


def _html(out: Path, methods: dict[str, dict[str, Any]], summary: dict[str, Any]) -> str:
    """The results as an HTML table, each method linked to its run in ``mmsr inspect``,
    and the notes as paragraphs."""
    runs = {name: out / "eval" / name for name in methods}
    head = "".join(f"<th>{html.escape(h)}</th>" for h in RESULT_HEADER)
    body = ""
    for name, cells in zip(methods, result_rows(methods), strict=True):
        link = html.escape(inspector_link([runs[name]]))
        first = f"<td><a href='{link}'>{html.escape(cells[0])}</a></td>"
        body += "<tr>" + first + "".join(f"<td>{html.escape(c)}</td>" for c in cells[1:]) + "</tr>"
    notes = "".join(
        f"<p>{html.escape(before)}{f'<b>{html.escape(verdict)}</b>' if verdict else ''}"
        f"{html.escape(after)}</p>"
        for before, verdict, after in _notes(summary)
    )
    command = html.escape(inspect_command(list(runs.values())))
    return (
        "<p>Held-out test split of the offline world (accuracy = exact match; search ratio = "
        "share of questions with at least one search).</p>"
        f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{notes}"
        f"<p>Read the trajectories: <code>{command}</code>, then follow a method's link.</p>"
    )


def write_demo_report(
    out: Path,
    names: Sequence[str],
    grpo_run: Path,
    timings: dict[str, float],
    *,
    paper: bool = False,
) -> dict[str, Any]:
    """Write the report files and return the summary (``methods``, ``target``, ``training``,
    ``decision_probe``; with ``paper`` the ``paper`` section of ``mmsr.demo.paper``)."""
    methods = {
        name: method_row(
            json.loads((out / "eval" / name / "metrics.json").read_text(encoding="utf-8"))
        )
        for name in names
    }
    training = read_training(grpo_run)
    probes = read_training(grpo_run, "probe.jsonl")
    summary: dict[str, Any] = {
        "methods": methods,
        "target": target_check(methods),
        "decision": decision_check(methods),
        "regime": regime_check(methods),
        "timings": timings,
    }
    if training:
        summary["training"] = training_summary(training)
    if training and probes:
        summary["training"] |= {
            "probe_questions": PROBE_LABEL,
            "probe_steps": [int(row["step"]) for row in probes],
            "probe_reward": [
                round(row.get("probe/reward/mean", float("nan")), 3) for row in probes
            ],
            **decision_curve(probes),
        }
    probed = read_decisions(out, names)
    if probed:
        summary["decision_probe"] = {
            name: {k: v for k, v in figures.items() if k in ("auc", "head", "tail")}
            for name, figures in probed.items()
        }
    markdown, plots = _markdown(methods, summary), _plots(methods, training, probes)
    if paper:
        from mmsr.demo.paper import PAPER_ROWS, paper_markdown, paper_plots, paper_summary

        rows = [n for n in names if n in PAPER_ROWS]
        summary["paper"] = paper_summary(out, methods, rows, probed)
        markdown += paper_markdown(summary["paper"])
        plots |= paper_plots(out)
    (out / "report.md").write_text(markdown, encoding="utf-8")
    images = "".join(
        f"<h2>{html.escape(title)}</h2>"
        f"<img alt='{html.escape(title)}' src='data:image/png;base64,{png}'>"
        for title, png in plots.items()
    )
    page = (
        "<!doctype html><meta charset='utf-8'><title>mmsr demo</title>"
        "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px}"
        "td{text-align:right}td:first-child{text-align:left}img{max-width:100%}</style>"
        f"<h1>mmsr demo</h1>{_html(out, methods, summary)}{images}"
    )
    (out / "report.html").write_text(page, encoding="utf-8")
    return summary
