"""Policies behind one ``Policy`` protocol: ``scripted`` (a function of the conversation) and
its built-in ``baselines``, ``hf`` and ``vllm`` (local models), ``openai`` (any chat server);
``registry`` builds one from a ``--policy`` spec."""

from mmsr.policy.base import FinishReason, Generation, GenerationRequest, Policy
from mmsr.policy.scripted import ScriptedPolicy, sequence_script

__all__ = [
    "FinishReason",
    "Generation",
    "GenerationRequest",
    "Policy",
    "ScriptedPolicy",
    "sequence_script",
]
