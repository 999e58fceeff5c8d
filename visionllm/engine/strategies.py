"""Distributed strategies of the paper configs, through mmengine's ``FlexibleRunner``.

* ``VisionLLMDDPStrategy``: data parallel, the default for LoRA training. Every rank holds the
  whole model (the frozen base in low precision with the model's ``frozen_dtype``); DDP's
  buckets hold only parameters that require gradients, so only the trainable gradients are
  all-reduced.
* ``VisionLLMFSDPStrategy``: fully sharded data parallel with :func:`layer_wrap_policy` (one FSDP
  unit per LLaMA decoder layer, BERT layer and backbone stage; embeddings, output layer and the
  small parts stay in the root unit) and an FSDP ``MixedPrecision`` policy, for LLMs that do not
  fit one GPU. Gradient clipping uses the global norm over all shards. BERT layers and backbone
  stages, which a rank may call a data-dependent number of times per step, are SHARD_GRAD_OP
  units; before each step the gradients are made those of one process (``finish_gradients``).
* ``VisionLLMDeepSpeedStrategy``: mmengine's ``DeepSpeedStrategy`` (ZeRO-2/3) when the
  ``deepspeed`` package is installed.

Both classes also run on CPU-only machines (gloo; no device ids), which is how they are tested.
"""
import contextlib
import os
from functools import partial
from typing import Optional, Sequence

import torch
from mmengine._strategy import DDPStrategy, DeepSpeedStrategy, FSDPStrategy, SingleDeviceStrategy
from mmengine._strategy.deepspeed import MMDeepSpeedEngineWrapper
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


# Units whose forward can run a data-dependent number of times in one step: the BERT layers (the
# instruction on every sample, then the class names / phrase again only on box-task samples) and
# the backbone (once per image when a batch mixes image sizes, ``exact_padding``).
REPEATED_UNIT_CLASSES = ("BertLayer", "InternImageBlock")


def may_run_repeatedly(module: nn.Module) -> bool:
    return type(module).__name__ in REPEATED_UNIT_CLASSES or is_resnet_stage(module)


