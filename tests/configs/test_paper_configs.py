"""The paper-setting configs (R50 / InternImage-H + Alpaca-7B, stages 1 and 2) load, build on the
`meta` device (no 7B weights exist here) and train exactly the parameters the paper schedule says:
stage 1 trains backbone, tokenizer, LoRA and the new token rows; stage 2 freezes the backbone."""
import copy
import functools
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from parameter_counts import (BERT_BASE, bert_params, internimage_params, ms_deform_attn_params, projection_params,
                              resnet_params, tokenizer_params)
from repo_paths import REPO

from visionllm.models.llm.llm_loader import ALPACA_7B_CONFIG, lora_parameter_count
from visionllm.registry import MODELS

import visionllm.models  # noqa: F401  (registers the modules)
from visionllm.models.image_tokenizer.backbones import INTERNIMAGE_VARIANTS

CONFIG_DIR = osp.join(REPO, "configs")
BACKBONES = ("r50", "internimage_h")


def config_path(backbone: str, stage: int) -> str:
    return osp.join(CONFIG_DIR, f"visionllm_{backbone}_alpaca7b_stage{stage}.py")


def meta_model_cfg(cfg: Config) -> dict:
    """The model config with every pretrained source swapped for a weightless one of equal shape."""
    model = copy.deepcopy(cfg.model.to_dict())
    model["task_decoder"]["llm"] = dict(source="meta")  # Alpaca-7B sizes, no files
    text = model["image_tokenizer"]["text_encoder"]
    # bert-base architecture (the embedded MiniLM directory provides the tokenizer and vocabulary)
    text.update(model_dir=None, pretrained=False, config_overrides=BERT_BASE)
    model["image_tokenizer"]["backbone"]["checkpoint"] = None
    return model


def count(params) -> int:
    return sum(p.numel() for p in params)


def resnet50_frozen_params() -> int:
    """Parameters frozen by ``frozen_stages=1, norm_eval=True``: stem, layer1, and every batch
    norm's affine parameters in layer2..layer4."""
    frozen = 3 * 64 * 7 * 7 + 2 * 64  # conv1 + bn1
    inplanes = 64
    for stage, num in enumerate((3, 4, 6, 3)):
        planes = 64 * 2 ** stage
        for i in range(num):
            convs = inplanes * planes + 9 * planes * planes + planes * 4 * planes
            norms = 2 * planes + 2 * planes + 2 * 4 * planes
            if i == 0:  # downsample conv + bn
                convs += inplanes * 4 * planes
                norms += 2 * 4 * planes
            frozen += norms + (convs if stage == 0 else 0)
            inplanes = 4 * planes
    return frozen


def backbone_sizes(backbone: str):
    """(all backbone parameters, the stage-1 trainable ones), from the architecture formulas."""
    if backbone == "r50":
        total = resnet_params(50) + projection_params([512, 1024, 2048], 256)
        return total, total - resnet50_frozen_params()
    total = internimage_params(**INTERNIMAGE_VARIANTS["H"]) + projection_params([640, 1280, 2560], 256)
    return total, total


def refinement_params(c=256, levels=4, heads=4, points=4, ffn=512, layers=2, feats=16) -> dict:
    """The box and polygon refinements on the tokenizer memory (their default sizes)."""
    def step(out):  # deformable attention + LayerNorm + FFN + LayerNorm + 2-layer correction
        return (ms_deform_attn_params(c, levels, heads, points) + 2 * c + (c * ffn + ffn + ffn * c + c) + 2 * c
                + (c * c + c) + (c * out + out))
    box = layers * step(4) + 4 * feats * c + c                            # + box position encoding
    polygon = (layers * (step(2) + 4 * c * c + 4 * c + 2 * c)             # + vertex self-attention, LayerNorm
               + 2 * feats * c + c + 4 * feats * c + c)                    # + vertex and extent encodings
    return dict(box=box, polygon=polygon)


def image_readout_params(hidden: int, layers: int, dims=128) -> int:
    # per LLM layer: two RMSNorms, query / key / value / out maps, learned null key and value
    return layers * (2 * hidden + 4 * hidden * dims + 2 * dims)


