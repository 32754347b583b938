"""mmsr's search protocol as a veRL agent loop (``AgentLoopBase``); imports verl.

``MmsrSearchAgentLoop.run`` rolls out one dataset row with ``mmsr.integrations.verl.episode``:
mmsr's tag protocol and limits (not veRL's JSON tool calls), token-in/token-out through veRL's
server manager, the tool turns laid out by mmsr's ``ChatEncoder`` with their thumbnails as
images, ``response_mask`` 1 on generated ids only. Its ``extra_fields`` carry the assistant
turns, actions, tool calls, end reason and gold answers for ``reward.compute_score``.

Registered for veRL by ``agent_loops.yaml`` (``actor_rollout_ref.rollout.agent
.agent_loop_config_path``); its keys beside ``name`` and ``_target_`` are this class's options:
``search`` (e.g. ``http:http://search-host:8000`` for the mmsr search service), ``prompt_set``
and the fields of ``RolloutLimits`` (``max_turns: 2``; unset ones: ``episode.VERL_LIMITS``).
"""

from __future__ import annotations

import io
import json
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from uuid import uuid4

from PIL import Image
from verl.experimental.agent_loop.agent_loop import (
    AgentLoopBase,
    AgentLoopMetrics,
    AgentLoopOutput,
)

from mmsr.integrations.verl.episode import EpisodeSetup, Sampled, loop_limits, run_episode
from mmsr.models.chat_encoder import ChatEncoder
from mmsr.models.image_processor import ImageProcessor, ImageProcessorConfig
from mmsr.models.tokenizer import (
    ENDOFTEXT,
    IM_END,
    suppressed_token_ids,
    text_decoder,
    token_id,
)
from mmsr.policy.local_model import ChatTurnEncoder
from mmsr.protocol.prompts import PromptSet, default_prompt_set, load_prompt_set
from mmsr.rollout.settings import LIMIT_FIELDS
from mmsr.search.base import SearchBackends
from mmsr.search.registry import build_search, search_config_from_spec

AGENT_NAME = "mmsr_search"
IMAGE_TOKEN = "<image>"  # veRL's placeholder in the dataset's prompt text


def image_processor_of(processor: Any) -> ImageProcessor:
    """mmsr's image processor with the settings of veRL's Qwen2-VL processor, so both count
    the same pad tokens for every image."""
    ip = processor.image_processor
    size = getattr(ip, "size", None) or {}
    return ImageProcessor(
        ImageProcessorConfig(
            fixed_size=None,
            min_pixels=int(getattr(ip, "min_pixels", None) or size["shortest_edge"]),
            max_pixels=int(getattr(ip, "max_pixels", None) or size["longest_edge"]),
            patch_size=int(ip.patch_size),
            merge_size=int(ip.merge_size),
            temporal_patch_size=int(ip.temporal_patch_size),
            image_mean=tuple(ip.image_mean),
            image_std=tuple(ip.image_std),
        )
    )


@dataclass(frozen=True)
class _Shared:
    """What every loop of one worker process shares (a loop is built per trajectory)."""

    encoder: ChatTurnEncoder
    images: ImageProcessor
    end_ids: frozenset[int]
    decode: Callable[[Sequence[int]], str]


_SHARED: dict[tuple[int, int], _Shared] = {}
_TOOLS: dict[str, SearchBackends] = {}
_LOCK = threading.Lock()


def _shared(tokenizer: Any, processor: Any) -> _Shared:
    with _LOCK:
        key = (id(tokenizer), id(processor))
        if key not in _SHARED:
            images = image_processor_of(processor)
            encoder = ChatTurnEncoder(
                ChatEncoder(tokenizer, images), frozenset(suppressed_token_ids(tokenizer))
            )
            ends = frozenset({token_id(tokenizer, IM_END), token_id(tokenizer, ENDOFTEXT)})
            _SHARED[key] = _Shared(encoder, images, ends, text_decoder(tokenizer))
        return _SHARED[key]


def _tools(search: str) -> SearchBackends:
    """The search tools of a spec (``local:DIR``, ``http:URL``, a config file, ``none``), built
    once per process: the HTTP client and the Redis cache are shared by all loops."""
    with _LOCK:
        if search not in _TOOLS:
            config = search_config_from_spec(search)
            _TOOLS[search] = build_search(config) if config else SearchBackends(None, None)
        return _TOOLS[search]


def _open(image: Any) -> Any:
    if isinstance(image, Mapping):
        image = image.get("image") or image.get("bytes") or image.get("path")
    if isinstance(image, bytes | bytearray):
        return Image.open(io.BytesIO(image))
    if isinstance(image, str):
        return Image.open(image)
    return image


