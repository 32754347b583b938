"""``--subset paper``: the paper's evaluation subsets, on small synthetic records."""

from __future__ import annotations

import pytest

from mmsr.data.subsets import select_subset
from mmsr.types import Sample


def _sample(i: int, source: str, **kw: object) -> Sample:
    fields: dict = {"id": f"q{i:05d}", "question": f"What is {i}?", "answer": "x"}
    fields |= {"image": b"img", "source": source} | kw
    return Sample(**fields)


def test_infoseek_is_a_seeded_sample_of_2000() -> None:
    samples = [_sample(i, "infoseek") for i in range(2500)]
    first = select_subset(samples, "paper", seed=1)
    assert len(first) == 2000 and len({s.id for s in first}) == 2000
    # the same seed picks the same questions, whatever the file's order
    assert {s.id for s in select_subset(samples[::-1], "paper", seed=1)} == {s.id for s in first}
    assert {s.id for s in select_subset(samples, "paper", seed=2)} != {s.id for s in first}
    # a file already cut to 2,000 (or fewer) is kept whole
    assert len(select_subset(samples[:2000], "paper")) == 2000


def test_mmsearch_keeps_the_questions_with_an_image() -> None:
    samples = [_sample(i, "mmsearch", image=b"i" if i % 2 else None) for i in range(6)]
    assert [s.id for s in select_subset(samples, "paper")] == ["q00001", "q00003", "q00005"]


@pytest.mark.parametrize(
    ("extra", "question", "kept"),
    [
        ({"language": "EN"}, "Who?", True),  # the language field decides
        ({"language": "CN"}, "Who?", False),
        ({}, "Who painted this?", True),  # no field: no CJK characters means English
        ({}, "这是谁画的?", False),
    ],
)
def test_simplevqa_keeps_english(extra: dict, question: str, kept: bool) -> None:
    sample = _sample(0, "simplevqa", question=question, extra=extra)
    assert (select_subset([sample], "paper") == [sample]) is kept


def test_livevqa_and_fvqa_are_taken_whole_and_names_are_checked() -> None:
    live = [_sample(i, "livevqa") for i in range(3)]
    assert select_subset(live, "paper") == live
    fvqa = [_sample(i, "") for i in range(3)]
    assert select_subset(fvqa, "paper", benchmark="FVQA-test") == fvqa
    with pytest.raises(ValueError, match="unknown benchmark"):
        select_subset(fvqa, "paper", benchmark="okvqa")
    with pytest.raises(ValueError, match="name the benchmark"):
        select_subset([*live, *fvqa], "paper")