def layer_unit_policy(sharding_strategy, layer_classes: Sequence[str] = DEFAULT_LAYER_CLASSES):
    """The units of :func:`layer_wrap_policy` as an FSDP ``CustomPolicy`` that also sets each
    unit's sharding strategy.

    A FULL_SHARD unit all-gathers its parameters in every call of its ``forward`` and frees them
    after it; that all-gather is a collective, so every rank must call the unit equally often.
    The units of :func:`may_run_repeatedly` are called more often on a rank whose samples need it
    (a grounding sample encodes its phrase, a caption sample encodes nothing more), so under
    FULL_SHARD the ranks issue different collectives and gloo/NCCL abort or hang. Those units use
    SHARD_GRAD_OP instead: gathered by the first call (which every rank makes), kept until the
    backward, so later calls communicate nothing. (BERT-base and a ResNet are small next to the
    LLM; the LLaMA layers, called once per LLM forward, stay FULL_SHARD.)
    """
    from torch.distributed.fsdp import ShardingStrategy
    from torch.distributed.fsdp.wrap import CustomPolicy
    repeat_safe = {ShardingStrategy.FULL_SHARD: ShardingStrategy.SHARD_GRAD_OP}.get(sharding_strategy)

    def unit(module: nn.Module):
        if not is_layer_unit(module, layer_classes):
            return False
        if repeat_safe is not None and may_run_repeatedly(module):
            return dict(sharding_strategy=repeat_safe)
        return True  # the root's sharding strategy

    return CustomPolicy(unit)


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

        from torch.distributed.fsdp import BackwardPrefetch, FullyShardedDataParallel, MixedPrecision, ShardingStrategy
        if isinstance(sharding_strategy, str):
            sharding_strategy = ShardingStrategy[sharding_strategy]
        if isinstance(backward_prefetch, str):
            backward_prefetch = BackwardPrefetch[backward_prefetch]
        if isinstance(auto_wrap_policy, str):
            auto_wrap_policy = dict(type=auto_wrap_policy)
        if isinstance(auto_wrap_policy, dict):
            policy_args = dict(auto_wrap_policy)
            policy = FUNCTIONS.get(policy_args.pop("type"))
            if policy is layer_wrap_policy:  # its units, each with a sharding strategy that is safe for it
                auto_wrap_policy = layer_unit_policy(sharding_strategy or ShardingStrategy.FULL_SHARD, **policy_args)
            else:
                auto_wrap_policy = partial(policy, **policy_args)
        if isinstance(mixed_precision, dict):
            mixed_precision = MixedPrecision(**{k: getattr(torch, v) if isinstance(v, str) else v
                                                for k, v in mixed_precision.items()})
        # FSDP cannot flatten 0-d parameters (e.g. a learned scalar bias): they stay outside FSDP,
        # replicated on every rank; `finish_gradients` averages their gradients.
        scalars = [p for p in module.parameters() if p.dim() == 0]
        FullyShardedDataParallel.__init__(
            self, module=module, sharding_strategy=sharding_strategy, auto_wrap_policy=auto_wrap_policy,
            mixed_precision=mixed_precision, backward_prefetch=backward_prefetch, use_orig_params=True,
            ignored_states=scalars or None, **kwargs)
        self._replicated_params = scalars
        # ids of the parameters some gradient reached since the last step, on this rank
        self._used_since_step = set()
        for unit in FullyShardedDataParallel.fsdp_modules(self):
            unit._fsdp_wrapped_module.register_forward_pre_hook(partial(_record_use, unit, self._used_since_step))

    def finish_gradients(self) -> None:
        """Give the optimizer the gradients one process over all ranks' samples would have.

        Runs on every rank before clipping and the optimizer step (its collectives must not depend
        on what a rank's samples used). Two things differ from one process after FSDP's backward:

        * the parameters kept outside FSDP (0-d ones) hold this rank's gradient only: they are
          averaged here. Doing it in a per-parameter gradient hook instead deadlocks, because the
          hook fires only on ranks whose sample used the parameter (a name-alignment bias on a
          detection sample, not on a caption sample);
        * FSDP reduces whole flat units, so a trainable parameter that no rank's sample used
          (e.g. the detection heads in a step of captions and questions) gets a zero gradient
          where one process leaves ``grad=None``, and AdamW would still move it by its momentum
          and weight decay. Such gradients are set back to None (as DDP does). Use is recorded
          by autograd hooks on the parameter views FSDP builds in each unit's forward (a zero
          gradient is no sign: a LoRA ``A`` has one while its ``B`` is still zero).
        """
        import torch.distributed as dist
        if not dist.is_initialized() or dist.get_world_size() == 1:
            return
        replicated = [p for p in self._replicated_params if p.requires_grad]
        replicated_ids = {id(p) for p in self._replicated_params}
        sharded = [p for p in self.parameters() if p.requires_grad and id(p) not in replicated_ids]
        params = replicated + sharded
        if not params:
            return
        device = params[0].device
        # one all-reduce: the replicated gradients, then per parameter whether a gradient reached
        # it on this rank
        zero, one = torch.zeros((), device=device), torch.ones((), device=device)
        grads = [p.grad.detach().reshape(-1).float() if p.grad is not None else torch.zeros(p.numel(), device=device)
                 for p in replicated]
        used = [one if p.grad is not None else zero for p in replicated]
        used += [one if id(p) in self._used_since_step else zero for p in sharded]
        self._used_since_step.clear()
        flat = torch.cat(grads + [torch.stack(used)])
        dist.all_reduce(flat)
        num_grads = flat.numel() - len(params)
        sums = flat[:num_grads].split([p.numel() for p in replicated]) if replicated else []
        used = flat[num_grads:].tolist()
        for param, total, ranks_used in zip(replicated, sums, used):
            if ranks_used > 0:
                param.grad = (total / dist.get_world_size()).view_as(param).to(param.dtype)
        for param, ranks_used in zip(sharded, used[len(replicated):]):
            if ranks_used == 0:
                param.grad = None