def question_and_image(messages: Sequence[Mapping[str, Any]]) -> tuple[str, Any]:
    """The question text and its image from veRL's ``raw_prompt`` (the last user message)."""
    user = [m for m in messages if m.get("role") == "user"]
    if not user:
        raise ValueError("raw_prompt has no user message")
    content = user[-1]["content"]
    parts = [{"type": "text", "text": content}] if isinstance(content, str) else list(content)
    text = "".join(str(p.get("text", "")) for p in parts if p.get("type") == "text")
    images = [_open(p) for p in parts if p.get("type") == "image"]
    if len(images) != 1:
        raise ValueError(f"an mmsr question has one image, this one has {len(images)}")
    return text.replace(IMAGE_TOKEN, "").strip(), images[0]


def golds_of_row(reward_model: Mapping[str, Any] | None) -> list[str]:
    """The row's candidate answers (a JSON string in FVQA's layout), else its ground truth."""
    if not reward_model:
        return []
    candidates = reward_model.get("candidate_answers")
    if isinstance(candidates, str) and candidates:
        parsed = json.loads(candidates)
        if isinstance(parsed, list) and parsed:
            return [str(g) for g in parsed]
    truth = reward_model.get("ground_truth")
    return [] if truth is None else [str(truth)]


class MmsrSearchAgentLoop(AgentLoopBase):  # type: ignore[misc, unused-ignore]
    """One rollout of mmsr's protocol per call of ``run`` (a veRL agent loop)."""

    def __init__(
        self,
        *args: Any,
        search: str = "none",
        prompt_set: str | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs.pop("name", None)  # veRL passes the registry entry's name along
        options = {k: kwargs.pop(k) for k in LIMIT_FIELDS if k in kwargs}
        super().__init__(*args, **kwargs)
        if self.processor is None:
            raise ValueError("mmsr's agent loop needs a vision-language model with a processor")
        self.shared = _shared(self.tokenizer, self.processor)
        self.search = search
        self.prompts: PromptSet = default_prompt_set()
        if prompt_set:  # a folder of prompt files, e.g. the ones another model was trained with
            self.prompts = load_prompt_set(prompt_set)
        self.limits = loop_limits(options)

    def _setup(self) -> EpisodeSetup:
        return EpisodeSetup(
            encoder=self.shared.encoder,
            decode=self.shared.decode,
            end_ids=self.shared.end_ids,
            tools=_tools(self.search),
            prompts=self.prompts,
            limits=self.limits,
            response_length=int(self.rollout_config.response_length),
            prompt_length=int(self.rollout_config.prompt_length),
        )

    async def run(self, sampling_params: dict[str, Any], **kwargs: Any) -> AgentLoopOutput:
        question, image = question_and_image(kwargs["raw_prompt"])
        image = self.shared.images.prepare(image)  # what the server and the trainer both see
        if kwargs.get("data_id") is not None:  # the fvqa backend looks its hits up by data_id
            image.info["data_id"] = str(kwargs["data_id"])
        prepared: dict[int, Any] = {}
        request_id = uuid4().hex  # one id per trajectory: the server keeps its prefix cached
        timing = {"generate_sequences": 0.0}

        async def generate(ids: list[int], images: list[Any], max_tokens: int) -> Sampled:
            for i in images:
                if id(i) not in prepared:
                    prepared[id(i)] = self.shared.images.prepare(i)
            sent = [prepared[id(i)] for i in images]
            start = time.perf_counter()
            out = await self.server_manager.generate(
                request_id=request_id,
                prompt_ids=ids,
                sampling_params={**sampling_params, "max_tokens": max_tokens},
                image_data=sent or None,
            )
            timing["generate_sequences"] += time.perf_counter() - start
            logprobs = tuple(out.log_probs) if out.log_probs else None
            return Sampled(tuple(out.token_ids), logprobs)

        episode = await run_episode(question, image, generate, self._setup())
        images = [prepared.get(id(i), i) for i in episode.images]
        metrics = AgentLoopMetrics(
            generate_sequences=timing["generate_sequences"],
            tool_calls=sum(call.latency_s for call in episode.tool_calls),
        )
        extra = episode.extra_fields() | {
            "mmsr_golds": golds_of_row(kwargs.get("reward_model")),
            "turn_scores": [],  # the keys veRL's own loops always set
            "tool_rewards": [],
        }
        logprobs = episode.response_logprobs if sampling_params.get("logprobs") else None
        return AgentLoopOutput(
            prompt_ids=episode.prompt_ids,
            response_ids=episode.response_ids,
            response_mask=episode.response_mask,
            response_logprobs=logprobs,
            multi_modal_data={"images": images},
            num_turns=len(episode.turns),
            metrics=metrics,
            extra_fields=extra,
        )
