"""mmsr's veRL agent loop driven by a fake server manager, then veRL's own post-processing.

Skipped without the ``verl`` extra. The server manager returns scripted token outputs; the
processor is Qwen2.5-VL's, built on transformers' PIL image processor (the stock one needs
torchvision, absent beside the CPU torch wheel).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

agent_loop_module = pytest.importorskip(
    "verl.experimental.agent_loop.agent_loop", reason="needs the verl extra: pip install mmsr[verl]"
)

import hydra  # noqa: E402
import tiny_models  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import (  # noqa: E402
    Qwen2VLImageProcessorPil,
)
from verl.utils.dataset.rl_dataset import RLHFDataset  # noqa: E402
from verl.workers.rollout.replica import TokenOutput  # noqa: E402
from verl_scripts import (  # noqa: E402
    ANSWER,
    IMAGE_CONFIG,
    IMG,
    QUESTION,
    TXT,
    Pages,
    Thumbs,
    reply_ids,
    segments,
    turn_encoder,
)

from mmsr.integrations.verl import agent_loop as mmsr_loop  # noqa: E402
from mmsr.integrations.verl.processor import pil_processor  # noqa: E402
from mmsr.integrations.verl.reward import compute_score  # noqa: E402
from mmsr.search.base import SearchBackends  # noqa: E402

ENCODER = turn_encoder()
PROMPT_LENGTH, RESPONSE_LENGTH = 512, 1024


def _processor() -> Any:
    """Qwen2.5-VL's processor without a video processor (it needs torchvision)."""
    c = IMAGE_CONFIG
    images = Qwen2VLImageProcessorPil(
        min_pixels=c.min_pixels, max_pixels=c.max_pixels, patch_size=14, merge_size=2
    )
    return pil_processor(images, tiny_models.tokenizer(), chat_template="unused")


class FakeServerManager:
    """veRL's server manager as the loop sees it: ``generate`` returns scripted token outputs."""

    def __init__(self, replies: Sequence[list[int]]) -> None:
        self.replies = list(replies)
        self.calls: list[dict[str, Any]] = []

    async def generate(self, request_id: str, *, prompt_ids: list[int], **kw: Any) -> TokenOutput:
        self.calls.append({"request_id": request_id, "prompt_ids": list(prompt_ids), **kw})
        ids = self.replies[len(self.calls) - 1][: kw["sampling_params"]["max_tokens"]]
        return TokenOutput(token_ids=ids, log_probs=[-0.5] * len(ids))


def _row() -> dict[str, Any]:
    """One dataset row as veRL's RLHFDataset hands it to an agent loop."""
    content = [{"type": "image", "image": tiny_models.image()}, {"type": "text", "text": QUESTION}]
    return {
        "raw_prompt": [{"role": "user", "content": content}],
        "reward_model": {
            "ground_truth": "Paris",
            "candidate_answers": json.dumps(["Paris", "Lutetia"]),
            "style": "rule",
        },
        "data_id": "q1",
        "extra_info": {"index": 0, "data_id": "q1", "split": "train", "labels": "{}"},
    }


async def _run(
    replies: Sequence[list[int]],
    response_length: int = RESPONSE_LENGTH,
    entry: Any = None,
) -> Any:
    """Build the loop as veRL's AgentLoopWorker does (hydra.utils.instantiate of its registry
    entry, with the worker's keyword arguments) and run it on one row."""
    config = OmegaConf.create(
        {
            "actor_rollout_ref": {
                "rollout": {"prompt_length": PROMPT_LENGTH, "response_length": response_length}
            },
            "data": {},
        }
    )
    server = FakeServerManager(replies)
    if entry is None:
        entry = {"name": mmsr_loop.AGENT_NAME, "search": "test-tools"}
        entry["_target_"] = "mmsr.integrations.verl.agent_loop.MmsrSearchAgentLoop"
    loop = hydra.utils.instantiate(
        config=OmegaConf.create(entry),
        trainer_config=agent_loop_module.DictConfigWrap(config),
        server_manager=server,
        tokenizer=tiny_models.tokenizer(),
        processor=_processor(),
        hf_model_type="qwen2_5_vl",
        dataset_cls=RLHFDataset,
        data_config=agent_loop_module.DictConfigWrap(config.data),
        tools=agent_loop_module.ToolListWrap([]),
    )
    assert isinstance(loop, mmsr_loop.MmsrSearchAgentLoop)
    output = await loop.run({"temperature": 1.0, "logprobs": True}, **_row())
    return output, server