def _record_use(unit, used: set, module: nn.Module, args) -> None:
    """Forward pre-hook of an FSDP unit's wrapped module: FSDP has just put views of the gathered
    flat parameter in place of the original parameters; a gradient reaching a view marks its
    parameter as used in this step (whatever the gradient's value)."""
    handle = unit._handle
    if handle is None or not torch.is_grad_enabled() or not handle.flat_param.requires_grad:
        return
    flat = handle.flat_param
    for param, view in zip(flat._params or [], flat._tensors or []):
        if param is not None and param.requires_grad and view is not None and view.grad_fn is not None:
            view.register_hook(partial(_mark_used, used, id(param)))


def _mark_used(used: set, param_id: int, grad: torch.Tensor) -> None:
    used.add(param_id)


def add_fresh_optimizer_state(optimizer: torch.optim.Optimizer) -> None:
    """Give every trainable parameter (with local values) that has no optimizer state the state a
    torch optimizer creates before its first update of it: each state entry of another parameter
    of the same group, zeroed (AdamW: step 0, both moments 0, which AdamW's next step treats
    exactly like a missing state). Nothing is added to a group without any state yet."""
    for group in optimizer.param_groups:
        # an exemplar with at least one dimension tells per-value state (param-shaped) from scalars
        stated = [p for p in group["params"] if optimizer.state.get(p) and p.dim() > 0]
        if not stated:
            continue
        exemplar_param = stated[0]
        exemplar = optimizer.state[exemplar_param]

        def fresh(value, param):
            if torch.is_tensor(value):
                return torch.zeros_like(param) if value.shape == exemplar_param.shape else torch.zeros_like(value)
            return type(value)(0) if isinstance(value, (int, float)) else value

        for param in group["params"]:
            if param.requires_grad and param.numel() > 0 and not optimizer.state.get(param):
                optimizer.state[param] = {key: fresh(value, param) for key, value in exemplar.items()}


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

    def optim_state_dict(self) -> dict:
        """FSDP's optimizer state dict, after giving the parameters that never had a gradient
        the state the optimizer would create at their first step.

        FSDP (``use_orig_params``) refuses to save a unit's state when some of its trainable
        parameters have optimizer state and others have none; here a parameter has none until a
        step in which some rank's sample used it (``finish_gradients``), as in one process.
        """
        add_fresh_optimizer_state(self.optim_wrapper.optimizer)
        return super().optim_state_dict()

    def build_optim_wrapper(self, optim_wrapper, model: Optional[nn.Module] = None):
        wrapper = super().build_optim_wrapper(optim_wrapper, model)
        fsdp_model = model if model is not None else self.model
        if getattr(wrapper, "clip_func", None) is torch.nn.utils.clip_grad_norm_:
            wrapper.clip_func = sharded_clip_grad_norm(fsdp_model)
        if hasattr(fsdp_model, "finish_gradients"):
            wrapper.step = _finishing_gradients_first(wrapper.step, fsdp_model)
        return wrapper


def _finishing_gradients_first(step, fsdp_model):
    """The optimizer wrapper's ``step`` (clipping, then the optimizer's step) preceded by
    ``fsdp_model.finish_gradients()``, so that clipping and the update see the same gradients
    on every rank. ``step`` runs on every rank exactly at each update (after the last
    accumulated iteration), which makes it the place for that collective."""

    def step_after_finishing(**kwargs):
        fsdp_model.finish_gradients()
        return step(**kwargs)

    return step_after_finishing


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


def _skip_shared_memory_comm_build() -> None:
    """Stop DeepSpeed from JIT-compiling its CPU shared-memory all-reduce when it cannot be used.

    On the CPU accelerator every ``deepspeed.initialize`` / ``init_distributed`` compiles the
    ``deepspeed_shm_comm`` C++ op with ninja (each rank; the others wait on its file lock), but
    the op only serves ``inference_all_reduce`` and only when ``LOCAL_SIZE`` equals the world size,
    which torchrun does not set. On a loaded 2-core machine the compile took over 10 minutes:
    that was the "stall inside deepspeed.initialize". Marking the op incompatible makes
    DeepSpeed use the process group's collectives, as it does on machines without a compiler.
    """
    if os.environ.get("LOCAL_SIZE"):
        return
    from deepspeed.accelerator import get_accelerator
    if get_accelerator().device_name() != "cpu":
        return
    import deepspeed.ops
    deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False


