"""A rollout replica for veRL on the CPU: mmsr's hf policy served token-in/token-out; imports
verl and ray.

veRL's rollout backends (vLLM, SGLang, TensorRT-LLM) need GPUs. ``mmsr.integrations.verl.cpu``
registers this module's classes as rollout ``mmsr_cpu``:

- ``CpuRolloutReplica``: one server actor per replica, beside the trainer worker it shares a
  logical GPU with (veRL's hybrid mode);
- ``CpuRolloutServer``: the policy (``mmsr.policy.HFPolicy`` on the model folder, the images
  processed with the settings of the processor veRL's trainer uses) answering veRL's
  ``generate(prompt_ids, sampling_params, request_id, image_data)`` with the sampled ids and
  their log-probs. Requests that arrive together (one per trajectory, concurrently) are sampled
  as one batch. Sleep and wake are no-ops: nothing is freed on the CPU. ``update_weights`` loads
  the actor's weights and records each sync — the step, the tensors loaded and the summed
  absolute change of the weights — as a JSON line in ``$MMSR_VERL_SYNC_LOG`` when it is set;
- ``CpuServerAdapter``: the trainer worker's side (veRL's ``BaseRollout``), which sends the
  actor's weights to its replica's server after each update (veRL's ``naive`` sync).

Not here: tensor or pipeline parallel rollouts (one server per replica, on one node), the
OpenAI-style HTTP endpoint of veRL's servers (mmsr's agent loop speaks token-in/token-out only).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray  # type: ignore[import-not-found, unused-ignore]
import torch
from verl.workers.rollout.base import BaseRollout
from verl.workers.rollout.replica import RolloutReplica, TokenOutput

from mmsr.integrations.verl.launch import SYNC_LOG_ENV

BATCH_WAIT_S = 0.02
"""How long the server waits after a first request for the others of its batch."""


def server_name(replica_rank: int) -> str:
    """The Ray actor name of a replica's server (the adapter finds it by this name)."""
    return f"mmsr_cpu_server_{replica_rank}"


@dataclass
class _Request:
    prompt_ids: list[int]
    images: list[Any]
    max_tokens: int
    sampling: tuple[float, float]  # temperature, top_p
    done: asyncio.Future[TokenOutput]


class CpuRolloutServer:
    """One replica's rollout server (a Ray actor); see the module docstring."""

    def __init__(self, config: Any, model_config: Any, replica_rank: int) -> None:
        from mmsr.integrations.verl.agent_loop import image_processor_of
        from mmsr.integrations.verl.processor import cpu_processor
        from mmsr.models.io import load_model
        from mmsr.policy.local_model import build_hf_policy

        folder = getattr(model_config, "local_path", None) or model_config.path
        torch.set_num_threads(max(1, int(os.environ.get("MMSR_VERL_ROLLOUT_THREADS", "1"))))
        model, tokenizer, _ = load_model(folder)
        images = image_processor_of(cpu_processor(folder))
        self.policy, _ = build_hf_policy(model, tokenizer, images, temperature=1.0)
        self.model = model
        self.config = config
        self.replica_rank = replica_rank
        self.global_steps: int | None = None
        self.random = random.Random(int(getattr(config, "seed", 0) or 0) + replica_rank)
        self.pending: list[_Request] = []
        self.worker: asyncio.Task[None] | None = None

    async def generate(
        self,
        prompt_ids: list[int],
        sampling_params: dict[str, Any],
        request_id: str,
        image_data: list[Any] | None = None,
        video_data: list[Any] | None = None,
        **kwargs: Any,
    ) -> TokenOutput:
        if video_data:
            raise ValueError("the CPU rollout serves images, not videos")
        loop = asyncio.get_running_loop()
        sampling = (
            float(sampling_params.get("temperature", 1.0)),
            float(sampling_params.get("top_p", 1.0)),
        )
        request = _Request(
            list(prompt_ids),
            list(image_data or []),
            int(sampling_params.get("max_tokens") or self.config.response_length),
            sampling,
            loop.create_future(),
        )
        self.pending.append(request)
        if self.worker is None or self.worker.done():
            self.worker = asyncio.create_task(self._serve())
        return await request.done

    async def _serve(self) -> None:
        while self.pending:
            await asyncio.sleep(BATCH_WAIT_S)
            batch, self.pending = self.pending, []
            for sampling in dict.fromkeys(r.sampling for r in batch):
                group = [r for r in batch if r.sampling == sampling]
                try:
                    outputs = await asyncio.to_thread(self._sample, group, sampling)
                except Exception as err:  # each waiting trajectory gets the error
                    for r in group:
                        r.done.set_exception(err)
                    continue
                for r, out in zip(group, outputs, strict=True):
                    r.done.set_result(out)

    def _sample(self, group: list[_Request], sampling: tuple[float, float]) -> list[TokenOutput]:
        from mmsr.policy import GenerationRequest

        self.policy.temperature, self.policy.top_p = sampling
        requests = [
            GenerationRequest(
                turns=(),
                prompt_ids=tuple(r.prompt_ids),
                images=tuple(r.images),
                max_new_tokens=r.max_tokens,
                seed=self.random.randrange(2**31),
            )
            for r in group
        ]
        extra = {"global_steps": self.global_steps}
        return [
            TokenOutput(
                token_ids=list(g.token_ids),
                log_probs=list(g.logprobs),
                stop_reason="completed",
                extra_fields=dict(extra),
            )
            for g in self.policy.generate(requests)
        ]

    @torch.no_grad()
    def update_weights(
        self, weights: dict[str, torch.Tensor], global_steps: int | None = None
    ) -> dict[str, Any]:
        """Load the actor's weights (HF names); the sync's record."""
        params = self.model.state_dict()
        unknown = sorted(set(weights) - set(params))
        if unknown:
            raise ValueError(f"weights the rollout model does not have: {unknown[:5]}")
        change = sum(
            float((weights[name].to(params[name].dtype) - params[name]).abs().sum())
            for name in weights
        )
        self.model.load_state_dict(weights, strict=False)
        self.global_steps = global_steps
        record = {
            "step": global_steps,
            "tensors": len(weights),
            "abs_change": change,
            "time": time.time(),
        }
        log = os.environ.get(SYNC_LOG_ENV)
        if log:
            with Path(log).open("a") as f:
                f.write(json.dumps(record) + "\n")
        return record

    async def wake_up(self, tags: list[str] | None = None) -> None:
        pass

    async def sleep(self) -> None:
        pass

    async def clear_kv_cache(self) -> None:
        pass

    async def release_kv_cache(self) -> None:
        pass

    async def resume_kv_cache(self) -> None:
        pass

    async def abort_all_requests(self, **kwargs: Any) -> dict[str, Any]:
        return {"aborted_count": 0, "request_ids": []}

    async def resume_generation(self) -> None:
        pass

    async def set_global_steps(self, global_steps: int) -> None:
        self.global_steps = global_steps

    async def wait_for_requests_to_drain(self) -> None:
        while self.pending or (self.worker is not None and not self.worker.done()):
            await asyncio.sleep(BATCH_WAIT_S)

    async def start_profile(self, **kwargs: Any) -> None:
        pass

    async def stop_profile(self) -> None:
        pass


