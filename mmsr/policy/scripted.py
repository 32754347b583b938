"""A policy that is a plain function of the conversation: for tests, oracles and baselines."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from mmsr.policy.base import Generation, GenerationRequest
from mmsr.types import Turn

Script = Callable[[tuple[Turn, ...]], str]


class ScriptedPolicy:
    """Calls ``script(turns) -> text`` for each request; text-level, deterministic."""

    token_level = False

    def __init__(self, script: Script) -> None:
        self.script = script

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        return [Generation(text=self.script(r.turns)) for r in requests]


def sequence_script(*replies: str) -> Script:
    """A script that gives ``replies[i]`` as the i-th assistant turn of every conversation."""

    def script(turns: tuple[Turn, ...]) -> str:
        n_assistant = sum(t.role == "assistant" for t in turns)
        return replies[min(n_assistant, len(replies) - 1)]

    return script
