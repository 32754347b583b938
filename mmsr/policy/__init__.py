"""Policies: ``scripted`` (a function of the conversation); ``hf`` and ``openai`` come next."""

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
