"""Training batches: token sequences (from rollouts or teacher conversations) to model inputs.

A ``TokenSequence`` is what a trained-on sequence is made of: its ids, a loss mask (1 where the
policy produced the token), the log-probs recorded at sampling time (0 where unknown) and its
images in placeholder order. ``collate`` right-pads a list of them and computes the 3-D M-RoPE
positions over all images; ``token_logprobs`` runs the forward pass and returns the log-prob of
every next token, with the same suppressed ids and temperature as sampling.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from mmsr.models.chat_encoder import ChatEncoder, stack_images
from mmsr.models.image_processor import ImageProcessor
from mmsr.models.positions import rope_position_ids
from mmsr.models.vision_batch import model_inputs
from mmsr.types import Role, Turn


@dataclass(frozen=True)
class TokenSequence:
    token_ids: tuple[int, ...]
    loss_mask: tuple[int, ...]
    logprobs: tuple[float, ...]
    images: tuple[Any, ...] = ()


@dataclass(frozen=True)
class TrainBatch:
    input_ids: torch.Tensor  # (B, T), right-padded
    attention_mask: torch.Tensor  # (B, T)
    position_ids: torch.Tensor  # (3, B, T)
    pixel_values: torch.Tensor | None  # (patches of all images, patch_dim)
    image_grid_thw: torch.Tensor | None  # (n_images, 3)
    loss_mask: torch.Tensor  # (B, T-1), for the targets input_ids[:, 1:]
    old_logprobs: torch.Tensor  # (B, T-1)

    @property
    def trained_tokens(self) -> int:
        return int(self.loss_mask.sum())

    def to(self, device: torch.device | str) -> TrainBatch:
        """The same batch with every tensor on ``device``."""
        moved = {
            f.name: (v.to(device) if isinstance(v := getattr(self, f.name), torch.Tensor) else v)
            for f in dataclasses.fields(self)
        }
        return TrainBatch(**moved)


def teacher_sequence(encoder: ChatEncoder, turns: Sequence[Turn]) -> TokenSequence:
    """A whole conversation with loss on the assistant turns (their text and ``<|im_end|>``)."""
    ids: list[int] = []
    mask: list[int] = []
    images: list[Any] = []
    for segment, turn in zip(encoder.encode_segments(turns), turns, strict=True):
        seg_ids = list(segment.input_ids)
        if turn.role is Role.ASSISTANT:
            n_trained = len(seg_ids) - len(encoder.separator_ids)  # the separator is injected
            mask += [1] * n_trained + [0] * (len(seg_ids) - n_trained)
        else:
            mask += [0] * len(seg_ids)
        ids += seg_ids
        images += turn.images
    return TokenSequence(tuple(ids), tuple(mask), (0.0,) * len(ids), tuple(images))


def collate(
    sequences: Sequence[TokenSequence], model: Any, image_processor: ImageProcessor, pad_id: int
) -> TrainBatch:
    """Right-pad ``sequences`` into one batch with its images and 3-D positions."""
    if not sequences:
        raise ValueError("cannot collate an empty list of sequences")
    width = max(len(s.token_ids) for s in sequences)
    input_ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), width), dtype=torch.long)
    loss_mask = torch.zeros((len(sequences), width), dtype=torch.float32)
    logprobs = torch.zeros((len(sequences), width), dtype=torch.float32)
    for row, s in enumerate(sequences):
        n = len(s.token_ids)
        input_ids[row, :n] = torch.tensor(s.token_ids, dtype=torch.long)
        attention_mask[row, :n] = 1
        loss_mask[row, :n] = torch.tensor(s.loss_mask, dtype=torch.float32)
        logprobs[row, :n] = torch.tensor(s.logprobs, dtype=torch.float32)
    processed = [image_processor(image) for s in sequences for image in s.images]
    pixel_values, grid = stack_images(processed)
    return TrainBatch(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=rope_position_ids(model, input_ids, grid, attention_mask),
        pixel_values=pixel_values,
        image_grid_thw=grid,
        loss_mask=loss_mask[:, 1:],
        old_logprobs=logprobs[:, 1:],
    )


def token_logprobs(
    model: Any,
    batch: TrainBatch,
    *,
    suppressed_ids: Sequence[int] = (),
    temperature: float = 1.0,
) -> torch.Tensor:
    """(B, T-1) log-prob of each next token under ``model`` (with gradients).

    Positions before the batch's first trained token hold 0: the vocabulary projection and
    log-softmax run only from there on (the prompt is most of a rollout's tokens).
    """
    trained_cols = batch.loss_mask.any(dim=0).nonzero()
    start = int(trained_cols[0]) if len(trained_cols) else batch.loss_mask.shape[1]
    width = batch.input_ids.shape[1]
    logits = (
        model(
            **model_inputs(model, batch.input_ids, batch.pixel_values, batch.image_grid_thw),
            attention_mask=batch.attention_mask,
            position_ids=batch.position_ids,
            logits_to_keep=max(width - start, 1),
        )
        .logits[:, :-1]
        .float()
    )  # (B, T-1-start, V)
    if suppressed_ids:
        suppressed = torch.tensor(list(suppressed_ids), device=logits.device)
        logits = logits.index_fill(-1, suppressed, float("-inf"))
    if temperature not in (0.0, 1.0):
        logits = logits / temperature
    logp = torch.log_softmax(logits, dim=-1)
    targets = batch.input_ids[:, width - logits.shape[1] :, None]
    picked = logp.gather(-1, targets).squeeze(-1)
    # prompt positions may hold suppressed ids (image pads): -inf there, never trained on
    picked = picked.masked_fill(~torch.isfinite(picked), 0.0)
    return torch.nn.functional.pad(picked, (width - 1 - picked.shape[1], 0))
