"""Named evaluation subsets of the benchmarks: ``paper`` selects what the paper evaluated (§4).

* InfoSeek: a seeded sample of 2,000 questions (all of them when there are no more).
* MMSearch: its questions that have an image (171 of the end-to-end set).
* SimpleVQA: its English questions (1,013): the ``language`` field when present, else
  questions without CJK characters.
* LiveVQA and FVQA-test: as released, all questions.

The benchmark is named by the run (``--benchmark``) or read from the samples' ``source``.
The sample is drawn from the questions sorted by id, so it depends only on the seed and the
file's content. Not here: reading the files (``mmsr.data.loaders``).
"""

from __future__ import annotations

import logging
import random
import re
from collections.abc import Callable, Sequence

from mmsr.types import Sample

logger = logging.getLogger(__name__)

SUBSETS = ("paper",)
INFOSEEK_SAMPLE = 2000
# The paper's question counts, checked (a warning) against what the files give.
PAPER_COUNTS = {"infoseek": 2000, "mmsearch": 171, "simplevqa": 1013}
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af]")
_ENGLISH = {"en", "english"}


def benchmark_key(name: str) -> str:
    """A benchmark name reduced to its key: ``FVQA-test`` → ``fvqa``, ``MMSearch`` →
    ``mmsearch``.

    >>> benchmark_key("FVQA-test"), benchmark_key("SimpleVQA"), benchmark_key("mmsearch_r1/fvqa")
    ('fvqa', 'simplevqa', 'fvqa')
    """
    key = re.sub(r"[^a-z0-9]", "", name.lower().rpartition("/")[2])
    return key.removesuffix("test") if key.startswith("fvqa") else key


def _infoseek(samples: list[Sample], seed: int) -> list[Sample]:
    if len(samples) <= INFOSEEK_SAMPLE:
        return samples
    ordered = sorted(samples, key=lambda s: s.id)
    return random.Random(seed).sample(ordered, INFOSEEK_SAMPLE)


def _is_english(sample: Sample) -> bool:
    language = sample.extra.get("language")
    if language is not None:
        return str(language).strip().lower() in _ENGLISH
    return _CJK.search(sample.question) is None


_PAPER: dict[str, Callable[[list[Sample], int], list[Sample]]] = {
    "infoseek": _infoseek,
    "mmsearch": lambda samples, seed: [s for s in samples if s.image is not None],
    "simplevqa": lambda samples, seed: [s for s in samples if _is_english(s)],
    "livevqa": lambda samples, seed: samples,
    "fvqa": lambda samples, seed: samples,
}


def select_subset(
    samples: Sequence[Sample], name: str, *, benchmark: str | None = None, seed: int = 0
) -> list[Sample]:
    """The samples of subset ``name`` (one of ``SUBSETS``) of ``benchmark`` (None: the
    samples' one source); ``ValueError`` for a benchmark the subset does not know."""
    if name not in SUBSETS:
        raise ValueError(f"unknown subset {name!r}; known: {', '.join(SUBSETS)}")
    if benchmark is None:
        sources = {s.source for s in samples}
        if len(sources) != 1:
            raise ValueError(
                f"subset {name!r}: name the benchmark (the data has {sorted(sources)})"
            )
        benchmark = sources.pop()
    key = benchmark_key(benchmark)
    if key not in _PAPER:
        raise ValueError(
            f"subset {name!r}: unknown benchmark {benchmark!r}; known: {', '.join(_PAPER)}"
        )
    chosen = _PAPER[key](list(samples), seed)
    expected = PAPER_COUNTS.get(key)
    if expected is not None and len(chosen) != expected:
        logger.warning(
            "subset %s of %s: %d questions, the paper used %d", name, key, len(chosen), expected
        )
    return chosen