class CpuRolloutReplica(RolloutReplica):  # type: ignore[misc]
    """veRL's rollout replica on the CPU: one ``CpuRolloutServer`` actor."""

    async def launch_servers(self) -> None:
        if self.world_size != 1:
            raise ValueError(
                "the CPU rollout has no tensor or pipeline parallelism: set "
                "rollout.tensor_model_parallel_size=1 (and data/pipeline parallel sizes 1)"
            )
        from ray.util.scheduling_strategies import (  # type: ignore[import-not-found, unused-ignore]
            NodeAffinitySchedulingStrategy,
        )

        node = await self.workers[0].__ray_call__.remote(
            lambda worker: ray.get_runtime_context().get_node_id()
        )
        name = server_name(self.replica_rank)
        server = (
            ray.remote(CpuRolloutServer)
            .options(
                name=name,
                num_cpus=0,
                max_concurrency=self.max_concurrency,
                scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=node, soft=False),
            )
            .remote(
                config=self.config, model_config=self.model_config, replica_rank=self.replica_rank
            )
        )
        self.servers = [server]
        self._server_handle = server
        self._server_address = name


def _full(tensor: torch.Tensor) -> torch.Tensor:
    full = getattr(tensor, "full_tensor", None)  # an FSDP2 shard
    whole = full() if callable(full) else tensor
    return whole.detach().to("cpu", copy=True)


class CpuServerAdapter(BaseRollout):  # type: ignore[misc]
    """The trainer worker's client of its replica's ``CpuRolloutServer``."""

    def __init__(
        self, config: Any, model_config: Any, device_mesh: Any, replica_rank: int = -1
    ) -> None:
        super().__init__(config, model_config, device_mesh)
        c = self.config
        size = c.tensor_model_parallel_size * c.data_parallel_size
        size *= c.pipeline_model_parallel_size
        rank = int(os.environ.get("RANK", "0"))
        self.replica_rank = rank // size if replica_rank == -1 else replica_rank
        self.rollout_rank = rank % size
        self.is_leader_rank = self.rollout_rank == 0
        self.server: Any = None

    async def resume(self, tags: list[str]) -> None:
        pass

    async def release(self) -> None:
        pass

    async def update_weights(
        self,
        weights: Iterable[tuple[str, torch.Tensor]],
        wire_format: str = "named_tensors",
        **kwargs: Any,
    ) -> None:
        if wire_format != "named_tensors":
            raise ValueError(f"the CPU rollout takes whole named tensors, not {wire_format!r}")
        state = {name: _full(tensor) for name, tensor in weights}  # every rank gathers
        if not self.is_leader_rank:
            return
        if self.server is None:
            self.server = ray.get_actor(server_name(self.replica_rank))
        await self.server.update_weights.remote(state, kwargs.get("global_steps"))
