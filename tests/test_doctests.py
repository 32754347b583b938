"""The examples in the docstrings of the pure modules are run as tests."""

from __future__ import annotations

import doctest
import importlib

import pytest


@pytest.mark.parametrize(
    "name",
    [
        "mmsr.data.balance",
        "mmsr.redact",
        "mmsr.rewards",
        "mmsr.protocol.actions",
        "mmsr.protocol.render",
        "mmsr.rollout.rules",
        "mmsr.rollout.settings",
        "mmsr.train.decision_probe",
        "mmsr.train.resume",
        "mmsr.train.schedule",
        "mmsr.warmstart.checks",
        "mmsr.integrations.verl.reward",
        "mmsr.inspect",
        "mmsr.inspect.views",
    ],
)
def test_docstring_examples(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name))
    assert result.attempted > 0
    assert result.failed == 0
