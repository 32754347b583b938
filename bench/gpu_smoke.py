"""GPU smoke run: two GRPO steps of a randomly initialised Qwen2.5-VL of the 3B shape, with hf
rollouts and with colocated vLLM rollouts.

    python bench/gpu_smoke.py                      # on a machine with CUDA, no network needed
    python bench/gpu_smoke.py --steps 2 --max-new-tokens 256 --rollout hf

Builds ``Qwen2_5_VLForConditionalGeneration`` from ``mmsr.models.shapes.SHAPES["qwen2.5-vl-3b"]``
(the real shape, random weights: nothing is downloaded) on ``cuda`` as the
``qwen2.5-vl-3b-1gpu`` preset trains it — float32 master weights, bf16 autocast, sdpa,
gradient checkpointing, a bf16 reference — with a tokenizer trained in-process (its ids sit at
the bottom of the real 151,936-id vocabulary; the special ids are set to ours), 448-px
question images (256 visual tokens), scripted search tools and a synthetic reward (a random
model never answers, so the real reward would give zero-variance groups and no update). The
checkpoint at the end is skipped (15 GB of random weights). The vLLM variant
(``rollout.backend: vllm``, the ``gpu`` extra) trains the same way while a colocated engine,
started on a folder with the model's config, tokenizer and processor only (dummy weights; the
trainer's are pushed before the first rollout and after every step), samples. Prints one JSON
line last: per backend step time, rollout tokens/s, peak GPU memory (torch's allocator; vLLM's
sleep-mode pool may sit outside it, so the device's used memory is given too) and the memory
plan's estimate, then the vLLM/hf ratios of rollout tokens/s and step time. Without vLLM the
vLLM entry holds the reason it did not run.

Without CUDA it exits with a clear message (exit code 2). ``run_smoke`` takes any shape and
device, so a CPU test runs it on a shrunken shape.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


class ScriptedTools:
    """Image and text search that always return the same hits (no index, no network)."""

    def __init__(self, image: Any) -> None:
        self.image = image

    def search(self, query: Any, k: int, question: str | None = None) -> list[Any]:
        from mmsr.types import ImageHit, TextHit

        if isinstance(query, str):
            return [TextHit(f"Page {i}", f"u{i}", "A summary of the page. " * 8) for i in range(k)]
        return [ImageHit(f"Title {i}", f"u{i}", self.image) for i in range(k)]


def _synthetic_reward(turns: Any, golds: Any, **_: Any) -> Any:
    """Share of even characters in the rollout's text: varies within a group, so updates happen."""
    from mmsr.types import RewardBreakdown

    text = "".join(turns)
    score = sum(ord(c) % 2 == 0 for c in text) / max(len(text), 1)
    return RewardBreakdown(score=score, accuracy=0.0, format_score=0.0, search_count=0, answer=None)


