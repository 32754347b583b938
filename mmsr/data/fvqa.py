"""FVQA-schema records (the veRL parquet of MMSearch-R1, and ``mmsr world`` output) → ``Sample``.

The official files hold the question in ``prompt[0].content`` (sometimes with an ``<image>``
placeholder, which we strip), the images as ``[{"bytes", "path"}]``, and the gold answers in
``reward_model``: ``ground_truth`` plus ``candidate_answers`` as a JSON *string*. Flat exports
of the same data (``question``, ``ground_truth``, ``candidate_answers`` as a list) are read too.
The world's files add labels (``search_need``, ``knowledge``, ``hops``…), which are validated
and kept in ``Sample.extra``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from mmsr.data.images import LoadContext, image_from_field
from mmsr.data.schema import (
    FieldError,
    clean_question,
    dedup_aliases,
    get_field,
    json_safe,
    optional_str,
    require_str,
    string_list,
)
from mmsr.types import Sample

CATEGORIES = ("search_free", "search_required")
SEARCH_NEEDS = ("none", "image", "text", "both")

# Columns that the FVQA converter maps to ``Sample`` fields; any other scalar column is kept
# in ``Sample.extra`` (e.g. the world's labels, or ``image_urls``).
_CORE_COLUMNS = frozenset(
    {"prompt", "images", "reward_model", "data_source", "data_id", "category", "extra_info"}
    | {"question", "ground_truth", "candidate_answers", "style"}
)
_WORLD_LABELS: dict[str, tuple[Any, ...] | None] = {
    "search_need": SEARCH_NEEDS,
    "knowledge": ("head", "tail"),
    "hops": (1, 2),
    "question_type": None,  # any non-empty string
    "entity": None,
}


def _question(record: Mapping[str, Any]) -> str:
    prompt = record.get("prompt")
    if prompt is None:
        return clean_question(require_str(record, "question"))
    if not isinstance(prompt, list) or not prompt:
        raise FieldError("prompt", "expected a non-empty list of messages")
    for i, message in enumerate(prompt):
        if not isinstance(message, Mapping):
            raise FieldError(f"prompt[{i}]", "expected a message object")
        if message.get("role", "user") == "user":
            content = message.get("content")
            if not isinstance(content, str) or not clean_question(content):
                raise FieldError(f"prompt[{i}].content", "expected a non-empty question")
            return clean_question(content)
    raise FieldError("prompt", "no user message")


def _extra(record: Mapping[str, Any]) -> dict[str, Any]:
    extra: dict[str, Any] = {}
    labels = get_field(record, "extra_info.labels")  # written by ``export.write_verl_parquet``
    if isinstance(labels, str) and labels:
        try:
            decoded = json.loads(labels)
        except json.JSONDecodeError:
            decoded = None
        if not isinstance(decoded, dict):
            raise FieldError("extra_info.labels", "not a JSON object")
        extra.update(decoded)
    for key, value in record.items():
        if key not in _CORE_COLUMNS and value is not None and not isinstance(value, bytes):
            extra[key] = json_safe(value)
    return extra


def _sample_id(record: Mapping[str, Any], ctx: LoadContext) -> str:
    for field in ("data_id", "extra_info.data_id", "extra_info.index"):
        if get_field(record, field) is not None:
            return require_str(record, field)
    return f"{ctx.path.stem}-{ctx.row}"


def fvqa_sample(record: Mapping[str, Any], ctx: LoadContext) -> list[Sample]:
    """One FVQA / veRL record (nested or flat) → one ``Sample``."""
    nested = record.get("reward_model") is not None
    prefix = "reward_model." if nested else ""
    answer = require_str(record, f"{prefix}ground_truth")
    field = f"{prefix}candidate_answers"
    aliases = dedup_aliases(answer, string_list(get_field(record, field), field))
    image, image_path = image_from_field(record.get("images"), "images", ctx)
    category = optional_str(record, "category")
    if category is not None and category not in CATEGORIES:
        raise FieldError("category", f"{category!r} is not one of {', '.join(CATEGORIES)}")
    sample = Sample(
        id=_sample_id(record, ctx),
        question=_question(record),
        answer=answer,
        aliases=aliases,
        image=image,
        image_path=image_path,
        category=category,
        source=optional_str(record, "data_source") or "",
        extra=_extra(record),
    )
    return [sample]


def world_sample(record: Mapping[str, Any], ctx: LoadContext) -> list[Sample]:
    """A record of ``mmsr world build``: the FVQA schema plus labels that must be valid."""
    (sample,) = fvqa_sample(record, ctx)
    if sample.category is None:
        raise FieldError("category", "missing")
    for label, allowed in _WORLD_LABELS.items():
        value = record.get(label)
        if value is None:
            raise FieldError(label, "missing")
        if allowed is None and (not isinstance(value, str) or not value.strip()):
            raise FieldError(label, "expected a non-empty string")
        if allowed is not None and value not in allowed:
            raise FieldError(label, f"{value!r} is not one of {', '.join(map(str, allowed))}")
    if sample.extra.get("search_need") == "none" and sample.category != "search_free":
        raise FieldError("search_need", "'none' contradicts category 'search_required'")
    return [sample]
