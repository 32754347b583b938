"""veRL 0.9.1 on the CPU: a device platform, the patches its trainer needs there, and mmsr's
processor for a Qwen2.5-VL policy; imports verl.

veRL ships device platforms for CUDA, ROCm and Ascend only, and its auto-detection falls back to
CUDA. ``mmsr train verl --device cpu`` names this module in ``VERL_USE_EXTERNAL_MODULES`` (veRL
imports it in every one of its processes) and sets ``VERL_PLATFORM=mmsr_cpu``; on import it:

- registers ``CpuPlatform``: device ``cpu``, collectives on ``gloo``, the ``torch.cuda``-style
  calls veRL makes answered for the CPU (``CpuDevice``), and Ray's resource name ``GPU`` so that
  veRL's placement groups take the logical GPUs ``ray.init(num_gpus=N)`` declares;
- starts veRL's process groups on plain ``gloo`` (veRL asks for ``cpu:gloo,<device>:<backend>``,
  which torch refuses when both devices are ``cpu``);
- turns off pinned memory in FSDP2's CPU offload (the reference model's), which needs CUDA;
- picks veRL's FSDP engine as on CUDA (its engine registry knows ``cuda`` and ``npu`` only:
  ``VERL_ENGINE_DEVICE``; the engine itself puts everything on veRL's device, the CPU);
- gives a Qwen2.5-VL model the processor of ``mmsr.integrations.verl.processor`` (on
  transformers' PIL image processor, with the model's ``get_rope_index`` bound as veRL binds it)
  in place of veRL's ``hf_processor``, whose stock processor needs torchvision (absent beside
  the CPU torch wheel), so that veRL computes 3-D M-RoPE position ids for the agent loop's
  output;
- registers the CPU rollout (``mmsr.integrations.verl.cpu_rollout``) as rollout ``mmsr_cpu``;
- applies the fixes every run gets (``mmsr.integrations.verl.fixes``).

Written against veRL 0.9.1 (``fixes.VERL_VERSION``), whose internals these patches name; the
``verl`` extra pins that release. Not here: the rollout server itself (``cpu_rollout``), the
processor (``processor``), the overrides of a CPU run (``launch.CPU_OVERRIDES``). Nothing of
this is used on GPUs.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from verl.plugin.platform import PlatformBase, PlatformRegistry

from mmsr.integrations.verl import fixes
from mmsr.integrations.verl.launch import CPU_ENV
from mmsr.integrations.verl.processor import cpu_processor

PLATFORM = CPU_ENV["VERL_PLATFORM"]
ROLLOUT = "mmsr_cpu"  # actor_rollout_ref.rollout.name


def _meminfo() -> tuple[int, int]:
    """(available, total) bytes of this machine's memory."""
    fields: dict[str, int] = {}
    with contextlib.suppress(OSError), open("/proc/meminfo") as f:
        for line in f:
            key, _, rest = line.partition(":")
            fields[key] = int(rest.split()[0]) * 1024
    total = fields.get("MemTotal", 0)
    return fields.get("MemAvailable", total), total


class CpuDevice:
    """The ``torch.cuda``-style calls veRL makes on its device module, for the CPU: memory
    queries read the machine's memory, caches and streams are no-ops, the RNG is torch's."""

    Stream = torch.cpu.Stream
    stream = staticmethod(torch.cpu.stream)
    current_stream = staticmethod(torch.cpu.current_stream)
    synchronize = staticmethod(torch.cpu.synchronize)

    class Event:
        """A CUDA event's interface, for timing code that records some."""

        def __init__(self, enable_timing: bool = False, **_: Any) -> None:
            self.time = 0.0

        def record(self, stream: Any = None) -> None:
            import time

            self.time = time.perf_counter()

        def synchronize(self) -> None:
            pass

        def elapsed_time(self, end: CpuDevice.Event) -> float:
            return (end.time - self.time) * 1000.0

    @staticmethod
    def is_available() -> bool:
        return True

    @staticmethod
    def device_count() -> int:
        return 1

    @staticmethod
    def current_device() -> str:
        return "cpu"  # what veRL moves tensors to (``.to(get_device_id())``), as torch.cpu says

    @staticmethod
    def set_device(device: Any) -> None:
        pass

    @staticmethod
    def get_device_name(device: Any = None) -> str:
        return "cpu"

    @staticmethod
    def empty_cache() -> None:
        pass

    @staticmethod
    def ipc_collect() -> None:
        pass

    @staticmethod
    def set_per_process_memory_fraction(fraction: float, device: Any = None) -> None:
        pass

    @staticmethod
    def mem_get_info(device: Any = None) -> tuple[int, int]:
        return _meminfo()

    @staticmethod
    def memory_allocated(device: Any = None) -> int:
        return 0

    memory_reserved = max_memory_allocated = max_memory_reserved = memory_allocated

    @staticmethod
    def manual_seed(seed: int) -> None:
        torch.manual_seed(seed)

    manual_seed_all = manual_seed

    @staticmethod
    def get_rng_state(device: Any = None) -> torch.Tensor:
        return torch.get_rng_state()

    @staticmethod
    def set_rng_state(state: torch.Tensor, device: Any = None) -> None:
        torch.set_rng_state(state)