@MODEL_WRAPPERS.register_module()
class RankIndependentDeepSpeedEngineWrapper(MMDeepSpeedEngineWrapper):
    """mmengine's DeepSpeed engine wrapper whose backward reduces the same gradients in the same
    order on every rank, whatever each rank's samples used.

    ZeRO-1/2 reduce gradients in buckets filled by per-parameter hooks in the order autograd
    reaches the parameters, and only for parameters that got a gradient. With multi-task batches
    the ranks run different graphs (a grounding sample encodes its phrase and decodes boxes, a
    caption sample does neither), so their buckets hold different parameters in a different
    order: the reductions then mismatch (gloo aborts or hangs) or silently add the gradients of
    different parameters. Here the loss's gradients are computed first with ``autograd.grad``
    (no DeepSpeed hook runs), then DeepSpeed's backward runs on ``sum_i <p_i, g_i>`` over every
    trainable parameter in ``parameters()`` order (``g_i = 0`` where this rank's sample did not
    use ``p_i``), whose gradient is exactly ``g_i`` and whose graph is the same on every rank.
    Costs one transient copy of the trainable gradients. ZeRO-3 gathers parameters in forward
    hooks (collectives too), which this cannot make rank-independent: it is refused.
    """

    def train_step(self, data, optim_wrapper):
        if self.model.zero_optimization_partition_weights():
            raise RuntimeError("RankIndependentDeepSpeedEngineWrapper supports ZeRO stages 0-2, not ZeRO-3 "
                               "(use the FSDP configs for sharded parameters)")
        module = self.model.module
        data = module.data_preprocessor(data, training=True)
        data = self._cast_inputs_half(data)
        # the module itself, not the engine: the engine's forward would attach its backward
        # hooks to these outputs, and they must run only in the ordered backward below
        with self._compute_precision():
            losses = module(**data, mode="loss") if isinstance(data, dict) else module(*data, mode="loss")
        parsed_loss, log_vars = module.parse_losses(losses)
        optim_wrapper.update_params(rank_independent_loss(parsed_loss, module))
        return log_vars

    def _run_forward(self, data, mode: str):
        with self._compute_precision():
            return super()._run_forward(data, mode)

    def _compute_precision(self):
        """DeepSpeed's bf16 / fp16 modes cast the whole module; the data (images, and tensors the
        model makes in float32) is not, so the forward runs under autocast of that dtype."""
        engine = self.model
        dtype = torch.bfloat16 if engine.bfloat16_enabled() else torch.float16 if engine.fp16_enabled() else None
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(torch.device(engine.device).type, dtype=dtype)


def rank_independent_loss(loss: torch.Tensor, module: nn.Module) -> torch.Tensor:
    """A scalar whose gradient w.r.t. every trainable parameter of ``module`` equals that of
    ``loss`` (zero where ``loss`` does not depend on it) and whose backward graph, hence the order
    in which parameters receive gradients, depends only on the module, not on the data."""
    params = [p for p in module.parameters() if p.requires_grad]
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    total = loss.new_zeros(())
    for param, grad in zip(params, grads):
        grad = torch.zeros_like(param) if grad is None else grad.detach()
        total = total + (param * grad).sum().to(total.dtype)
    return total


def _broadcasting_scalars_too(broadcast_model):
    """DeepSpeed's ``_broadcast_model`` (rank 0's weights to all ranks at ``initialize``) for a
    model with 0-d parameters (a learned scalar bias): DeepSpeed broadcasts ``p.data.view(uint8)``,
    which torch refuses for a 0-d float tensor. The 0-d parameters are given 1-element views of
    their own storage for the broadcast and their own shape back afterwards."""

    def broadcast(engine):
        scalars = [(p, p.data) for p in engine.module.parameters() if p.dim() == 0]
        for param, data in scalars:
            param.data = data.reshape(1)
        try:
            return broadcast_model(engine)
        finally:
            for param, data in scalars:
                param.data = data

    return broadcast


# The file name suffix of the directory where DeepSpeed writes its resumable state (each rank's
# ZeRO partitions) next to the ordinary checkpoint file of the same iteration.
ZERO_STATE_SUFFIX = ".zero"