def expected_trainable(cfg: Config, backbone: str, stage: int) -> int:
    decoder = cfg.model.task_decoder
    hidden, layers = ALPACA_7B_CONFIG["hidden_size"], ALPACA_7B_CONFIG["num_hidden_layers"]
    special = decoder.special_tokens
    num_new = special.num_bins + special.num_classes + 1 + 2 * special.max_points + 1  # + no-object, <cls>
    llm = (lora_parameter_count(hidden, layers, decoder.lora.rank)
           + 2 * num_new * hidden                   # new input rows + new output rows (untied)
           + hidden * hidden + 2 * hidden           # slot projection (+ its RMS gain)
           + 2 * 64 * hidden                        # class pointer (query + key, rank 64)
           + image_readout_params(hidden, layers) + sum(refinement_params().values()))
    projection = 256 * hidden + 2 * hidden         # image tokens → LLM width (+ its RMS gain)
    projection += hidden                            # the instruction-relevance vector
    projection += 256 * hidden + hidden             # the region read-out (memory width → LLM width)
    backbone_total, backbone_trainable = backbone_sizes(backbone)
    # the tokenizer with a frozen BERT (its projection + LayerNorm train)
    tokenizer = tokenizer_params(backbone_total) - bert_params() - backbone_total
    return llm + projection + tokenizer + (backbone_trainable if stage == 1 else 0)


@functools.lru_cache(maxsize=None)
def build(backbone: str, stage: int):
    cfg = Config.fromfile(config_path(backbone, stage))
    init_default_scope(cfg.default_scope)  # the data preprocessor is built by mmengine's BaseModel
    with torch.device("meta"):
        model = MODELS.build(meta_model_cfg(cfg))
    return cfg, model


@pytest.mark.parametrize("stage", [1, 2])
@pytest.mark.parametrize("backbone", BACKBONES)
def test_paper_config_loads_with_paper_settings(backbone, stage):
    cfg = Config.fromfile(config_path(backbone, stage))
    cfg.pretty_text  # the runner dumps it; must be valid
    tokenizer, decoder = cfg.model.image_tokenizer, cfg.model.task_decoder
    assert tokenizer.transformer.num_queries == 100
    assert (decoder.special_tokens.num_bins, decoder.special_tokens.num_classes) == (1025, 512)
    assert decoder.lora is not None and decoder.prompt_style == "alpaca"
    assert decoder.llm.source == cfg.llm_path and tokenizer.text_encoder.model_dir == cfg.text_encoder_path
    assert cfg.optim_wrapper.optimizer.type == "AdamW" and cfg.optim_wrapper.optimizer.lr == 2e-4
    assert [s.type for s in cfg.param_scheduler] == ["LinearLR", "CosineAnnealingLR"]
    # DDP with the frozen base in bfloat16 (LoRA training); the FSDP variant is a separate config
    assert cfg.runner_type == "FlexibleRunner" and cfg.strategy.type == "VisionLLMDDPStrategy"
    assert cfg.model.frozen_dtype == "bfloat16"
    assert tokenizer.freeze_backbone is (stage == 2)
    dataset = cfg.train_dataloader.dataset
    if stage == 1:  # detection only
        assert dataset.type == "CocoInstancesDataset" and dataset.task == "detection"
        assert cfg.load_from is None
    else:  # all tasks mixed, from the stage-1 weights
        tasks = {d.get("task", d.type) for d in dataset.datasets}
        assert {"detection", "segmentation", "RefCocoDataset", "CocoCaptionDataset",
                "LlavaInstructDataset"} <= tasks
        assert cfg.load_from == osp.join(cfg.work_dir.replace("stage2", "stage1"), f"iter_{cfg.max_iters}.pth")


@pytest.mark.parametrize("backbone", BACKBONES)
def test_paper_models_build_on_meta_with_expected_trainable_parameters(backbone):
    counts = {}
    for stage in (1, 2):
        cfg, model = build(backbone, stage)
        assert all(p.is_meta for p in model.parameters())
        total = count(model.parameters())
        trainable = count(p for p in model.parameters() if p.requires_grad)
        backbone_trainable = count(p for p in model.image_tokenizer.backbone.parameters() if p.requires_grad)
        print(f"{backbone} stage {stage}: {total / 1e9:.3f} B parameters, {trainable / 1e6:.2f} M trainable "
              f"(backbone {backbone_trainable / 1e6:.2f} M)")
        counts[stage] = (total, trainable, backbone_trainable)
        assert trainable == expected_trainable(cfg, backbone, stage)
        # The base LLM is frozen: only LoRA, the new token rows and the parts built on it train.
        llm_trainable = [n for n, p in model.task_decoder.named_parameters() if p.requires_grad]
        assert llm_trainable
        assert all("lora_" in n or "new_weight" in n
                   or n.startswith(("slot_proj", "class_pointer", "image_readout", "box_refinement",
                                    "polygon_refinement"))
                   for n in llm_trainable)
        # The tokenizer's transformer and fusion train in both stages; BERT in neither.
        assert all(p.requires_grad for p in model.image_tokenizer.transformer.parameters())
        assert all(p.requires_grad for p in model.image_tokenizer.fusion.parameters())
        assert not any(p.requires_grad for p in model.image_tokenizer.text_encoder.bert.parameters())
    assert counts[1][0] == counts[2][0]  # same architecture
    assert counts[1][2] == backbone_sizes(backbone)[1] > 0 and counts[2][2] == 0
    assert counts[2][1] == counts[1][1] - counts[1][2]


