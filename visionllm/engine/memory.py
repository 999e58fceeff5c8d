"""Memory per GPU and communication per step of a VisionLLM config, for each strategy x precision.

Parameters are counted exactly on the model built on the ``meta`` device (no weights loaded).
Activations have two parts:

* the image tokenizer (backbone, fusion, deformable transformer): **measured** on a real CPU
  forward of a down-scaled copy (image side / ``probe_scale``, InternImage width / ``width_divisor``)
  by summing the tensors autograd saves for backward, then scaled by the pixel ratio (and the
  width ratio for the backbone), which is how convolution and attention activations grow;
* the LLM: **modelled** per token and decoder layer from what a LLaMA layer saves for backward
  with a memory-efficient attention kernel (no L x L matrix): the two RMSNorm inputs in float32,
  their outputs, q, k, v, the attention output, and the four SwiGLU tensors of width
  ``intermediate_size``.

Strategies: DDP (whole model per GPU, trainable gradients all-reduced), FSDP FULL_SHARD with
one unit per layer (parameters, gradients and optimizer state sharded; gathered at a time: the
root unit, two FULL_SHARD layer units (current and prefetched) and every SHARD_GRAD_OP unit, i.e.
the units that may run several times per step, which stay gathered from their first forward to
their backward), DeepSpeed ZeRO-2 (gradients and optimizer state sharded, bf16 module
replicated) and ZeRO-3 (parameters sharded too). AdamW keeps two float32 moments per trained value.
"""
import copy
import json
import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import torch
from torch import nn

from .strategies import is_layer_unit, may_run_repeatedly

GB = 1e9
BERT_BASE = dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072)


# ------------------------------------------------------------------------------------------ model
def meta_model_cfg(model_cfg: dict) -> Tuple[dict, List[str]]:
    """The model config with every pretrained source replaced by a weightless one of the same
    architecture (read from the local directory when it exists, else the paper's sizes)."""
    from visionllm.models.llm.llm_loader import ALPACA_7B_CONFIG
    cfg = copy.deepcopy(model_cfg)
    notes = []
    llm = cfg["task_decoder"].setdefault("llm", {})
    source = llm.get("source", "smollm2")
    if source not in ("meta", "smollm2"):
        config_file = os.path.join(source, "config.json")
        if os.path.isfile(config_file):
            with open(config_file) as handle:
                config = json.load(handle)
            keys = ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
                    "intermediate_size", "vocab_size", "max_position_embeddings", "rms_norm_eps",
                    "tie_word_embeddings")
            llm_config = {k: config[k] for k in keys if k in config}
        else:
            llm_config = dict(ALPACA_7B_CONFIG)
            notes.append(f"{source} not found: the LLM is sized as Alpaca-7B (LLaMA-7B)")
        cfg["task_decoder"]["llm"] = dict(source="meta", config=llm_config)
    text = cfg["image_tokenizer"].get("text_encoder")
    if text is not None and text.get("model_dir") and not os.path.isdir(text["model_dir"]):
        notes.append(f"{text['model_dir']} not found: the text encoder is sized as bert-base")
        text.update(model_dir=None, pretrained=False, config_overrides=BERT_BASE)
    elif text is not None:
        text.update(pretrained=False)
    backbone = cfg["image_tokenizer"].get("backbone") or {}
    if backbone.get("checkpoint"):
        backbone["checkpoint"] = None
    return cfg, notes


def build_meta_model(model_cfg: dict):
    import visionllm.models  # noqa: F401
    from mmengine.registry import init_default_scope

    from visionllm.registry import MODELS
    init_default_scope("visionllm")
    with torch.device("meta"):
        return MODELS.build(model_cfg)


@dataclass
class ParameterBudget:
    """Parameter counts (values, not bytes) that the memory model needs."""
    trainable: int
    frozen: int
    root_unit: int            # parameters outside every layer unit (FSDP root)
    largest_unit: int         # the largest layer unit
    units_with_trainable: int  # parameters of the FSDP units that hold a trainable tensor
    num_units: int
    # Units that may run several times per step (BERT layers, backbone stages): SHARD_GRAD_OP,
    # gathered once and held from their first forward to their backward.
    held_units: int = 0
    largest_resharded_unit: Optional[int] = None  # the largest of the other units (None: largest_unit)

    @property
    def total(self) -> int:
        return self.trainable + self.frozen