@PlatformRegistry.register(platform=PLATFORM)
class CpuPlatform(PlatformBase):  # type: ignore[misc]
    """veRL's device platform for the CPU: device ``cpu``, backend ``gloo``, Ray's ``GPU``."""

    device_name = "cpu"
    vendor_name = "mmsr"
    device_module = CpuDevice()

    def is_available(self) -> bool:
        return True

    def is_platform_available(self, use_smi_check: bool = False) -> bool:
        # chosen only by VERL_PLATFORM, never by auto-detection
        return False

    def current_device(self) -> str:
        return "cpu"

    def device_count(self) -> int:
        return 1

    def set_device(self, device_index: int) -> None:
        pass

    def synchronize(self, device_index: int | None = None) -> None:
        pass

    def manual_seed(self, seed: int) -> None:
        torch.manual_seed(seed)

    def manual_seed_all(self, seed: int) -> None:
        torch.manual_seed(seed)

    def set_allocator_settings(self, settings: str) -> None:
        pass

    def empty_cache(self) -> None:
        pass

    def get_device_capability(self, device_index: int = 0) -> tuple[int | None, int | None]:
        return None, None

    def communication_backend_name(self) -> str:
        return "gloo"

    def visible_devices_envvar(self) -> str:
        return "CUDA_VISIBLE_DEVICES"  # what Ray sets for its logical GPUs

    @contextlib.contextmanager
    def nvtx_range(self, msg: str) -> Iterator[None]:
        yield

    def profiler_start(self) -> None:
        pass

    def profiler_stop(self) -> None:
        pass

    def ray_resource_name(self) -> str:
        return "GPU"

    def ray_noset_envvars(self) -> list[str]:
        return []

    def is_ipc_supported(self) -> bool:
        return False

    def cudart(self) -> Any:
        return None


def _model_type(path: str | Path) -> str | None:
    try:
        config = json.loads((Path(path) / "config.json").read_text())
    except (OSError, ValueError):
        return None
    kind = config.get("model_type")
    return kind if isinstance(kind, str) else None


def _with_cpu_processor(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def hf_processor(name_or_path: Any, **kwargs: Any) -> Any:
        if _model_type(name_or_path) == "qwen2_5_vl":
            return cpu_processor(name_or_path)
        return original(name_or_path, **kwargs)

    hf_processor.mmsr_cpu = True  # type: ignore[attr-defined]
    return hf_processor


def _gloo(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def initialize_global_process_group_ray(
        timeout_second: int | None = None, backend: str | None = None
    ) -> Any:
        return original(timeout_second=timeout_second, backend="gloo")

    initialize_global_process_group_ray.mmsr_cpu = True  # type: ignore[attr-defined]
    return initialize_global_process_group_ray


def _patch(module_name: str, attribute: str, wrap: Callable[[Any], Any]) -> None:
    """Replace ``module.attribute`` by ``wrap(it)`` once; modules that imported it by name
    later see the replacement (veRL's workers import theirs after this module has run)."""
    import importlib

    module = importlib.import_module(module_name)
    current = getattr(module, attribute)
    if not getattr(current, "mmsr_cpu", False):
        setattr(module, attribute, wrap(current))


def _unpinned(policy: type) -> type:
    class UnpinnedCPUOffloadPolicy(policy):  # type: ignore[misc, valid-type, unused-ignore]
        """FSDP2's CPU offload without pinned memory (pinning needs CUDA)."""

        mmsr_cpu = True

        def __init__(self, pin_memory: bool = True) -> None:
            super().__init__(pin_memory=False)

    return UnpinnedCPUOffloadPolicy


def _register_rollout() -> None:
    from verl.workers.rollout import base
    from verl.workers.rollout.replica import RolloutReplicaRegistry

    def load() -> type:
        from mmsr.integrations.verl.cpu_rollout import CpuRolloutReplica

        return CpuRolloutReplica

    RolloutReplicaRegistry.register(ROLLOUT, load)
    adapter = "mmsr.integrations.verl.cpu_rollout.CpuServerAdapter"
    base._ROLLOUT_REGISTRY[(ROLLOUT, "async")] = adapter


def install() -> None:
    """Register the platform's companions and patch veRL for the CPU (again: nothing)."""
    for key, value in CPU_ENV.items():
        os.environ.setdefault(key, value)
    fixes.install()
    _patch("verl.utils.distributed", "initialize_global_process_group_ray", _gloo)
    _patch("verl.utils.fsdp_utils", "CPUOffloadPolicy", _unpinned)
    _patch("verl.utils.tokenizer", "hf_processor", _with_cpu_processor)
    _patch("verl.utils", "hf_processor", _with_cpu_processor)
    if "verl.workers.config.model" in sys.modules:  # it binds hf_processor at import
        _patch("verl.workers.config.model", "hf_processor", _with_cpu_processor)
    _register_rollout()


install()
