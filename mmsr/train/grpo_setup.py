"""Everything ``train_grpo`` needs, built from a ``GRPOConfig``: model, reference, data, search.

The model comes from ``model.path`` (the SFT warm start, or a real Qwen2.5-VL folder). Without
a path a random tiny model is built, with a tokenizer trained on the training questions, the
protocol's prompts and the world's vocabulary (``vocab.json`` beside the training file, every
entry one atomic token); it is saved once as ``out/initial_model`` so that a resumed
run and its KL reference start from exactly the same weights. ``load_policy`` puts the model
on ``model.device`` with the section's dtype, attention, LoRA and gradient checkpointing.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

import torch

from mmsr.config import read_json
from mmsr.data import load_samples
from mmsr.models import PRESETS as MODEL_PRESETS
from mmsr.models import build_tiny_model, load_model, save_pretrained, train_tokenizer
from mmsr.models.image_processor import ImageProcessor
from mmsr.protocol import PromptSet, default_prompt_set
from mmsr.protocol.prompts import resolve_prompt_set
from mmsr.search.base import SearchBackends
from mmsr.search.registry import build_search, search_config_from_spec
from mmsr.train.grpo import GRPOParts
from mmsr.train.grpo_config import GRPOConfig, ModelSection, SearchSection
from mmsr.types import Sample

logger = logging.getLogger(__name__)

INITIAL_MODEL = "initial_model"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def build_tools(section: SearchSection) -> SearchBackends:
    """The search tools of ``section`` (``none``: no tools; a failed search is an observation)."""
    config = search_config_from_spec(section.spec)
    if not config:
        return SearchBackends()
    if section.cache not in (None, "none"):
        config["cache"] = {"store": "sqlite", "path": section.cache}
    return build_search(config)


def tokenizer_texts(
    samples: list[Sample], vocab: list[str], prompts: PromptSet | None = None
) -> list[str]:
    """What a scratch tokenizer learns from: the prompts, the questions, the vocabulary."""
    prompts = prompts or default_prompt_set()
    texts = [prompts.first_turn, prompts.after_image_search, prompts.after_text_search]
    texts.append(prompts.search_failed)
    texts += [s.question for s in samples] + [" ".join(s.golds) for s in samples]
    texts += ["<reason> </reason><answer> </answer><search><img></search><text_search>"] * 20
    return texts + vocab


def scratch_model(
    section: ModelSection,
    samples: list[Sample],
    vocab_file: Path,
    out: Path,
    prompts: PromptSet | None = None,
) -> Path:
    """Build and save a random tiny model (once per run folder); returns its folder."""
    folder = out / INITIAL_MODEL
    if folder.is_dir():
        return folder
    vocab = read_json(vocab_file) if vocab_file.is_file() else []
    tokenizer = train_tokenizer(
        tokenizer_texts(samples, vocab, prompts),
        vocab_size=section.vocab_size,
        atomic_tokens=vocab,
    )
    model = build_tiny_model(section.preset, tokenizer, seed=section.init_seed)
    processor = ImageProcessor(MODEL_PRESETS[section.preset].image_processor_config())
    tmp = out / f".tmp-{INITIAL_MODEL}"
    shutil.rmtree(tmp, ignore_errors=True)
    save_pretrained(model, tokenizer, processor, tmp)
    tmp.rename(folder)
    logger.info("built a random %s model (no warm start) in %s", section.preset, folder)
    return folder


def check_device(device: str) -> None:
    """A clear error for a device this machine does not have."""
    kind = torch.device(device).type
    if kind == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"model.device is {device!r} but CUDA is not available here")
    if kind not in ("cpu", "cuda"):
        raise ValueError(f"model.device {device!r}: only cpu and cuda are supported")


def load_policy(source: Path, section: ModelSection, with_reference: bool) -> tuple[Any, ...]:
    """``(model, reference or None, tokenizer, image processor)`` as ``section`` asks.

    Full fine-tune: the reference is a second, frozen copy (bf16 under autocast: the policy's
    matmuls run in bf16 too). LoRA: the model gets adapters (only they train) and the reference
    is the same model with its adapters disabled.
    """
    check_device(section.device)
    dtype = DTYPES[section.dtype]
    load = {"device": section.device, "attention": section.attention}
    model, tokenizer, processor = load_model(source, dtype=dtype, **load)
    reference: Any = None
    if section.lora_rank > 0:
        from mmsr.train import lora

        peft_model = lora.add_lora(model, section.lora_rank, section.lora_alpha, section.init_seed)
        model = peft_model.get_base_model()  # the same modules, adapters injected
        reference = lora.Reference(peft_model) if with_reference else None
    elif with_reference:
        ref_dtype = torch.bfloat16 if section.autocast else dtype
        reference = load_model(source, dtype=ref_dtype, **load)[0]
        reference.requires_grad_(False)
    if section.gradient_checkpointing:
        kwargs = {"use_reentrant": False}  # works with frozen inputs (LoRA)
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)  # type: ignore[no-untyped-call]
    return model, reference, tokenizer, processor


def build_parts(cfg: GRPOConfig, out: Path) -> GRPOParts:
    """Load the data, the model (and its frozen reference) and the search tools of ``cfg``."""
    samples = load_samples(cfg.data.train, limit=cfg.data.limit)
    if not samples:
        raise ValueError(f"{cfg.data.train}: no training questions")
    prompts = resolve_prompt_set(cfg.prompts)  # a missing prompt file fails before the model
    search = build_tools(cfg.search)  # before the model: a bad search config fails at once
    out.mkdir(parents=True, exist_ok=True)
    source = Path(cfg.model.path) if cfg.model.path else None
    if source is None:
        vocab_file = Path(cfg.data.train).parent / "vocab.json"
        source = scratch_model(cfg.model, samples, vocab_file, out, prompts)
    model, reference, tokenizer, processor = load_policy(source, cfg.model, cfg.algo.kl_beta > 0)
    return GRPOParts(
        model=model,
        reference=reference,
        tokenizer=tokenizer,
        image_processor=processor,
        samples=samples,
        search=search,
        source=source,
    )
