"""Records of the evaluation benchmarks the paper uses → ``Sample``: InfoSeek, MMSearch,
SimpleVQA and LiveVQA. One converter per benchmark, each a field mapping plus validation.

* InfoSeek (jsonl): ``data_id``, ``image_id`` (file ``<image_id>.jpg`` or similar in the image
  folder), ``question``, ``answer`` (list), ``answer_eval`` (list of strings, or for numeric
  questions ``{"wikidata": x, "range": [lo, hi]}``, kept as is in ``extra``), ``data_split``.
* MMSearch (end2end parquet): ``sample_id``, ``query``, ``query_image`` (may be absent),
  ``gt_answer``, ``alternative_gt_answers``, ``area``, ``subfield``, ``timestamp``.
* SimpleVQA (parquet or json): ``data_id``, ``image``, ``question``, ``answer``, ``language``,
  ``vqa_category``, ``original_category``, ``atomic_question``, ``atomic_fact``.
* LiveVQA (json array): per news item, ``level1_qa`` and ``level2_qa``, each multiple choice
  (``options``, ``Ground_Truth`` letter, ``Ground_Truth_List``) → two samples. The answer is
  the text of the correct option; ``Ground_Truth_List`` gives the aliases.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from mmsr.data.images import LoadContext, image_from_field, read_image_file
from mmsr.data.schema import (
    FieldError,
    clean_question,
    dedup_aliases,
    json_safe,
    optional_str,
    require_str,
    string_list,
)
from mmsr.types import Sample

_INFOSEEK_IMAGE_SUFFIXES = (".jpg", ".JPEG", ".jpeg", ".png", ".JPG")
_OPTION = re.compile(r"^\s*([A-Z])\s*[.):]\s*(.*)$", re.DOTALL)


def _keep(record: Mapping[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    return {k: json_safe(record[k]) for k in keys if record.get(k) not in (None, "")}


def _answer_and_aliases(answers: list[str], extra: list[str], field: str) -> tuple[str, ...]:
    if not answers:
        raise FieldError(field, "no answer")
    return (answers[0], *dedup_aliases(answers[0], answers[1:] + extra))


def _answer_eval(value: Any) -> tuple[list[str], list[Any]]:
    """InfoSeek's ``answer_eval``: the string answers, and the whole list as validated JSON."""
    items = value if isinstance(value, list) else [value]
    strings: list[str] = []
    for i, item in enumerate(items):
        if isinstance(item, Mapping):
            bounds = item.get("range")
            if (
                not isinstance(bounds, list)
                or len(bounds) != 2
                or not all(isinstance(b, int | float) and not isinstance(b, bool) for b in bounds)
            ):
                raise FieldError(f"answer_eval[{i}].range", "expected [low, high] numbers")
            if bounds[0] > bounds[1]:
                raise FieldError(f"answer_eval[{i}].range", "low is above high")
        elif isinstance(item, str | int | float) and not isinstance(item, bool):
            strings.append(str(item).strip())
        else:
            raise FieldError(f"answer_eval[{i}]", f"unexpected {type(item).__name__}")
    return [s for s in strings if s], [json_safe(item) for item in items]


def _infoseek_image(image_id: str, ctx: LoadContext) -> tuple[bytes | None, str]:
    first: str | None = None
    for suffix in _INFOSEEK_IMAGE_SUFFIXES:
        data, path = read_image_file(image_id + suffix, ctx)
        first = first or path
        if data is not None:
            return data, path
    return None, first or image_id


