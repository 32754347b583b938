"""The batched vision tower against transformers' own, on the tiny preset, in one run.

``mmsr.models.vision_batch`` runs the Qwen2.5-VL tower as one batch when the images share a
patch grid (the tiny preset resizes every image to 112 px); transformers' tower calls attention
once per image and window. Both sides run the same randomly initialised tiny model on the same
random pictures, with gradients, as training does; the outputs are checked equal first.

- ``tower``: forward + backward of the tower alone on 64 pictures (``mmsr train vision``'s step);
- ``sft_step``: forward + backward of ``masked_logprobs`` (the SFT loss) on 32 short one-picture
  conversations (the size of a ``decide``/``know`` batch), plain model call against
  ``model_inputs``.

    .venv/bin/python bench/vision_bench.py         # ≈ 1 minute on 2 cores

Prints the medians of ``--repeats`` timings per side; the last line is JSON with the ratios
(plain ÷ batched: above 1 is a gain).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from mmsr.models import PRESETS, ImageProcessor, build_tiny_model, train_tokenizer  # noqa: E402
from mmsr.models.chat_encoder import ChatEncoder  # noqa: E402
from mmsr.models.vision_batch import image_features, model_inputs  # noqa: E402
from mmsr.protocol import default_prompt_set, render_first_turn  # noqa: E402
from mmsr.train.batch import collate, teacher_sequence  # noqa: E402
from mmsr.types import Role, Turn  # noqa: E402


def timed(fn: Callable[[], Any], repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args(argv)
    prompts = default_prompt_set()
    tok = train_tokenizer([prompts.first_turn, "The image shows nothing I know."] * 20, 800)
    model = build_tiny_model("tiny", tok, seed=0).train()
    processor = ImageProcessor(PRESETS["tiny"].image_processor_config())
    rng = np.random.default_rng(0)
    pictures = [
        Image.fromarray(rng.integers(0, 256, (224, 224, 3), dtype=np.uint8)) for _ in range(64)
    ]
    processed = [processor(p) for p in pictures]
    pixels = torch.cat([p.pixel_values for p in processed])
    grid = torch.tensor([p.grid_thw for p in processed])
    visual = model.model.visual

    def tower_plain() -> None:
        visual(pixels, grid_thw=grid).pooler_output.square().sum().backward()

    def tower_batched() -> None:
        image_features(visual, pixels, grid).square().sum().backward()

    merged = visual(pixels, grid_thw=grid).pooler_output
    same = torch.equal(image_features(visual, pixels, grid).reshape(merged.shape), merged)

    encoder = ChatEncoder(tok, processor)
    seqs = [
        teacher_sequence(
            encoder,
            [
                render_first_turn("Which country's flag is this?", pictures[i], prompts),
                Turn(Role.ASSISTANT, "<reason>The image shows nothing I know.</reason>"),
            ],
        )
        for i in range(32)
    ]
    batch = collate(seqs, model, processor, pad_id=0)
    common = {"attention_mask": batch.attention_mask, "position_ids": batch.position_ids}

    def step_plain() -> None:
        out = model(
            input_ids=batch.input_ids,
            pixel_values=batch.pixel_values,
            image_grid_thw=batch.image_grid_thw,
            **common,
        )
        out.logits.float().logsumexp(-1).mean().backward()

    def step_batched() -> None:
        inputs = model_inputs(model, batch.input_ids, batch.pixel_values, batch.image_grid_thw)
        model(**inputs, **common).logits.float().logsumexp(-1).mean().backward()

    figures = {
        "outputs_equal": same,
        "threads": torch.get_num_threads(),
        "tower_plain_s": timed(tower_plain, args.repeats),
        "tower_batched_s": timed(tower_batched, args.repeats),
        "sft_step_plain_s": timed(step_plain, args.repeats),
        "sft_step_batched_s": timed(step_batched, args.repeats),
    }
    figures["tower_ratio"] = figures["tower_plain_s"] / figures["tower_batched_s"]
    figures["sft_step_ratio"] = figures["sft_step_plain_s"] / figures["sft_step_batched_s"]
    for name in ("tower", "sft_step"):
        print(
            f"{name}: transformers {figures[f'{name}_plain_s']:.3f} s, batched "
            f"{figures[f'{name}_batched_s']:.3f} s, ratio {figures[f'{name}_ratio']:.2f}"
        )
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
