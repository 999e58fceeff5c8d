"""Distributed strategies of the paper configs, through mmengine's ``FlexibleRunner``.

* ``VisionLLMDDPStrategy``: data parallel, the default for LoRA training. Every rank holds the
  whole model (the frozen base in low precision with the model's ``frozen_dtype``); DDP's
  buckets hold only parameters that require gradients, so only the trainable gradients are
  all-reduced.
* ``VisionLLMFSDPStrategy``: fully sharded data parallel with :func:`layer_wrap_policy` (one FSDP
  unit per LLaMA decoder layer, BERT layer and backbone stage; embeddings, output layer and the
  small parts stay in the root unit) and an FSDP ``MixedPrecision`` policy, for LLMs that do not
  fit one GPU. Gradient clipping uses the global norm over all shards.
* ``VisionLLMDeepSpeedStrategy``: mmengine's ``DeepSpeedStrategy`` (ZeRO-2/3) when the
  ``deepspeed`` package is installed.

Both classes also run on CPU-only machines (gloo; no device ids), which is how they are tested.
"""
import os
from typing import Optional, Sequence

import torch
from mmengine._strategy import DDPStrategy, DeepSpeedStrategy, FSDPStrategy, SingleDeviceStrategy
from mmengine.model import is_model_wrapper
from mmengine.model.wrappers import MMFullyShardedDataParallel
from mmengine.registry import FUNCTIONS, MODEL_WRAPPERS, STRATEGIES
from torch import nn

# Class names of the blocks that become one FSDP unit each: the LLaMA-family decoder layer, the
# BERT layer, the InternImage stage. (Matched by name so that any LLaMA-architecture checkpoint
# and both text encoders work without importing every model class here.)
DEFAULT_LAYER_CLASSES = ("LlamaDecoderLayer", "BertLayer", "InternImageBlock")
_RESIDUAL_BLOCKS = ("BasicBlock", "Bottleneck")


def is_resnet_stage(module: nn.Module) -> bool:
    """A ResNet stage (``layer1``..``layer4``): an ``nn.Sequential`` of residual blocks."""
    children = list(module.children())
    return (isinstance(module, nn.Sequential) and bool(children)
            and all(type(c).__name__ in _RESIDUAL_BLOCKS for c in children))


def is_layer_unit(module: nn.Module, layer_classes: Sequence[str] = DEFAULT_LAYER_CLASSES) -> bool:
    return type(module).__name__ in layer_classes or is_resnet_stage(module)


@FUNCTIONS.register_module()
def layer_wrap_policy(module: nn.Module, recurse: bool, nonwrapped_numel: int,
                      layer_classes: Sequence[str] = DEFAULT_LAYER_CLASSES) -> bool:
    """FSDP auto-wrap policy: one unit per decoder / encoder layer and backbone stage.

    FSDP gathers a unit's parameters only while that unit's ``forward`` runs. The task decoder
    calls the LLM's input embedding, output layer, final norm and inner model directly, so those
    must stay in the root unit (gathered for the whole forward of the model); the layers are only
    ever entered through their own ``forward`` and are safe to shard one by one.
    """
    if recurse:
        return True  # look inside every module for layers
    return is_layer_unit(module, layer_classes)


def _cpu_only() -> bool:
    return not torch.cuda.is_available()


@MODEL_WRAPPERS.register_module()
class VisionLLMFullyShardedDataParallel(MMFullyShardedDataParallel):
    """``MMFullyShardedDataParallel`` that shards modules mixing frozen and trainable tensors.

    mmengine leaves every module whose parameters disagree on ``requires_grad`` out of FSDP
    (``ignored_modules``): with LoRA that is every adapted projection and the extended
    vocabulary, whose weights would then be neither sharded nor gradient-synchronised. With
    ``use_orig_params=True`` FSDP keeps ``requires_grad`` per original tensor, so nothing needs
    to be ignored: FSDP is initialised here with mmengine's config parsing but without
    mmengine's ``ignored_modules``.
    """

    def __init__(self, module: nn.Module, use_orig_params: bool = True, sharding_strategy=None,
                 auto_wrap_policy=None, mixed_precision=None, backward_prefetch=None, **kwargs):
        if not use_orig_params:
            raise ValueError("VisionLLMFullyShardedDataParallel needs use_orig_params=True "
                             "(LoRA mixes frozen and trainable tensors in one module)")
        from functools import partial

        from torch.distributed.fsdp import BackwardPrefetch, FullyShardedDataParallel, MixedPrecision, ShardingStrategy
        if isinstance(sharding_strategy, str):
            sharding_strategy = ShardingStrategy[sharding_strategy]
        if isinstance(backward_prefetch, str):
            backward_prefetch = BackwardPrefetch[backward_prefetch]
        if isinstance(auto_wrap_policy, str):
            auto_wrap_policy = FUNCTIONS.get(auto_wrap_policy)
        elif isinstance(auto_wrap_policy, dict):
            auto_wrap_policy = dict(auto_wrap_policy)
            auto_wrap_policy = partial(FUNCTIONS.get(auto_wrap_policy.pop("type")), **auto_wrap_policy)
        if isinstance(mixed_precision, dict):
            mixed_precision = MixedPrecision(**{k: getattr(torch, v) if isinstance(v, str) else v
                                                for k, v in mixed_precision.items()})
        # FSDP cannot flatten 0-d parameters (e.g. a learned scalar bias): they stay outside FSDP,
        # replicated, and their gradients are averaged over the ranks here.
        scalars = [p for p in module.parameters() if p.dim() == 0]
        for param in scalars:
            if param.requires_grad:
                param.register_post_accumulate_grad_hook(_average_over_ranks)
        FullyShardedDataParallel.__init__(
            self, module=module, sharding_strategy=sharding_strategy, auto_wrap_policy=auto_wrap_policy,
            mixed_precision=mixed_precision, backward_prefetch=backward_prefetch, use_orig_params=True,
            ignored_states=scalars or None, **kwargs)