def infoseek_sample(record: Mapping[str, Any], ctx: LoadContext) -> list[Sample]:
    answers = string_list(record.get("answer"), "answer")
    extra_golds: list[str] = []
    extra = _keep(record, ("data_split", "image_id", "question_type", "entity_id", "entity_text"))
    if record.get("answer_eval") is not None:
        extra_golds, extra["answer_eval"] = _answer_eval(record["answer_eval"])
    if not answers:  # numeric questions sometimes carry their answer only in answer_eval
        answers = extra_golds
    answer, *aliases = _answer_and_aliases(answers, extra_golds, "answer")
    image_id = require_str(record, "image_id")
    image, image_path = _infoseek_image(image_id, ctx)
    sample = Sample(
        id=require_str(record, "data_id"),
        question=clean_question(require_str(record, "question")),
        answer=answer,
        aliases=tuple(aliases),
        image=image,
        image_path=image_path,
        source="infoseek",
        extra=extra,
    )
    return [sample]


def mmsearch_sample(record: Mapping[str, Any], ctx: LoadContext) -> list[Sample]:
    golds = [require_str(record, "gt_answer")]
    alts = string_list(record.get("alternative_gt_answers"), "alternative_gt_answers")
    answer, *aliases = _answer_and_aliases(golds, alts, "gt_answer")
    image, image_path = image_from_field(record.get("query_image"), "query_image", ctx)
    sample = Sample(
        id=require_str(record, "sample_id"),
        question=clean_question(require_str(record, "query")),
        answer=answer,
        aliases=tuple(aliases),
        image=image,
        image_path=image_path,
        source="mmsearch",
        extra=_keep(record, ("area", "subfield", "timestamp", "gt_requery")),
    )
    return [sample]


def simplevqa_sample(record: Mapping[str, Any], ctx: LoadContext) -> list[Sample]:
    keys = ("language", "vqa_category", "original_category", "atomic_question", "atomic_fact")
    image, image_path = image_from_field(record.get("image"), "image", ctx)
    sample = Sample(
        id=require_str(record, "data_id"),
        question=clean_question(require_str(record, "question")),
        answer=require_str(record, "answer"),
        image=image,
        image_path=image_path,
        source="simplevqa",
        extra=_keep(record, keys),
    )
    return [sample]


def _option_text(options: list[str], letter: str, field: str) -> str | None:
    for option in options:
        match = _OPTION.match(option)
        if match is None:
            raise FieldError(field, f"option {option[:40]!r} does not start with a letter")
        if match.group(1) == letter:
            return match.group(2).strip() or None
    return None


def _livevqa_level(item: Any, level: int, parent: Mapping[str, Any], ctx: LoadContext) -> Sample:
    field = f"level{level}_qa"
    if not isinstance(item, Mapping):
        raise FieldError(field, "missing or not an object")
    options = string_list(item.get("options"), f"{field}.options")
    letter = require_str(item, "Ground_Truth").upper()
    golds = string_list(item.get("Ground_Truth_List"), f"{field}.Ground_Truth_List")
    correct = _option_text(options, letter, f"{field}.options")
    answer, *aliases = _answer_and_aliases([correct] if correct else golds, golds, field)
    name = optional_str(item, "img_path") or optional_str(parent, "img_path")
    image, image_path = read_image_file(name, ctx) if name else (None, None)
    extra = {"level": level, "options": options, "answer_letter": letter}
    extra.update(_keep(item, ("question_type", "img_url")))
    if parent.get("source"):
        extra["news_source"] = json_safe(parent["source"])
    extra.update(_keep(parent, ("time",)))
    return Sample(
        id=f"{parent['id']}/level{level}",
        question=clean_question(require_str(item, "question")),
        answer=answer,
        aliases=tuple(aliases),
        image=image,
        image_path=image_path,
        source="livevqa",
        extra=extra,
    )


def livevqa_samples(record: Mapping[str, Any], ctx: LoadContext) -> list[Sample]:
    """One LiveVQA news item → its level-1 (visual) and level-2 (multi-hop) questions."""
    require_str(record, "id")
    out: list[Sample] = []
    for level in (1, 2):
        try:
            out.append(_livevqa_level(record.get(f"level{level}_qa"), level, record, ctx))
        except FieldError as err:
            if err.field.startswith(f"level{level}_qa"):
                raise
            raise FieldError(f"level{level}_qa.{err.field}", err.message) from None
    return out