def parameter_budget(model: nn.Module) -> ParameterBudget:
    """Counts of a model (each shared tensor once), with its FSDP units as
    :func:`~visionllm.engine.strategies.layer_wrap_policy` forms them."""
    seen, trainable, frozen = set(), 0, 0
    for param in model.parameters():
        if id(param) in seen:
            continue
        seen.add(id(param))
        if param.requires_grad:
            trainable += param.numel()
        else:
            frozen += param.numel()
    units, held, in_units = [], [], set()

    def visit(module):
        for child in module.children():
            if is_layer_unit(child):
                params = [p for p in child.parameters() if id(p) not in in_units]
                in_units.update(id(p) for p in params)
                units.append(params)
                held.append(may_run_repeatedly(child))
            else:
                visit(child)

    visit(model)
    sizes = [sum(p.numel() for p in unit) for unit in units]
    with_trainable = sum(s for s, unit in zip(sizes, units) if any(p.requires_grad for p in unit))
    root = [p for p in model.parameters() if id(p) not in in_units]
    root_size = sum(p.numel() for p in {id(p): p for p in root}.values())
    root_trainable = any(p.requires_grad for p in root)
    return ParameterBudget(trainable=trainable, frozen=frozen, root_unit=root_size,
                           largest_unit=max(sizes, default=0),
                           units_with_trainable=with_trainable + (root_size if root_trainable else 0),
                           num_units=len(units), held_units=sum(s for s, h in zip(sizes, held) if h),
                           largest_resharded_unit=max((s for s, h in zip(sizes, held) if not h), default=0))


# ------------------------------------------------------------------------------------ activations
def sequence_length(num_image_tokens: int, num_slots: int, task: str, num_categories: int,
                    max_points: int) -> int:
    """Tokens per sample in the LLM: instruction (~40 template tokens + ~4 per category name),
    the image tokens, the generated format (~10) and the slot groups decoded in parallel
    (5 fields per box, 1 + 2 * points per polygon)."""
    fields = 5 if task == "detection" else 1 + 2 * max_points
    return 40 + 4 * num_categories + num_image_tokens + 10 + num_slots * fields


def llm_activation_bytes(hidden: int, kv_dim: int, intermediate: int, layers: int, tokens: int,
                         dtype_bytes: int) -> int:
    """What LLaMA decoder layers save for backward (memory-efficient attention), per sample."""
    per_token_layer = 2 * 4 * hidden + dtype_bytes * (5 * hidden + 2 * kv_dim + 4 * intermediate)
    return per_token_layer * layers * tokens


