"""A token-level policy on vLLM's offline engine (``vllm.LLM``), colocated with the trainer.

Token in, token out, like ``HFPolicy``: each request's prompt ids go to the engine as they
are, its images as ``multi_modal_data`` in placeholder order, and the sampled ids come back
with their log-probs. vLLM expands one ``<|image_pad|>`` per image into that image's visual
tokens itself, so each run of pads in our ids is collapsed to one pad first; the prompt the
engine then reports (``RequestOutput.prompt_token_ids``, expanded) must equal ours, or the
trajectory would train on other positions than vLLM sampled from — a clear error says so
(usually the two image processors size an image differently).

Sampling: one ``SamplingParams`` per request (its seed, ``max_new_tokens``, the end-of-turn ids
as stop ids, the vision and placeholder ids banned by a -100 logit bias, the sampled token's
log-prob). The engine is built with ``logprobs_mode="processed_logprobs"`` (log-probs after
temperature and the bias, the distribution sampled from) and prefix caching, so a GRPO group's
shared first turn is computed once.

Colocation (``sleep``/``wake_up``/``load_weights``): during the update the engine sleeps (its
KV cache freed, its weights offloaded or discarded); after every optimizer step the trainer's
weights are written into the engine in place (``collective_rpc`` runs ``load_weights`` on the
worker of an in-process engine, so no tensor is copied through a pipe), the prefix cache is
reset (its KV came from the old weights), and the KV cache is woken for the next rollouts.
Sampling numerics differ from the trainer's, so with vLLM the trainer recomputes the old
log-probs (``algo.recompute_old_logprobs``).

What it is not: the engine's construction from a model folder (``mmsr.policy.local_model``).
``vllm`` is imported only there, only when asked for (the ``gpu`` extra, a CUDA machine).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from mmsr.policy.base import Generation, GenerationRequest

GPU_EXTRA = "pip install -e '.[gpu]' (the gpu extra, on a machine with a CUDA GPU)"
BANNED_BIAS = -100.0
"""Logit bias of the never-sampled ids (OpenAI's "ban" value; the trainer uses -inf)."""


def import_vllm() -> Any:
    """The ``vllm`` module, or an ImportError that names the extra."""
    try:
        import vllm
    except ImportError as err:
        raise ImportError(f"the vllm rollout backend needs vLLM: {GPU_EXTRA}") from err
    return vllm


def collapse_image_pads(ids: Sequence[int], image_pad: int) -> list[int]:
    """``ids`` with each run of ``image_pad`` replaced by one pad (vLLM expands it again).

    >>> collapse_image_pads([1, 9, 9, 9, 2, 3, 9, 9, 4], 9)
    [1, 9, 2, 3, 9, 4]
    """
    out: list[int] = []
    for token in ids:
        if token == image_pad and out and out[-1] == image_pad:
            continue
        out.append(token)
    return out


def _load_weights_on_worker(worker: Any, weights: Iterable[tuple[str, Any]]) -> int:
    """Runs on the engine's worker (``collective_rpc``): copy ``weights`` into its model.

    The names are transformers' (``model.language_model.…``); the vLLM model's
    ``load_weights`` maps them to its own and casts to its dtype. Returns how many it loaded.
    """
    loaded = worker.model_runner.model.load_weights(weights=weights)
    return len(loaded) if loaded is not None else 0


class VLLMPolicy:
    """Samples assistant turns with a ``vllm.LLM``; see the module docstring.

    ``llm`` is the engine (anything with vLLM's ``generate``, ``sleep``, ``wake_up``,
    ``collective_rpc`` and ``reset_prefix_cache``); ``sampling_params`` builds one request's
    sampling settings (``vllm.SamplingParams``; tests pass a stand-in); ``decode`` turns ids
    into text; ``end_of_turn`` and ``suppressed`` are the ids that end a turn and the ids
    never sampled; ``image_pad`` is ``<|image_pad|>``'s id.
    """

    token_level = True

    def __init__(
        self,
        llm: Any,
        sampling_params: Callable[..., Any],
        decode: Callable[[list[int]], str],
        *,
        end_of_turn: frozenset[int],
        suppressed: frozenset[int],
        image_pad: int,
        temperature: float = 0.0,
        top_p: float = 1.0,
        sleep_level: int = 1,
    ) -> None:
        if temperature < 0 or not 0 < top_p <= 1:
            raise ValueError(f"bad sampling settings: temperature={temperature}, top_p={top_p}")
        if sleep_level not in (1, 2):
            raise ValueError(f"sleep_level must be 1 or 2, got {sleep_level}")
        self.llm, self.sampling_params, self.decode = llm, sampling_params, decode
        self.end_of_turn, self.suppressed, self.image_pad = end_of_turn, suppressed, image_pad
        self.temperature, self.top_p, self.sleep_level = temperature, top_p, sleep_level
        self.asleep: set[str] = set()  # the engine's parts asleep: "weights", "kv_cache"

    # --- sampling ---

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        if self.asleep:
            self.wake_up()
        todo = [i for i, r in enumerate(requests) if r.max_new_tokens > 0]
        out = [Generation("", (), (), "length") for _ in requests]
        if not todo:
            return out
        prompts = [self.prompt(requests[i]) for i in todo]
        params = [self.params(requests[i]) for i in todo]
        results = self.llm.generate(prompts, params, use_tqdm=False)
        for i, result in zip(todo, results, strict=True):
            out[i] = self.finish(result, requests[i], i)
        return out

    def prompt(self, request: GenerationRequest) -> dict[str, Any]:
        """vLLM's ``TokensPrompt`` of one request: collapsed ids, images in placeholder order."""
        ids = collapse_image_pads(request.prompt_ids, self.image_pad)
        n_pads = ids.count(self.image_pad)
        if n_pads != len(request.images):
            raise ValueError(
                f"the prompt has {n_pads} image placeholders but {len(request.images)} images"
            )
        prompt: dict[str, Any] = {"prompt_token_ids": ids}
        if request.images:
            prompt["multi_modal_data"] = {"image": list(request.images)}
        return prompt

    def params(self, request: GenerationRequest) -> Any:
        """One request's sampling settings (one sample, its own seed)."""
        return self.sampling_params(
            n=1,
            temperature=self.temperature,
            top_p=self.top_p,
            max_tokens=request.max_new_tokens,
            seed=request.seed,
            logprobs=0,  # the sampled token's log-prob only
            stop_token_ids=sorted(self.end_of_turn),
            logit_bias={token: BANNED_BIAS for token in sorted(self.suppressed)},
            skip_special_tokens=False,
        )

    def finish(self, result: Any, request: GenerationRequest, index: int = 0) -> Generation:
        """The ``Generation`` of one ``RequestOutput``, after checking its expanded prompt."""
        expanded = list(result.prompt_token_ids or ())
        if expanded != list(request.prompt_ids):
            raise ValueError(
                f"request {index}: vLLM's expanded prompt has {len(expanded)} tokens, ours "
                f"{len(request.prompt_ids)}"
                + (" (same length, other ids)" if len(expanded) == len(request.prompt_ids) else "")
                + ": the engine's image processor gives an image another number of visual "
                "tokens than ours (compare the model folder's preprocessor_config.json "
                "min_pixels/max_pixels with mmsr's image processor)"
            )
        sample = result.outputs[0]
        ids = [int(t) for t in sample.token_ids]
        if sample.logprobs is None or len(sample.logprobs) != len(ids):
            raise ValueError(f"request {index}: vLLM returned no log-prob for every sampled id")
        logprobs = [float(step[t].logprob) for step, t in zip(sample.logprobs, ids, strict=True)]
        closed = bool(ids) and ids[-1] in self.end_of_turn
        text_ids = ids[:-1] if closed else ids
        return Generation(
            self.decode(text_ids), tuple(ids), tuple(logprobs), "stop" if closed else "length"
        )

    # --- colocation with the trainer ---

    def sleep(self) -> None:
        """Free the engine's GPU memory for the update (KV cache; weights per the level)."""
        if not self.asleep:
            self.llm.sleep(level=self.sleep_level)
            self.asleep = {"weights", "kv_cache"}

    def wake_up(self) -> None:
        """Give the engine back what ``sleep`` took, before the next rollouts."""
        if self.asleep:
            self.llm.wake_up(tags=sorted(self.asleep))
            self.asleep = set()

    def load_weights(self, weights: Iterable[tuple[str, Any]]) -> None:
        """Write ``(name, tensor)`` pairs (transformers' names) into the engine in place.

        Wakes only the weights' memory (the KV cache stays asleep until ``wake_up``, so the
        update's memory and the KV cache are never held together), and resets the prefix
        cache, whose blocks were computed with the old weights.
        """
        if "weights" in self.asleep:
            self.llm.wake_up(tags=["weights"])
            self.asleep.discard("weights")
        self.llm.collective_rpc(_load_weights_on_worker, args=(weights,))
        self.llm.reset_prefix_cache()
