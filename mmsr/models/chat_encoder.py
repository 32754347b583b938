"""Conversations to token ids, turn by turn, in Qwen2-VL's chat format (token-in/token-out).

What it is: ``ChatEncoder.encode_turn`` gives the ids of one turn's span of the chat template
with every ``<image>`` placeholder (``mmsr.protocol.IMAGE_PLACEHOLDER``) expanded into
``<|vision_start|>`` + n × ``<|image_pad|>`` + ``<|vision_end|>`` (n = the image's token count
after the merge), plus the processed images. The rollout engine appends segments and the ids
the policy sampled, and never re-tokenises generated text:

    first user turn   [system turn]<|im_start|>user\\n…<|im_end|>\\n<|im_start|>assistant\\n
    generated         …<|im_end|>                      (the policy's own ids)
    separator         \\n                               (``ChatEncoder.separator_ids``)
    next user turn    <|im_start|>user\\n…<|im_end|>\\n<|im_start|>assistant\\n

How text is cut: ids are built from the special tokens directly and the text between them is
encoded by a copy of the tokenizer (taken when the encoder is built) that never matches special
tokens, so untrusted text that spells ``<|im_end|>`` or ``<|image_pad|>`` stays text and cannot
forge a special token. Since a Qwen tokenizer also cuts text at every special token, this gives
the ids of tokenising the whole rendered string (tested against Qwen2-VL's reference template
with the real Qwen vocabulary). One caveat: an assistant turn is encoded apart from the
``assistant\\n`` before it (that is how it is generated), which differs from whole-string
tokenisation only if the turn starts with white space.

What it is not: a tokenizer (``mmsr.models.tokenizer``) or image code (``image_processor``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from tokenizers import Tokenizer
from transformers import PreTrainedTokenizerBase

from mmsr.models.image_processor import ImageProcessor, ProcessedImage
from mmsr.models.tokenizer import (
    DEFAULT_SYSTEM_PROMPT,
    IM_END,
    IM_START,
    IMAGE_PAD,
    VISION_END,
    VISION_START,
    token_id,
)
from mmsr.protocol.prompts import IMAGE_PLACEHOLDER
from mmsr.types import Role, Turn


@dataclass(frozen=True)
class EncodedSegment:
    """The ids of one turn's template span and the images it shows, in order."""

    input_ids: tuple[int, ...]
    images: tuple[ProcessedImage, ...] = ()

    @property
    def num_image_tokens(self) -> int:
        """How many ``<|image_pad|>`` ids the segment holds (= image features it needs)."""
        return sum(image.num_tokens for image in self.images)

    @property
    def pixel_values(self) -> torch.Tensor | None:
        """(patches of all images, patch_dim), or None without images."""
        return stack_images(self.images)[0]

    @property
    def image_grid_thw(self) -> torch.Tensor | None:
        """(n_images, 3) int64, or None without images."""
        return stack_images(self.images)[1]