def _average_over_ranks(param: torch.Tensor) -> None:
    import torch.distributed as dist
    if param.grad is not None and dist.is_initialized():
        dist.all_reduce(param.grad)
        param.grad.div_(dist.get_world_size())


def sharded_clip_grad_norm(model: nn.Module):
    """A ``clip_func`` for mmengine's ``OptimWrapper`` that clips by the norm over all shards.

    ``torch.nn.utils.clip_grad_norm_`` on the local parameters of an FSDP model sees only this
    rank's shard, so every rank would clip by a different, too small norm.
    """

    def clip(params, max_norm: float, norm_type: float = 2.0, **_):
        return model.clip_grad_norm_(max_norm, norm_type)

    return clip


@STRATEGIES.register_module()
class VisionLLMDDPStrategy(DDPStrategy):
    """mmengine's ``DDPStrategy`` with CPU-only runs (gloo, no device ids) supported; launched as
    one process (``--launcher none``) it runs the model unwrapped, like ``SingleDeviceStrategy``."""

    def _wrap_model(self, model: nn.Module):
        if not self.distributed:
            return SingleDeviceStrategy._wrap_model(self, model)
        if _cpu_only():
            self.model_wrapper = dict(self.model_wrapper or dict(type="MMDistributedDataParallel",
                                                                 broadcast_buffers=False))
            self.model_wrapper.setdefault("device_ids", None)
        return super()._wrap_model(model)

    def model_state_dict(self) -> dict:
        """The state dict under the model's own names (no ``module.`` of the DDP wrapper), so a
        checkpoint loads into a single-process model, e.g. for inference."""
        from mmengine.runner import weights_to_cpu
        model = self.model.module if is_model_wrapper(self.model) else self.model
        return weights_to_cpu(model.state_dict())


@STRATEGIES.register_module()
class VisionLLMFSDPStrategy(FSDPStrategy):
    """mmengine's ``FSDPStrategy`` with our FSDP wrapper (mixed ``requires_grad`` units sharded),
    global-norm gradient clipping and CPU-only runs."""

    def _wrap_model(self, model: nn.Module):
        self.model_wrapper.setdefault("type", "VisionLLMFullyShardedDataParallel")
        if _cpu_only():
            # FSDP refuses a CPU module unless the CPU is named as its device (gloo runs, tests)
            self.model_wrapper.setdefault("device_id", torch.device("cpu"))
        return super()._wrap_model(model)

    def build_optim_wrapper(self, optim_wrapper, model: Optional[nn.Module] = None):
        wrapper = super().build_optim_wrapper(optim_wrapper, model)
        fsdp_model = model if model is not None else self.model
        if getattr(wrapper, "clip_func", None) is torch.nn.utils.clip_grad_norm_:
            wrapper.clip_func = sharded_clip_grad_norm(fsdp_model)
        return wrapper


def _register_available_deepspeed_optimizers(register_all):
    """mmengine registers DeepSpeed's own optimizers from module paths that newer deepspeed
    releases moved (``deepspeed.runtime.fp16.onebit``); the configs use torch's AdamW, so a
    missing one is not an error."""
    def register():
        try:
            return register_all()
        except ImportError:
            return []
    return register


@STRATEGIES.register_module()
class VisionLLMDeepSpeedStrategy(DeepSpeedStrategy):
    """mmengine's ``DeepSpeedStrategy`` (ZeRO-2/3) that also builds with current deepspeed releases."""

    def __init__(self, **kwargs):
        import mmengine._strategy.deepspeed as deepspeed_strategy
        original = deepspeed_strategy.register_deepspeed_optimizers
        deepspeed_strategy.register_deepspeed_optimizers = _register_available_deepspeed_optimizers(original)
        try:
            super().__init__(**kwargs)
        finally:
            deepspeed_strategy.register_deepspeed_optimizers = original


def strategy_package_missing(strategy_cfg) -> Optional[str]:
    """One line naming the missing package of a configured strategy and the fix, or None."""
    if not strategy_cfg:
        return None
    kind = strategy_cfg.get("type", "")
    if "DeepSpeed" in str(kind):
        try:
            import deepspeed  # noqa: F401
        except ImportError:
            return (f"strategy {kind} needs the deepspeed package, which is not installed: "
                    "pip install deepspeed (or use the DDP / FSDP paper configs)")
    return None


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", 0))