@STRATEGIES.register_module()
class VisionLLMDeepSpeedStrategy(DeepSpeedStrategy):
    """mmengine's ``DeepSpeedStrategy`` (ZeRO-2/3) made to work for this model and its checkpoints.

    * builds with current deepspeed releases (moved optimizer modules) and does not compile the
      CPU shared-memory op on CPU runs (:func:`_skip_shared_memory_comm_build`);
    * ZeRO-1/2 with multi-task batches: :class:`RankIndependentDeepSpeedEngineWrapper`;
    * checkpoints: ``iter_N.pth`` is an ordinary file written by rank 0 (the model's own names,
      the trainable state after the checkpoint hooks, loadable for inference and as ``load_from``,
      like the DDP / FSDP checkpoints) and ``iter_N.pth.zero/`` holds DeepSpeed's resumable state
      (optimizer partitions), which ``--resume`` reads.
    """

    def __init__(self, **kwargs):
        import mmengine._strategy.deepspeed as deepspeed_strategy
        original = deepspeed_strategy.register_deepspeed_optimizers
        deepspeed_strategy.register_deepspeed_optimizers = _register_available_deepspeed_optimizers(original)
        try:
            super().__init__(**kwargs)
        finally:
            deepspeed_strategy.register_deepspeed_optimizers = original
        _skip_shared_memory_comm_build()

    def _wrap_model(self, model: nn.Module):
        from deepspeed.runtime.engine import DeepSpeedEngine
        original = DeepSpeedEngine._broadcast_model
        DeepSpeedEngine._broadcast_model = _broadcasting_scalars_too(original)
        try:
            wrapper = super()._wrap_model(model)
        finally:
            DeepSpeedEngine._broadcast_model = original
        if wrapper.model.zero_optimization_partition_weights():
            return wrapper  # ZeRO-3: the ranks must run the same graph (see the docs)
        return RankIndependentDeepSpeedEngineWrapper(model=wrapper.model, inputs_to_half=self._inputs_to_half)

    def save_checkpoint(self, filename: str, *, save_optimizer: bool = True, save_param_scheduler: bool = True,
                        extra_ckpt: Optional[dict] = None, callback=None) -> None:
        import torch.distributed as dist
        from mmengine.runner.checkpoint import save_checkpoint, weights_to_cpu
        extra_ckpt = dict(extra_ckpt or {})
        super().save_checkpoint(filename + ZERO_STATE_SUFFIX, save_optimizer=save_optimizer,
                                save_param_scheduler=save_param_scheduler, extra_ckpt=dict(extra_ckpt))
        engine = self.model.model
        if engine.zero_optimization_partition_weights():
            state = engine._zero3_consolidated_16bit_state_dict()  # gathered on rank 0 (collective)
        else:
            state = engine.module.state_dict()
        if not dist.is_initialized() or dist.get_rank() == 0:
            checkpoint = dict(extra_ckpt, state_dict=weights_to_cpu(state))
            if callback is not None:
                callback(checkpoint)  # the checkpoint hooks (trainable state only, plain message hub)
            save_checkpoint(checkpoint, filename)

    def load_checkpoint(self, filename: str, **kwargs) -> dict:
        """``load_from``: an ordinary checkpoint file (of any strategy; read and key-checked by
        ``load_trained_checkpoint``) into the engine's module, then DeepSpeed's fp32 master
        weights refreshed from it; a DeepSpeed directory as mmengine does."""
        if os.path.isdir(filename):
            return super().load_checkpoint(filename, **kwargs)
        from .checkpoint import load_trained_checkpoint, read_checkpoint
        engine = self.model.model
        load_trained_checkpoint(engine.module, filename)
        if hasattr(engine.optimizer, "refresh_fp32_params"):
            engine.optimizer.refresh_fp32_params()
        return read_checkpoint(filename)

    def resume(self, filename: str, **kwargs) -> dict:
        zero_dir = filename + ZERO_STATE_SUFFIX
        if not os.path.isdir(zero_dir):
            raise FileNotFoundError(f"cannot resume DeepSpeed training from {filename}: its DeepSpeed state "
                                    f"{zero_dir} is missing (start a new run with load_from={filename!r})")
        return super().resume(zero_dir, **kwargs)


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
