"""The one registry of policies: a ``--policy`` spec to a policy and its turn encoder.

``hf:MODEL_DIR`` (a local model) and ``vllm:MODEL_DIR`` (a vLLM engine), both loaded by
``mmsr.policy.local_model``; ``openai:BASE_URL#MODEL`` (any OpenAI-compatible chat server,
``mmsr.policy.openai``) and ``scripted:NAME`` (``mmsr.policy.baselines``). Each kind's module
is imported only when its kind is asked for, so this one stays cheap (no torch). Used by
``mmsr eval`` and ``mmsr data balance --policy``; not here: what a run does with the policy.
"""

from __future__ import annotations

from typing import Any


def policy_from_spec(
    spec: str,
    *,
    model: str | None = None,
    api_key_env: str = "OPENAI_API_KEY",
    temperature: float = 0.0,
    concurrency: int = 8,
    device: str = "cpu",
    dtype: str = "float32",
    max_batch: int = 0,
    max_model_len: int | None = None,
) -> tuple[Any, Any]:
    """(policy, turn encoder or None) from a ``--policy`` spec: ``hf:MODEL_DIR`` (on
    ``device`` in ``dtype``, ``max_batch`` requests per forward pass), ``vllm:MODEL_DIR`` (a
    vLLM engine on the visible GPU, the ``gpu`` extra), ``openai:BASE_URL#MODEL`` (``model``
    fills in a missing ``#MODEL``) or ``scripted:NAME``. Model folders are read locally only.
    Shared by ``mmsr eval`` and ``mmsr data balance --policy``."""
    kind, _, rest = spec.partition(":")
    if kind == "scripted":
        from mmsr.policy.baselines import scripted_policy

        return scripted_policy(rest), None
    if kind == "openai":
        from mmsr.chat_client import ChatClient, split_endpoint
        from mmsr.policy.openai import OpenAIPolicy

        base, name = split_endpoint(rest, model, "--policy openai:")
        client = ChatClient(base, name, api_key_env=api_key_env)
        return OpenAIPolicy(client, temperature=temperature, concurrency=concurrency), None
    if kind == "hf":
        from mmsr.policy.local_model import load_hf_policy

        return load_hf_policy(
            rest, device=device, dtype=dtype, temperature=temperature, max_batch=max_batch
        )
    if kind == "vllm":
        from mmsr.policy.local_model import build_vllm_policy

        return build_vllm_policy(
            rest, temperature=temperature, dtype=dtype, max_model_len=max_model_len
        )
    raise ValueError(f"--policy: unknown kind {kind!r}; expected hf:, vllm:, openai: or scripted:")
