"""What an ``mmsr eval`` run is: ``EvalRunConfig`` (the settings, checked when built) and
``SavedEvalConfig`` (their resolved form, saved as ``OUT/config.json`` and compared on resume).

The command line only builds an ``EvalRunConfig`` (``mmsr.eval.cli``); ``mmsr.eval.run.run_eval``
runs one. Not here: building policies, search tools or the judge (that is I/O, in ``run``).
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mmsr.config import ConfigError, build, read_json
from mmsr.data.subsets import SUBSETS
from mmsr.eval.protocols import PROTOCOLS, EvalProtocol
from mmsr.redact import redact
from mmsr.rewards import RewardConfig
from mmsr.rollout.rules import RolloutLimits
from mmsr.rollout.settings import lift_legacy

CONFIG_FILE = "config.json"
EVAL_REWARD_MODES = ("em", "subem", "f1")
POLICY_KINDS = ("hf", "vllm", "openai", "scripted")
LOCAL_DTYPES = ("float32", "bfloat16", "float16")
# Settings that must not change between a run and its resumption (its lines would mix).
RESUME_FIELDS = (
    "policy",
    "method",
    "data",
    "search",
    "seed",
    "temperature",
    "limits",
    "reward",
    "protocol",
    "subset",
    "subset_seed",
)
# Keys of config.json added later, with the value a file written before them means.
NEW_SAVED_DEFAULTS: dict[str, Any] = {
    "protocol": {},
    "judge_prompt": None,
    "judge_images": True,
    "subset": None,
    "subset_seed": 0,
}


@dataclass(frozen=True)
class EvalRunConfig:
    """One evaluation: a policy, a method and a dataset, written into ``out``."""

    policy: str
    """``hf:MODEL_DIR``, ``vllm:MODEL_DIR``, ``openai:BASE_URL#MODEL`` or ``scripted:NAME``."""
    method: str
    """An evaluation method of ``mmsr.eval.methods.METHODS``."""
    data: Path
    """The questions: any file ``mmsr.data.load_samples`` reads."""
    out: Path
    """The run folder (resumed when it holds a run with the same settings)."""
    model: str | None = None
    """Model name for ``openai:`` policies given without ``#MODEL``."""
    api_key_env: str = "OPENAI_API_KEY"
    """Environment variable holding the API key (policy and judge)."""
    format: str | None = None
    """Data format (None: detected)."""
    benchmark: str | None = None
    """Benchmark name in reports (None: the data's one source, else the file's stem)."""
    search: str = "none"
    """Search tools: a .json/.toml config file, ``local:INDEX_DIR``, ``http:URL`` or ``none``."""
    limit: int | None = None
    """Evaluate the first N questions only (None: all)."""
    batch_size: int = 16
    """Questions per rollout batch."""
    device: str | None = None
    """Where a local policy runs: ``cpu``, ``cuda``, ``cuda:N`` (None: ``cpu`` for ``hf:``, the
    visible GPU for ``vllm:``, which runs on ``cuda`` only)."""
    dtype: str | None = None
    """A local policy's weights: one of ``LOCAL_DTYPES`` (None: bfloat16 on a GPU, else
    float32)."""
    micro_batch_size: int = 0
    """``hf:`` requests per forward pass (bounds the KV cache); 0: a whole batch at once."""
    concurrency: int = 8
    """Parallel API, search and judge calls."""
    judge: str | None = None
    """LLM judge as ``BASE_URL#MODEL`` (None: no judge)."""
    seed: int = 0
    """Sampling seed (each question's seed derives from it and the question's id)."""
    temperature: float = 0.0
    """Sampling temperature; 0 is greedy."""
    limits: RolloutLimits = RolloutLimits()
    """The protocol's limits every method starts from (and narrows)."""
    prompts: Path | None = None
    """Prompt set folder (``on-demand`` only; None: the method's own)."""
    reward: RewardConfig = RewardConfig()
    """The reward of every line (``reward.mode``: one of ``EVAL_REWARD_MODES``)."""
    progress: bool = True
    """Show a progress bar."""
    retry_failed: bool = False
    """Run again the questions a previous run recorded as failed."""
    protocol: EvalProtocol = PROTOCOLS["mmsr"]
    """How questions are shown, answered and judged (``mmsr.eval.protocols.PROTOCOLS``)."""
    judge_prompt: Path | None = None
    """The judge's system prompt file (``paper`` judge style; None: the built-in text)."""
    judge_images: bool = True
    """Show the question's image to the judge (``paper`` judge style; off for text models)."""
    subset: str | None = None
    """Evaluate a named subset of the benchmark (``mmsr.data.subsets.SUBSETS``; None: all)."""
    subset_seed: int = 0
    """Seed of the subset's sample (InfoSeek's 2,000 questions)."""

    def __post_init__(self) -> None:
        from mmsr.eval.methods import METHODS

        kind = self.policy.partition(":")[0]
        if kind not in POLICY_KINDS:
            raise ConfigError(
                f"--policy: unknown kind {kind!r}; expected hf:, vllm:, openai: or scripted:"
            )
        if self.method not in METHODS:
            raise ConfigError(f"unknown method {self.method!r}; known: {', '.join(METHODS)}")
        if self.reward.mode not in EVAL_REWARD_MODES:
            raise ConfigError(
                f"reward.mode {self.reward.mode!r} is not one of {', '.join(EVAL_REWARD_MODES)}"
            )
        if self.prompts is not None and self.method != "on-demand":
            raise ConfigError("--prompts applies to --method on-demand only")
        self._check_protocol()
        for name in ("batch_size", "concurrency"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.limits.max_new_tokens < 1:
            raise ConfigError(
                f"limits.max_new_tokens must be at least 1, got {self.limits.max_new_tokens}"
            )
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"limit must be at least 1 (or None: all), got {self.limit}")
        if not (math.isfinite(self.temperature) and self.temperature >= 0):
            raise ConfigError(f"temperature must be at least 0 and finite, got {self.temperature}")
        self._check_local(kind)

    def _check_protocol(self) -> None:
        """The protocol's demands, the judge's settings and the subset's name."""
        if self.protocol.greedy and self.temperature != 0:
            raise ConfigError(f"--protocol {self.protocol.name} decodes greedily (temperature 0)")
        if self.protocol.judge_style == "paper" and self.judge is None:
            raise ConfigError(f"--protocol {self.protocol.name} judges answers: give --judge")
        if self.judge_prompt is not None and self.protocol.judge_style != "paper":
            raise ConfigError("--judge-prompt applies to the paper's judge (--protocol paper)")
        if self.subset is not None and self.subset not in SUBSETS:
            raise ConfigError(f"unknown subset {self.subset!r}; known: {', '.join(SUBSETS)}")

    def _check_local(self, kind: str) -> None:
        """Device, dtype and micro-batches: for local policies, and of a known kind."""
        local = {
            "device": self.device,
            "dtype": self.dtype,
            "micro_batch_size": self.micro_batch_size,
        }
        given = [name for name, value in local.items() if value not in (None, 0)]
        if kind not in ("hf", "vllm") and given:
            raise ConfigError(f"--{given[0].replace('_', '-')} applies to hf: and vllm: only")
        if self.dtype is not None and self.dtype not in LOCAL_DTYPES:
            raise ConfigError(f"dtype {self.dtype!r} is not one of {', '.join(LOCAL_DTYPES)}")
        if self.device is not None and self.device.partition(":")[0] not in ("cpu", "cuda"):
            raise ConfigError(f"device {self.device!r}: expected cpu, cuda or cuda:N")
        if kind == "vllm" and self.device not in (None, "cuda"):
            raise ConfigError(
                "vllm: runs on the visible GPU (--device cuda); choose it with CUDA_VISIBLE_DEVICES"
            )
        if kind == "vllm" and self.micro_batch_size:
            raise ConfigError("--micro-batch-size applies to hf: (vLLM schedules its own batches)")
        if self.micro_batch_size < 0:
            raise ConfigError(f"micro_batch_size must be >= 0, got {self.micro_batch_size}")

    def local_device(self) -> str:
        """The device a local policy runs on."""
        kind = self.policy.partition(":")[0]
        return self.device or ("cuda" if kind == "vllm" else "cpu")

    def local_dtype(self) -> str:
        """The dtype of a local policy's weights."""
        return self.dtype or ("bfloat16" if self.local_device().startswith("cuda") else "float32")

    def saved(self, search: dict[str, Any] | None) -> SavedEvalConfig:
        """The resolved settings with the resolved ``search`` config, secrets masked."""
        return SavedEvalConfig(
            policy=redact(self.policy),
            model=self.model,
            method=self.method,
            data=str(self.data.resolve()),
            format=self.format,
            benchmark=self.benchmark,
            search=redact(search),
            limit=self.limit,
            batch_size=self.batch_size,
            concurrency=self.concurrency,
            judge=redact(self.judge),
            seed=self.seed,
            temperature=self.temperature,
            limits=self.limits,
            prompts=str(self.prompts) if self.prompts else None,
            reward=self.reward,
            protocol=self.protocol,
            judge_prompt=str(self.judge_prompt.resolve()) if self.judge_prompt else None,
            judge_images=self.judge_images,
            subset=self.subset,
            subset_seed=self.subset_seed,
        )