def stack_images(
    images: Sequence[ProcessedImage],
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """``(pixel_values, image_grid_thw)`` for the model, or ``(None, None)`` without images.

    pixel_values: (sum of patches, patch_dim); image_grid_thw: (n_images, 3) int64.
    """
    if not images:
        return None, None
    pixel_values = torch.cat([image.pixel_values for image in images], dim=0)
    grid = torch.tensor([image.grid_thw for image in images], dtype=torch.long)
    return pixel_values, grid


class ChatEncoder:
    """Encodes turns with a Qwen-style tokenizer and an ``ImageProcessor``."""

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        image_processor: ImageProcessor,
        *,
        system_prompt: str = DEFAULT_SYSTEM_PROMPT,
    ) -> None:
        self.tokenizer = tokenizer
        # A private copy of the fast tokenizer that never matches special tokens: the shared
        # one's flag would be flipped per call (racy across threads), so it is not used.
        backend = getattr(tokenizer, "backend_tokenizer", None)
        if backend is None:
            raise TypeError("ChatEncoder needs a fast (tokenizers-backed) tokenizer")
        self._plain = Tokenizer.from_str(backend.to_str())
        self._plain.encode_special_tokens = True
        self.image_processor = image_processor
        self.system_prompt = system_prompt
        self.im_start_id = token_id(tokenizer, IM_START)
        self.im_end_id = token_id(tokenizer, IM_END)
        self.image_pad_id = token_id(tokenizer, IMAGE_PAD)
        self.vision_start_id = token_id(tokenizer, VISION_START)
        self.vision_end_id = token_id(tokenizer, VISION_END)
        self.separator_ids: tuple[int, ...] = tuple(self.encode_text("\n"))
        """What follows a generated ``<|im_end|>`` before the next turn."""

    def encode_text(self, text: str) -> list[int]:
        """Plain text to ids; special-token spellings in ``text`` stay text."""
        if not text:
            return []
        return list(self._plain.encode(text, add_special_tokens=False).ids)

    def _message(self, role: str, text: str, images: Sequence[ProcessedImage]) -> list[int]:
        """``<|im_start|>role\\n{text with images}<|im_end|>\\n``."""
        pieces = text.split(IMAGE_PLACEHOLDER)
        if len(pieces) - 1 != len(images):
            raise ValueError(
                f"{role} turn has {len(pieces) - 1} {IMAGE_PLACEHOLDER} placeholders "
                f"but {len(images)} images"
            )
        ids = [self.im_start_id, *self.encode_text(f"{role}\n{pieces[0]}")]
        for image, piece in zip(images, pieces[1:], strict=True):
            ids += [self.vision_start_id, *[self.image_pad_id] * image.num_tokens]
            ids += [self.vision_end_id, *self.encode_text(piece)]
        return [*ids, self.im_end_id, *self.separator_ids]

    def generation_prompt_ids(self) -> list[int]:
        """``<|im_start|>assistant\\n``: what the policy continues from."""
        return [self.im_start_id, *self.encode_text("assistant\n")]

    def encode_turn(
        self, turn: Turn, *, first: bool, add_generation_prompt: bool
    ) -> EncodedSegment:
        """The ids of ``turn``'s span of the template, images expanded and processed.

        ``first``: the turn opens the conversation, so a default system turn comes first
        unless ``turn`` is itself the system turn. An assistant turn gives its text, then
        ``<|im_end|>`` and the separator, with no ``<|im_start|>assistant\\n`` (that ends the
        user turn before it, as the generation prompt).
        """
        images = tuple(self.image_processor(image) for image in turn.images)
        ids: list[int] = []
        if first and turn.role != Role.SYSTEM:
            ids += self._message(Role.SYSTEM.value, self.system_prompt, ())
        if turn.role == Role.ASSISTANT:
            if images:
                raise ValueError("assistant turns cannot hold images")
            ids += [*self.encode_text(turn.text), self.im_end_id, *self.separator_ids]
        else:
            ids += self._message(turn.role.value, turn.text, images)
        if add_generation_prompt:
            ids += self.generation_prompt_ids()
        return EncodedSegment(tuple(ids), images)

    def encode_segments(
        self, turns: Sequence[Turn], *, add_generation_prompt: bool = False
    ) -> list[EncodedSegment]:
        """One segment per turn; a user turn followed by an assistant turn holds its prompt."""
        segments = []
        for index, turn in enumerate(turns):
            next_is_assistant = index + 1 < len(turns) and turns[index + 1].role == Role.ASSISTANT
            is_last = index + 1 == len(turns)
            prompt = next_is_assistant or (is_last and add_generation_prompt)
            if turn.role == Role.ASSISTANT and (
                index == 0 or turns[index - 1].role == Role.ASSISTANT
            ):
                raise ValueError(f"assistant turn {index} does not follow a user or system turn")
            segments.append(self.encode_turn(turn, first=index == 0, add_generation_prompt=prompt))
        return segments

    def encode_conversation(
        self, turns: Sequence[Turn], *, add_generation_prompt: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """``(input_ids (T,), pixel_values, image_grid_thw)`` of a whole conversation."""
        segments = self.encode_segments(turns, add_generation_prompt=add_generation_prompt)
        ids = [i for segment in segments for i in segment.input_ids]
        pixel_values, grid = stack_images([im for segment in segments for im in segment.images])
        return torch.tensor(ids, dtype=torch.long), pixel_values, grid