@pytest.mark.parametrize("backbone", BACKBONES)
def test_fsdp_units_never_hold_what_the_task_decoder_calls_directly(backbone):
    """FSDP gathers a unit's parameters only inside that unit's forward. The task decoder calls
    the LLM's input embedding, output layer and inner model directly, so the config's wrap policy,
    applied as FSDP applies it, must leave them to the root unit (or wrap nothing)."""
    from torch.distributed.fsdp.wrap import _recursive_wrap, size_based_auto_wrap_policy

    cfg, model = build(backbone, 1)

    def units_of(policy):
        units = []

        def record(module, **_):
            units.append(module)
            return module

        _recursive_wrap(model, policy, record, ignored_modules=set(), ignored_params=set(), only_wrap_children=True)
        return units

    llm = model.task_decoder.llm
    direct = [llm, llm.model, model.task_decoder.embed_tokens, model.task_decoder.head, llm.model.norm]

    def unsafe(units):
        return [u for u in units if any(d is u or any(m is d for m in u.modules()) for d in direct)]

    from mmengine.registry import FUNCTIONS

    import visionllm.engine  # noqa: F401  (registers layer_wrap_policy)
    fsdp_cfg = Config.fromfile(config_path(backbone, 1).replace(".py", "_fsdp.py"))
    assert fsdp_cfg.strategy.type == "VisionLLMFSDPStrategy" and fsdp_cfg.model.frozen_dtype is None
    policy_cfg = dict(fsdp_cfg.strategy.model_wrapper.auto_wrap_policy)
    policy = functools.partial(FUNCTIONS.get(policy_cfg.pop("type")), **policy_cfg)
    units = units_of(policy)
    print(f"{backbone}: {len(units)} FSDP units besides the root")
    assert not unsafe(units)
    # ... and it is per layer: every LLaMA decoder layer, BERT layer and backbone stage is a unit
    layers = list(llm.model.layers) + list(model.image_tokenizer.text_encoder.bert.encoder.layer)
    body = model.image_tokenizer.backbone.body
    layers += ([getattr(body, f"layer{i}") for i in range(1, 5)] if backbone == "r50" else list(body.levels))
    assert all(any(u is layer for u in units) for layer in layers)
    assert len(units) == len(layers)
    # The check has teeth: the size-based policy that isolates one decoder layer per unit also
    # wraps the LLM's remainder (embedding + output layer), which the decoder calls directly.
    tempting = units_of(functools.partial(size_based_auto_wrap_policy, min_num_params=int(2e8)))
    assert all(any(u is layer for u in tempting) for layer in llm.model.layers) and unsafe(tempting)


@pytest.mark.parametrize("variant", ["stage2", "stage1_fsdp"])
def test_paper_config_builds_its_flexible_runner(tmp_path, variant):
    """tools/train.py's runner construction accepts the configs: FlexibleRunner with the DDP
    strategy (stage 2: the stage-1 checkpoint as load_from) or the FSDP one (full state dicts),
    our checkpoint hooks. (The model itself is built at train() time; nothing is built here.)"""
    import uuid

    from mmengine.runner import FlexibleRunner
    from torch.distributed.fsdp import StateDictType

    from visionllm.apis.runner import build_runner, load_config

    cfg = load_config(osp.join(CONFIG_DIR, f"visionllm_r50_alpaca7b_{variant}.py"), work_dir=str(tmp_path))
    cfg.experiment_name = f"paper-config-{uuid.uuid4().hex[:8]}"
    runner = build_runner(cfg)
    assert isinstance(runner, FlexibleRunner)
    if variant == "stage1_fsdp":
        assert type(runner.strategy).__name__ == "VisionLLMFSDPStrategy"
        assert runner.strategy.state_dict_type == StateDictType.FULL_STATE_DICT
    else:
        assert type(runner.strategy).__name__ == "VisionLLMDDPStrategy"
    assert runner._load_from == cfg.load_from
    assert {"CheckpointHook", "TrainableStateCheckpointHook"} <= {type(h).__name__ for h in runner.hooks}