def measure_tokenizer_activations(tokenizer_cfg: dict, image_size: Tuple[int, int], probe_scale: int = 4,
                                  width_divisor: int = 10, instruction: str = "") -> Dict[str, float]:
    """Bytes autograd saves in a float32 training forward of the image tokenizer at full size,
    measured on a copy at ``1 / probe_scale`` of the image side (and an InternImage backbone at
    ``1 / width_divisor`` of its width) and scaled up. Returns ``backbone`` and ``rest`` bytes."""
    import visionllm.models  # noqa: F401
    from mmengine.registry import init_default_scope

    from visionllm.registry import MODELS
    init_default_scope("visionllm")
    cfg = copy.deepcopy(tokenizer_cfg)
    backbone = cfg["backbone"]
    width_scale = 1
    if backbone.get("type") == "InternImageBackbone":
        from visionllm.models.image_tokenizer.backbones.internimage import INTERNIMAGE_VARIANTS
        variant = dict(INTERNIMAGE_VARIANTS[backbone.get("variant", "T").upper()])
        backbone["channels"] = variant["channels"] // width_divisor
        backbone["groups"] = [max(1, g // width_divisor) for g in variant["groups"]]
        width_scale = variant["channels"] / backbone["channels"]
    backbone["checkpoint"] = None
    text = cfg.get("text_encoder") or {}
    if not text.get("trainable", False):  # a frozen encoder saves nothing: any small one will do
        text.update(model_dir=None, pretrained=False, config_overrides=dict(num_hidden_layers=1))
    torch.manual_seed(0)
    model = MODELS.build(cfg).train()
    height, width = (max(64, s // probe_scale) for s in image_size)
    pixel_scale = image_size[0] * image_size[1] / (height * width)
    saved = {"backbone": {}, "rest": {}}
    where = ["rest"]

    def pack(tensor):
        if tensor.requires_grad or tensor.grad_fn is not None or tensor.is_floating_point():
            key = (tensor.untyped_storage().data_ptr(), tensor.dtype)
            saved[where[0]][key] = max(saved[where[0]].get(key, 0), tensor.untyped_storage().nbytes())
        return tensor

    model.backbone.register_forward_pre_hook(lambda *_: where.__setitem__(0, "backbone"))
    model.backbone.register_forward_hook(lambda *_: where.__setitem__(0, "rest"))
    images = torch.randn(1, 3, height, width)
    masks = torch.zeros(1, height, width, dtype=torch.bool)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(images, masks, [instruction or "Detect every object in the image."])
    backbone_bytes = sum(saved["backbone"].values()) * pixel_scale * width_scale
    rest_bytes = sum(saved["rest"].values()) * pixel_scale
    return dict(backbone=backbone_bytes, rest=rest_bytes, probe_size=(height, width), width_scale=width_scale)


# ------------------------------------------------------------------------------------------ table
@dataclass
class Row:
    strategy: str
    precision: str
    params: float       # GB per GPU
    grads: float
    optimizer: float
    activations: float
    communication: float  # GB sent per GPU per optimizer step
    notes: str = ""

    @property
    def total(self) -> float:
        return self.params + self.grads + self.optimizer + self.activations


@dataclass
class Activations:
    """Per-sample activation bytes at float32 (the LLM part also at 16 bits)."""
    tokenizer_fp32: float
    llm_fp32: float
    llm_16: float
    method: str = field(default="")

    def per_gpu(self, precision: str, batch: int) -> float:
        if precision == "fp32":
            return batch * (self.tokenizer_fp32 + self.llm_fp32)
        return batch * (self.tokenizer_fp32 / 2 + self.llm_16)


def memory_table(budget: ParameterBudget, activations: Activations, gpus: int, batch: int) -> List[Row]:
    """Rows (GB per GPU) for DDP / FSDP / ZeRO-2 / ZeRO-3 in float32 and bfloat16."""
    n = gpus
    pt, pf, p = budget.trainable, budget.frozen, budget.total
    gathered = budget.root_unit + 2 * budget.largest_unit  # root + current and prefetched unit
    resharded = budget.largest_unit if budget.largest_resharded_unit is None else budget.largest_resharded_unit
    fsdp_gathered = budget.root_unit + budget.held_units + 2 * resharded  # + the held units
    ring = (n - 1) / n  # bytes a ring collective sends per GPU, per byte of the full tensor
    rows = []
    for precision in ("fp32", "bf16"):
        low = precision == "bf16"
        act = activations.per_gpu(precision, batch) / GB
        # DDP: bf16 = the config's frozen_dtype (frozen base in bf16, trained tensors fp32 +
        # their bf16 autocast copies)
        params = (4 * pt + (2 * pf + 2 * pt if low else 4 * pf)) / GB
        rows.append(Row("DDP", precision, params, 4 * pt / GB, 8 * pt / GB, act,
                        2 * ring * 4 * pt / GB, "all-reduce of the trainable gradients"))
        # FSDP: float32 shards; bf16 = MixedPrecision(param_dtype=bf16, reduce_dtype=fp32)
        unit_bytes = 2 if low else 4
        params = (4 * p / n + unit_bytes * fsdp_gathered) / GB
        # every unit is gathered for forward and again for backward, except those FSDP keeps
        # gathered from forward to backward (once): the SHARD_GRAD_OP units and the root unit
        # (FSDP does not reshard the root after its forward)
        gathered_once = budget.held_units + budget.root_unit
        comm = (ring * unit_bytes * (2 * p - gathered_once) + ring * 4 * budget.units_with_trainable) / GB
        rows.append(Row("FSDP", precision, params, 4 * pt / n / GB, 8 * pt / n / GB, act, comm,
                        "all-gather forward + backward, reduce-scatter of trained units"))
        # DeepSpeed ZeRO: bf16 module + fp32 master of the trained tensors
        module_bytes = 2 if low else 4
        master = 4 * pt / n if low else 0
        grad_bytes = 2 if low else 4
        rows.append(Row("ZeRO-2", precision, (module_bytes * p + master) / GB, grad_bytes * pt / n / GB,
                        8 * pt / n / GB, act, (ring * grad_bytes * pt + ring * module_bytes * pt) / GB,
                        "reduce-scatter of gradients, all-gather of updated weights"))
        rows.append(Row("ZeRO-3", precision, (module_bytes * p / n + master + module_bytes * gathered) / GB,
                        grad_bytes * pt / n / GB, 8 * pt / n / GB, act,
                        (2 * ring * module_bytes * p + ring * grad_bytes * pt) / GB,
                        "all-gather forward + backward, reduce-scatter of gradients"))
    return rows


def format_table(rows: List[Row], gpu_memory: List[float]) -> str:
    head = (f"| strategy | precision | params | grads | optimizer | activations | total GB/GPU | "
            + " | ".join(f"fits {m:g} GB" for m in gpu_memory) + " | comm GB/step/GPU |")
    sep = "|" + "---|" * (8 + len(gpu_memory))
    lines = [head, sep]
    for r in rows:
        fits = " | ".join("yes" if r.total <= 0.9 * m else "no" for m in gpu_memory)
        lines.append(f"| {r.strategy} | {r.precision} | {r.params:.1f} | {r.grads:.1f} | {r.optimizer:.1f} | "
                     f"{r.activations:.1f} | {r.total:.1f} | {fits} | {r.communication:.2f} |")
    return "\n".join(lines)