@pytest.fixture(autouse=True)
def _tools(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(mmsr_loop._TOOLS, "test-tools", SearchBackends(Thumbs(), Pages()))


def _worker(response_length: int = RESPONSE_LENGTH) -> Any:
    """An AgentLoopWorker with only what its post-processing reads."""
    worker = agent_loop_module.AgentLoopWorker.__new__(agent_loop_module.AgentLoopWorker)
    worker.rollout_config = SimpleNamespace(
        prompt_length=PROMPT_LENGTH, response_length=response_length
    )
    worker.tokenizer, worker.processor = tiny_models.tokenizer(), _processor()
    worker.mm_processor_kwargs, worker.reward_loop_worker_handles = {}, None
    worker.distillation_enabled = False
    return worker


def test_search_search_answer_through_verl_postprocessing() -> None:
    replies = [reply_ids(ENCODER, t) for t in (IMG, TXT, ANSWER)]
    output, server = asyncio.run(_run(replies))
    # token-in/token-out: each request is the ids so far, one sticky id per trajectory
    assert len({c["request_id"] for c in server.calls}) == 1
    full = output.prompt_ids + output.response_ids
    assert server.calls[2]["prompt_ids"] == full[: -len(replies[2])]
    assert [len(c["image_data"]) for c in server.calls] == [1, 3, 3]
    generated = [i for i, m in zip(output.response_ids, output.response_mask, strict=True) if m]
    assert generated == [i for r in replies for i in r]
    assert [m for m, _ in segments(output.response_mask)] == [1, 0, 1, 0, 1]
    assert output.response_logprobs[: len(replies[0])] == [-0.5] * len(replies[0])
    assert output.extra_fields["mmsr_turns"] == [IMG, TXT, ANSWER]
    assert output.extra_fields["mmsr_golds"] == ["Paris", "Lutetia"]
    assert output.extra_fields["mmsr_end_reason"] == "answered"
    assert output.num_turns == 6

    # veRL's own post-processing: padding, masks and the processor's image features
    internal = asyncio.run(_worker()._agent_loop_postprocess(output, False, **_row()))
    mask = internal.response_mask[0].tolist()
    assert mask == output.response_mask + [0] * (RESPONSE_LENGTH - len(output.response_mask))
    grid = internal.multi_modal_inputs["image_grid_thw"]
    per_image = (grid.prod(dim=-1) // 4).tolist()
    pad = ENCODER.encoder.image_pad_id
    runs = [n for v, n in segments([int(i == pad) for i in full]) if v == 1]
    assert runs == per_image and len(per_image) == 3  # the images in placeholder order
    assert internal.input_ids[0].tolist().count(pad) == sum(per_image)

    # the reward hook, with extra_info merged as veRL's reward managers do
    extra_info = _row()["extra_info"] | internal.extra_fields
    score = compute_score("fvqa", "", "Paris", extra_info)
    assert score["score"] == pytest.approx(0.91) and score["search_count"] == 2


def test_search_in_last_turn_and_a_tool_turn_that_does_not_fit() -> None:
    replies = [reply_ids(ENCODER, t) for t in (IMG, TXT, TXT)]
    output, _ = asyncio.run(_run(replies))
    assert output.extra_fields["mmsr_end_reason"] == "search_in_last_turn"
    assert output.response_mask[-len(replies[2]) :] == [1] * len(replies[2])
    # room for the image search turn, not for its results: the rollout ends before them
    output, server = asyncio.run(_run(replies, response_length=len(replies[0]) + 8))
    assert output.extra_fields["mmsr_end_reason"] == "context_full"
    assert output.response_ids == replies[0] and len(output.multi_modal_data["images"]) == 1
    assert len(server.calls) == 1


def test_a_row_of_verls_own_dataset_from_an_exported_parquet(tmp_path: Any) -> None:
    import io

    from mmsr.data.export import write_verl_parquet
    from mmsr.types import Sample

    buf = io.BytesIO()
    tiny_models.image(size=(224, 224)).save(buf, format="JPEG")
    sample = Sample("q7", QUESTION, "Paris", ("Lutetia",), buf.getvalue(), source="world")
    path = tmp_path / "train.parquet"
    write_verl_parquet([sample], path, image_token="<image>")
    # as veRL's data config does by default (its length filter needs qwen_vl_utils)
    data_config = {"max_prompt_length": PROMPT_LENGTH, "filter_overlong_prompts": False}
    data_config["cache_dir"] = str(tmp_path / "cache")
    dataset = RLHFDataset(
        data_files=[str(path)],
        tokenizer=tiny_models.tokenizer(),
        config=OmegaConf.create(data_config),
        processor=_processor(),
    )
    row = dataset[0]
    question, image = mmsr_loop.question_and_image(row["raw_prompt"])
    assert question == QUESTION and image.size == (224, 224)
    assert mmsr_loop.golds_of_row(row["reward_model"]) == ["Paris", "Lutetia"]
    assert row["data_id"] == "q7"


def test_the_launchers_registry_entry_builds_the_loop(tmp_path: Any) -> None:
    from mmsr.integrations.verl.launch import VerlRun, agent_loop_entries

    (entry,) = agent_loop_entries(VerlRun("d", "m", tmp_path, search="test-tools"))
    (tmp_path / "agent_loops.yaml").write_text(yaml.safe_dump([entry]))
    (loaded,) = OmegaConf.load(tmp_path / "agent_loops.yaml")  # as AgentLoopWorker reads it
    replies = [reply_ids(ENCODER, ANSWER)]
    output, _ = asyncio.run(_run(replies, entry=loaded))
    assert output.extra_fields["mmsr_turns"] == [ANSWER]


def test_position_ids_are_3d_mrope_with_the_rope_index_bound() -> None:
    """veRL computes M-RoPE ids only with ``get_rope_index`` bound to its processor (what
    ``mmsr.integrations.verl.processor`` does); without it they are 1-D."""
    from transformers import Qwen2_5_VLConfig

    from mmsr.integrations.verl.processor import bind_rope_index

    replies = [reply_ids(ENCODER, t) for t in (IMG, ANSWER)]
    output, _ = asyncio.run(_run(replies))
    worker = _worker()
    plain = asyncio.run(worker._agent_loop_postprocess(output, False, **_row()))
    assert plain.position_ids.dim() == 2  # (1, L): text positions on every axis
    worker.processor = bind_rope_index(_processor(), Qwen2_5_VLConfig())
    internal = asyncio.run(worker._agent_loop_postprocess(output, False, **_row()))
    ids = internal.input_ids[0]
    length = PROMPT_LENGTH + RESPONSE_LENGTH
    assert tuple(internal.position_ids.shape) == (1, 4, length)  # text, then (t, h, w)
    text, t, h, w = internal.position_ids[0]
    pads = ids == ENCODER.encoder.image_pad_id
    valid = internal.attention_mask[0].bool()
    # the first image's pads share one time index and spread over a height x width grid
    start = int(pads.int().argmax())
    end = start + int((~pads[start:]).int().argmax())
    first = slice(start, end)
    assert len(set(t[first].tolist())) == 1
    assert len(set(h[first].tolist())) > 1 and len(set(w[first].tolist())) > 1
    # after the images, the three axes agree again and run on as text, behind the plain count
    last = int(valid.nonzero().max())
    assert t[last] == h[last] == w[last] < text[last]