@dataclass(frozen=True)
class SavedEvalConfig:
    """``OUT/config.json``: an ``EvalRunConfig`` resolved (absolute data path, the search
    config rather than its spec, secrets masked). Files written before the ``limits`` and
    ``reward`` sections (``max_new_tokens``, ``reward_mode``) are read into them."""

    policy: str
    """The policy spec, user:password of its url masked."""
    model: str | None
    """``EvalRunConfig.model``."""
    method: str
    """The evaluation method."""
    data: str
    """The data file's absolute path."""
    format: str | None
    """``EvalRunConfig.format``."""
    benchmark: str | None
    """``EvalRunConfig.benchmark``."""
    search: dict[str, Any] | None
    """The search config built from ``EvalRunConfig.search`` (None: no tools), secrets masked."""
    limit: int | None
    """``EvalRunConfig.limit``."""
    batch_size: int
    """``EvalRunConfig.batch_size``."""
    concurrency: int
    """``EvalRunConfig.concurrency``."""
    judge: str | None
    """The judge endpoint, user:password masked."""
    seed: int
    """``EvalRunConfig.seed``."""
    temperature: float
    """``EvalRunConfig.temperature``."""
    limits: RolloutLimits
    """``EvalRunConfig.limits``."""
    prompts: str | None
    """The prompt set folder as given."""
    reward: RewardConfig
    """``EvalRunConfig.reward``."""
    protocol: EvalProtocol
    """``EvalRunConfig.protocol``, resolved (every setting of the preset)."""
    judge_prompt: str | None
    """The judge's system prompt file, absolute (None: built in)."""
    judge_images: bool
    """``EvalRunConfig.judge_images``."""
    subset: str | None
    """``EvalRunConfig.subset``."""
    subset_seed: int
    """``EvalRunConfig.subset_seed``."""

    def to_json(self) -> dict[str, Any]:
        """The JSON object of ``config.json``, keys in field order."""
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return data | {
            "limits": asdict(self.limits),
            "reward": asdict(self.reward),
            "protocol": asdict(self.protocol),
        }

    @classmethod
    def from_json(cls, data: Any, where: str = CONFIG_FILE) -> SavedEvalConfig:
        """The saved form read back; anything but exactly its keys is a clear error."""
        names = [f.name for f in dataclasses.fields(cls)]
        if not isinstance(data, dict):
            raise ConfigError(f"{where}: expected a JSON object, got {type(data).__name__}")
        data = {**NEW_SAVED_DEFAULTS, **lift_legacy(data, "eval")}
        missing = [n for n in names if n not in data]
        unknown = sorted(set(data) - set(names))
        if missing or unknown:
            raise ConfigError(
                f"{where}: not the config of an mmsr eval run "
                f"(missing: {', '.join(missing) or '-'}; unknown: {', '.join(unknown) or '-'})"
            )
        limits = build(RolloutLimits, data["limits"], f"{where}: limits.")
        reward = build(RewardConfig, data["reward"], f"{where}: reward.")
        protocol = build(EvalProtocol, data["protocol"], f"{where}: protocol.")
        return cls(**data | {"limits": limits, "reward": reward, "protocol": protocol})

    def changed(self, other: SavedEvalConfig) -> list[str]:
        """The ``RESUME_FIELDS`` whose values differ between the two."""
        return [n for n in RESUME_FIELDS if getattr(self, n) != getattr(other, n)]


def check_resume(out: Path, now: SavedEvalConfig) -> None:
    """Refuse to resume a run folder made with other settings (its lines would mix)."""
    path = out / CONFIG_FILE
    if not path.is_file():
        return
    before = SavedEvalConfig.from_json(read_json(path), str(path))
    changed = before.changed(now)
    if changed:
        raise ConfigError(
            f"{out} holds a run with other settings ({', '.join(changed)}); use another --out"
        )


def write_saved(out: Path, saved: SavedEvalConfig) -> Path:
    """Write ``out/config.json``."""
    path = out / CONFIG_FILE
    path.write_text(json.dumps(saved.to_json(), indent=1) + "\n", encoding="utf-8")
    return path
