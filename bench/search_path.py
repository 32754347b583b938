"""Where the search path loses answers: a funnel over an evaluation's trajectories.

For every question that searched, on an offline world: was the pictured entity among the
image hits (rank 1, lower, absent), did the policy name it afterwards (in its text query or
its answer), did it name the first hit instead, were the fact's value in the text hits, and
was the answer right. Per search need (``image``: one hop, ``both``: two hops, ``none``: a
head question that searched anyway) and overall. Reads only what an evaluation wrote
(``trajectories.jsonl`` of ``mmsr eval`` or ``mmsr demo``) and the world's ``entities.jsonl``.

    python bench/search_path.py --world W --run runs/demo/eval/rag
    python bench/search_path.py --world W --run runs/demo/eval/on_demand_rl --json out.json

Also counts what the direct answers named (``--direct``): the pictured entity, another head
entity, a tail entity or nothing, the check that showed recognition is closed-set.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

NAMED = re.compile(r"[Tt]he image shows (?:the |a |an )?(.+?)(?:[.,;]|$)")


def load_entities(world: Path) -> dict[str, dict[str, Any]]:
    """Entities by id, from the world's ``entities.jsonl``."""
    with (world / "entities.jsonl").open(encoding="utf-8") as f:
        return {e["id"]: e for e in map(json.loads, filter(str.strip, f))}


def entity_of(line: Mapping[str, Any], entities: Mapping[str, Any]) -> dict[str, Any] | None:
    """The world entity of a result line (its id ends with ``-<entity id>``), or None."""
    qid = str(line.get("id", ""))
    for i in range(len(qid)):
        if qid[i] == "-" and qid[i + 1 :] in entities:
            return dict(entities[qid[i + 1 :]])
    return None


def _titles(call: Mapping[str, Any]) -> list[str]:
    return [str(h.get("title", "")) for h in call.get("hits", ())]


def classify(line: Mapping[str, Any], entity: Mapping[str, Any]) -> dict[str, Any]:
    """The funnel's facts about one searched question."""
    calls = line.get("tool_calls", [])
    image = next((c for c in calls if c["tool"] == "image"), None)
    texts = [c for c in calls if c["tool"] == "text"]
    name = entity["name"]
    answer = line.get("answer") or ""
    titles = _titles(image) if image else []
    queries = [str(c.get("query") or "") for c in texts]
    named = [q for q in queries if name.lower() in q.lower()] or (
        [answer] if answer.lower() == name.lower() else []
    )
    first = titles[0] if titles else None
    named_first = first is not None and any(
        first.lower() in q.lower() for q in [*queries, answer] if q
    )
    summaries = " ".join(str(h.get("summary", "")) for c in texts for h in c.get("hits", ()))
    golds = [str(g) for g in line.get("golds", [])]
    return {
        "need": line.get("need") or "?",
        "image_search": image is not None,
        "rank": titles.index(name) + 1 if name in titles else 0,
        "named_entity": bool(named),
        "named_first_hit": named_first,
        "text_search": bool(texts),
        "value_in_text_hits": any(g.lower() in summaries.lower() for g in golds),
        "correct": bool(line.get("reward", {}).get("accuracy")),
    }


def funnel(rows: Iterable[Mapping[str, Any]]) -> dict[str, float]:
    """Counts of one need class's searched questions (see the module docstring)."""
    rows = list(rows)
    imaged = [r for r in rows if r["image_search"]]
    top1 = [r for r in imaged if r["rank"] == 1]
    lower = [r for r in imaged if r["rank"] > 1]
    missed = [r for r in imaged if r["rank"] == 0]
    texted = [r for r in rows if r["text_search"]]

    def share(part: list[Any], whole: list[Any]) -> float:
        return len(part) / len(whole) if whole else float("nan")

    return {
        "n": len(rows),
        "image_search": len(imaged),
        "entity_rank1": share(top1, imaged),
        "entity_lower": share(lower, imaged),
        "entity_missed": share(missed, imaged),
        "named_given_rank1": share([r for r in top1 if r["named_entity"]], top1),
        "named_given_lower": share([r for r in lower if r["named_entity"]], lower),
        "named_first_hit": share([r for r in imaged if r["named_first_hit"]], imaged),
        "text_search": len(texted),
        "value_in_text_hits": share([r for r in texted if r["value_in_text_hits"]], texted),
        "correct_given_value": share(
            [r for r in texted if r["value_in_text_hits"] and r["correct"]],
            [r for r in texted if r["value_in_text_hits"]],
        ),
        "accuracy": share([r for r in rows if r["correct"]], rows),
    }


def direct_names(
    lines: Iterable[Mapping[str, Any]], entities: Mapping[str, Any]
) -> dict[str, Counter[str]]:
    """Per knowledge class, what unsearched answers named: "own", "head", "tail", "none"."""
    by_name = {e["name"].lower(): e for e in entities.values()}
    out: dict[str, Counter[str]] = {}
    for line in lines:
        entity = entity_of(line, entities)
        if entity is None or line.get("tool_calls"):
            continue
        text = " ".join(t["text"] for t in line.get("turns", []) if t["role"] == "assistant")
        m = NAMED.search(text)
        said = by_name.get(m.group(1).strip().lower()) if m else None
        kind = (
            "none" if said is None else "own" if said["id"] == entity["id"] else said["knowledge"]
        )
        out.setdefault(entity["knowledge"], Counter())[kind] += 1
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--world", type=Path, required=True, help="the world folder")
    ap.add_argument("--run", type=Path, required=True, help="an evaluation's output folder")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args(argv)
    entities = load_entities(args.world)
    path = args.run / "trajectories.jsonl"
    if not path.is_file():
        print(f"no {path}", file=sys.stderr)
        return 2
    with path.open(encoding="utf-8") as f:
        lines = [json.loads(s) for s in f if s.strip()]
    rows = []
    for line in lines:
        entity = entity_of(line, entities)
        if entity is not None and line.get("tool_calls"):
            rows.append(classify(line, entity))
    table = {"all": funnel(rows)}
    for need in sorted({r["need"] for r in rows}):
        table[need] = funnel(r for r in rows if r["need"] == need)
    names = {k: dict(v) for k, v in direct_names(lines, entities).items()}
    keys = list(table["all"])
    print(f"{'':22}" + "".join(f"{k:>10}" for k in table))
    for key in keys:
        cells = "".join(
            f"{v[key]:>10.0f}" if isinstance(v[key], int) else f"{v[key]:>10.2f}"
            for v in table.values()
        )
        print(f"{key:22}{cells}")
    print("direct answers named (per knowledge class):", json.dumps(names))
    if args.json:
        args.json.write_text(json.dumps({"funnel": table, "direct_names": names}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