def _png(side: int, seed: int) -> bytes:
    import numpy as np
    from PIL import Image

    pixels = np.random.default_rng(seed).integers(0, 255, (side, side, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def build_model(shape: dict[str, Any], tokenizer: Any, device: str) -> Any:
    """A random float32 Qwen2.5-VL of ``shape`` on ``device``, with the tokenizer's special ids."""
    import torch
    import transformers

    from mmsr.models.config import special_token_ids

    ids = special_token_ids(tokenizer)
    if shape["vocab_size"] < len(tokenizer):
        raise ValueError("the shape's vocabulary is smaller than the tokenizer's")
    config = transformers.Qwen2_5_VLConfig(**{**shape, **ids}, attn_implementation="sdpa")
    torch.manual_seed(0)
    with torch.device(device):
        model = transformers.Qwen2_5_VLForConditionalGeneration(config)
    return model.train(False)


def engine_folder(model: Any, tokenizer: Any, processor: Any, folder: Path) -> Path:
    """What a vLLM engine with dummy weights reads: config, tokenizer, processor (no weights)."""
    folder.mkdir(parents=True, exist_ok=True)
    model.config.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def run_smoke(
    shape: dict[str, Any],
    device: str,
    out: Path,
    *,
    steps: int = 2,
    prompts: int = 2,
    group: int = 8,
    max_new_tokens: int = 128,
    image_side: int = 448,
    backend: str = "hf",
    vllm_memory: float = 0.25,
) -> dict[str, Any]:
    """Two (``steps``) GRPO steps as the 3B preset runs them, rollouts by ``backend`` (hf or
    vllm, a share ``vllm_memory`` of the GPU for the engine); returns the figures."""
    import torch

    from mmsr.models import train_tokenizer
    from mmsr.models.image_processor import ImageProcessor, ImageProcessorConfig
    from mmsr.search.base import SearchBackends
    from mmsr.train import grpo
    from mmsr.train.grpo_config import load_grpo_config
    from mmsr.train.grpo_setup import tokenizer_texts
    from mmsr.train.memory import GIB, grpo_memory_plan
    from mmsr.types import Sample

    samples = [
        Sample(f"q{i}", "Which country's flag is this?", "France", image=_png(image_side, i))
        for i in range(prompts)
    ]
    tokenizer = train_tokenizer(tokenizer_texts(samples, []), vocab_size=2000)
    model = build_model(shape, tokenizer, device)
    reference = build_model(shape, tokenizer, device).to(torch.bfloat16).requires_grad_(False)
    reference.load_state_dict(model.state_dict())
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    pixels = image_side * image_side
    processor = ImageProcessor(
        ImageProcessorConfig(fixed_size=image_side, min_pixels=pixels, max_pixels=pixels)
    )
    from PIL import Image

    tools = ScriptedTools(Image.open(io.BytesIO(_png(224, 99))).convert("RGB"))
    overrides = [
        f"--run.steps={steps}",
        f"--algo.prompts_per_step={prompts}",
        f"--algo.group_size={group}",
        f"--limits.max_new_tokens={max_new_tokens}",
        f"--model.device={device}",
        "--run.save_every=0",
        "--run.sample_every=0",
        "--run.progress=false",
        "--run.tensorboard=false",
        "--run.threads=0",
        f"--rollout.backend={backend}",
        f"--rollout.vllm_memory={vllm_memory}",
    ]
    cfg = load_grpo_config("qwen2.5-vl-3b-1gpu", overrides)
    source = (
        engine_folder(model, tokenizer, processor, out / "engine") if backend == "vllm" else None
    )
    parts = grpo.GRPOParts(
        model,
        reference,
        tokenizer,
        processor,
        samples,
        SearchBackends(image=tools, text=tools),
        source=source,
    )
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    originals = grpo.score_trajectory, grpo.save_checkpoint
    grpo.score_trajectory = _synthetic_reward  # type: ignore[assignment]
    grpo.save_checkpoint = lambda *args, **kwargs: None  # type: ignore[assignment]
    start = time.perf_counter()
    try:
        grpo.train_grpo(cfg, parts, out)
    finally:
        grpo.score_trajectory, grpo.save_checkpoint = originals
    total = time.perf_counter() - start
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    rollouts = prompts * group
    tokens = sum(r["rollout/generated_tokens"] * rollouts for r in rows)
    plan, _ = grpo_memory_plan(cfg)
    free, total = torch.cuda.mem_get_info(device) if cuda else (0, 0)
    return {
        "device": torch.cuda.get_device_name(device) if cuda else device,
        "backend": backend,
        "steps": steps,
        "rollouts_per_step": rollouts,
        "step_s": [round(r["perf/step_s"], 2) for r in rows],
        "rollout_s": [round(r["perf/rollout_s"], 2) for r in rows],
        "update_s": [round(r["perf/update_s"], 2) for r in rows],
        "rollout_tokens_per_s": round(tokens / sum(r["perf/rollout_s"] for r in rows), 1),
        "peak_memory_gib": round(torch.cuda.max_memory_allocated(device) / GIB, 2)
        if cuda
        else None,
        "device_used_gib_at_end": round((total - free) / GIB, 2) if cuda else None,
        "estimated_peak_gib": round(plan.peak / GIB, 2),
        "loss_finite": all(r["loss/total"] == r["loss/total"] for r in rows),
        "total_s": round(total, 1),
    }


def ratios(hf: dict[str, Any], vllm: dict[str, Any]) -> dict[str, float] | None:
    """vLLM over hf: rollout tokens/s and the last step's time (None when either is missing)."""
    if "rollout_tokens_per_s" not in hf or "rollout_tokens_per_s" not in vllm:
        return None
    return {
        "rollout_tokens_per_s": round(vllm["rollout_tokens_per_s"] / hf["rollout_tokens_per_s"], 3),
        "step_s": round(vllm["step_s"][-1] / hf["step_s"][-1], 3),
        "rollout_s": round(vllm["rollout_s"][-1] / hf["rollout_s"][-1], 3),
    }


def _run_backend(backend: str, args: argparse.Namespace) -> dict[str, Any]:
    import gc

    import torch

    from mmsr.models.shapes import SHAPES

    if backend == "vllm":
        try:
            import vllm  # noqa: F401
        except ImportError as err:
            return {"backend": "vllm", "error": f"not run: {err} (pip install -e '.[gpu]')"}
    with tempfile.TemporaryDirectory() as tmp:
        figures = run_smoke(
            SHAPES["qwen2.5-vl-3b"],
            "cuda",
            Path(tmp),
            steps=args.steps,
            prompts=args.prompts,
            group=args.group,
            max_new_tokens=args.max_new_tokens,
            backend=backend,
            vllm_memory=args.vllm_memory,
        )
    gc.collect()
    torch.cuda.empty_cache()
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--prompts", type=int, default=2, help="questions per step")
    parser.add_argument("--group", type=int, default=8, help="rollouts per question")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--rollout", choices=["hf", "vllm", "both"], default="both")
    parser.add_argument(
        "--vllm-memory", type=float, default=0.25, help="the engine's share of the GPU"
    )
    args = parser.parse_args()
    import torch

    if not torch.cuda.is_available():
        print("gpu_smoke: no CUDA device is visible here; run it on a machine with a GPU")
        return 2
    backends = ["hf", "vllm"] if args.rollout == "both" else [args.rollout]
    results: dict[str, Any] = {}
    for backend in backends:
        try:
            results[backend] = _run_backend(backend, args)
        except Exception as err:  # the other backend's figures still print
            traceback.print_exc()
            results[backend] = {"backend": backend, "error": f"failed: {err!r}"}
    if len(backends) == 2:
        results["vllm_over_hf"] = ratios(results["hf"], results["vllm"])
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
