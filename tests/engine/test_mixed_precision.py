"""Mixed precision of the whole model: training and prediction under CPU bfloat16 autocast
(``AutocastOptimWrapper``), the frozen pretrained base held in bfloat16 (``frozen_dtype``) with
float32 master weights for everything trained, and tools/train.py's ``--amp`` choice."""
import copy
import math

import pytest
import torch
from mmengine.dataset import pseudo_collate

from tiny_model import tiny_model_cfg
from repo_paths import REPO

pytestmark = pytest.mark.slow

BF16_UNIT_ROUNDOFF = 2.0 ** -8  # bfloat16 keeps 8 significant bits


def build(cfg: dict):
    import visionllm.models  # noqa: F401
    from mmengine.registry import init_default_scope

    from visionllm.registry import MODELS
    init_default_scope("visionllm")
    torch.manual_seed(0)
    model = MODELS.build(copy.deepcopy(cfg))
    model.init_weights()
    return model.train()


@pytest.fixture(scope="module")
def batches(tiny_workspace):  # noqa: F811
    import os

    from mmengine.config import Config
    from mmengine.registry import DATASETS, init_default_scope

    import visionllm.datasets  # noqa: F401
    init_default_scope("visionllm")
    repo = REPO
    cfg = Config.fromfile(os.path.join(repo, "configs", "_base_", "datasets", "shapes_all_tasks.py"))
    cwd = os.getcwd()
    os.chdir(tiny_workspace)
    try:
        dataset = DATASETS.build(cfg.train_dataloader.dataset)
        samples = [dataset[i] for i in range(6)]
    finally:
        os.chdir(cwd)
    return [pseudo_collate(samples[i:i + 2]) for i in range(0, 6, 2)]


def train_losses(model, batches, wrapper_type: str):
    from mmengine.optim import build_optim_wrapper

    import visionllm.engine  # noqa: F401  (registers AutocastOptimWrapper)
    wrapper = build_optim_wrapper(model, dict(type=wrapper_type, optimizer=dict(type="AdamW", lr=1e-4),
                                              clip_grad=dict(max_norm=1.0)))
    return [float(model.train_step(batch, wrapper)["loss"]) for batch in batches]


def test_training_and_prediction_under_cpu_bf16_autocast_track_fp32(tiny_llm_dir, batches):  # noqa: F811
    cfg = tiny_model_cfg(tiny_llm_dir)
    reference = train_losses(build(cfg), batches, "OptimWrapper")
    model = build(cfg)
    matmul_dtypes = set()
    hook = model.token_projection.linear.register_forward_hook(lambda m, i, o: matmul_dtypes.add(o.dtype))
    mixed = train_losses(model, batches, "AutocastOptimWrapper")
    hook.remove()
    gaps = [abs(a - b) / abs(a) for a, b in zip(reference, mixed)]
    print(f"fp32 losses {reference}\nbf16 losses {mixed}\nrelative gaps {gaps}")
    assert matmul_dtypes == {torch.bfloat16}, "the forward did not run under bfloat16 autocast"
    assert all(math.isfinite(v) for v in mixed)
    assert mixed != reference  # the low-precision path really ran
    # The loss sums a few dozen terms, each after ~10 rounded matmuls / reductions of length up
    # to a few hundred; random-walk rounding gives a relative error of order
    # u * sqrt(#roundings) ~ 0.4 % * 10 before any update, and three AdamW steps of lr 1e-4
    # move both runs the same way. 5 % is ~10x the expected gap and far below the
    # differences of a broken path (a wrong cast or a skipped term changes a loss by 20 %+).
    assert all(gap < 12 * BF16_UNIT_ROUNDOFF for gap in gaps), gaps
    # Prediction under autocast: finite boxes and scores for every structured sample.
    model.eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        results = model.test_step(batches[0])
    assert len(results) == 2
    for sample in results:
        if "pred_instances" in sample:
            assert torch.isfinite(sample.pred_instances.bboxes.float()).all()
            assert torch.isfinite(sample.pred_instances.scores.float()).all()


def test_frozen_base_in_bf16_keeps_fp32_master_weights(tiny_llm_dir, batches):  # noqa: F811
    from mmengine.optim import build_optim_wrapper
    cfg = tiny_model_cfg(tiny_llm_dir)
    cfg["image_tokenizer"]["text_encoder"] = dict(cfg["image_tokenizer"]["text_encoder"], trainable=False)
    cfg["pretrained_prefixes"] = ("task_decoder.llm", "image_tokenizer.text_encoder.bert")
    reference_keys = build(cfg).frozen_pretrained_keys()
    cfg["frozen_dtype"] = "bfloat16"
    model = build(cfg)
    frozen, trainable = {}, {}
    for name, param in model.named_parameters():
        (trainable if param.requires_grad else frozen)[name] = param
    under_prefix = [n for n in frozen if n.startswith(cfg["pretrained_prefixes"])]
    assert any(".bert." in n for n in under_prefix) and any("base_weight" in n for n in under_prefix)
    assert all(frozen[n].dtype == torch.bfloat16 for n in under_prefix)
    # LoRA and the new token rows sit inside the LLM but train: float32 masters
    assert any("lora_" in n for n in trainable) and any("new_weight" in n for n in trainable)
    assert all(p.dtype == torch.float32 for p in trainable.values())
    # a training step (plain OptimWrapper: the model autocasts itself) gives float32 gradients
    wrapper = build_optim_wrapper(model, dict(type="OptimWrapper", optimizer=dict(type="AdamW", lr=1e-4)))
    with wrapper.optim_context(model):
        data = model.data_preprocessor(batches[0], True)
        losses = model._run_forward(data, mode="loss")
    loss, _ = model.parse_losses(losses)
    assert torch.isfinite(loss)
    wrapper.backward(loss)
    grads = {n: p.grad for n, p in trainable.items() if p.grad is not None}
    assert any("lora_B" in n for n in grads)
    assert all(g.dtype == torch.float32 and torch.isfinite(g).all() for g in grads.values())
    assert all(p.grad is None for p in frozen.values())
    wrapper.step()
    # checkpoints are unchanged: the same keys are left out, and what is kept is float32
    assert sorted(model.frozen_pretrained_keys()) == sorted(reference_keys)
    dropped = set(model.frozen_pretrained_keys())
    kept = {k: v for k, v in model.state_dict().items() if k not in dropped}
    assert all(v.dtype == torch.float32 for v in kept.values() if v.is_floating_point())


def test_amp_picks_a_dtype_the_device_serves(tmp_path, monkeypatch):
    from mmengine.config import Config

    from visionllm.engine.preflight import PreflightError, apply_amp, check_run
    from visionllm.engine.precision import check_device_dtype, pick_amp_dtype
    assert pick_amp_dtype("cpu") == torch.bfloat16
    cfg = Config(dict(model=dict(frozen_dtype="bfloat16"), optim_wrapper=dict(type="OptimWrapper")))
    message = apply_amp(cfg)
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert f"on {expected}" in message and "bfloat16" in message or "float16" in message
    if not torch.cuda.is_available():
        assert cfg.optim_wrapper.type == "AutocastOptimWrapper" and cfg.optim_wrapper.dtype == "bfloat16"
    with pytest.raises(ValueError, match="unknown low-precision dtype 'int8'"):
        check_device_dtype("int8", "cpu")
    bad = Config(dict(model=dict(frozen_dtype="float8"), optim_wrapper=dict(type="OptimWrapper")))
    with pytest.raises(PreflightError, match="float8"):
        check_run(bad)
    # a GPU without bfloat16 (e.g. a V100): --amp falls back to float16, a bf16 config is refused
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a, **k: (7, 0))
    assert pick_amp_dtype("cuda") == torch.float16
    with pytest.raises(ValueError, match=r"compute capability 7.0\) has no bfloat16; use float16"):
        check_device_dtype("bfloat16", "cuda")


def test_bfloat16_on_a_cpu_without_bfloat16_instructions_is_warned_about(monkeypatch):
    from mmengine.config import Config

    import visionllm.engine.preflight as preflight
    monkeypatch.setattr(preflight, "default_device_type", lambda: "cpu")
    plain_cpu, bf16_cpu = {"avx2", "fma"}, {"avx2", "avx512f", "avx512_bf16"}
    frozen = Config(dict(model=dict(frozen_dtype="bfloat16"), optim_wrapper=dict(type="OptimWrapper")))
    amp = Config(dict(model=dict(), optim_wrapper=dict(type="AutocastOptimWrapper", dtype="bfloat16")))
    float32 = Config(dict(model=dict(frozen_dtype=None), optim_wrapper=dict(type="OptimWrapper")))
    half = Config(dict(model=dict(frozen_dtype="float16"), optim_wrapper=None))
    assert "frozen_dtype=None" in preflight.precision_warning(frozen, plain_cpu)
    assert "no bfloat16 instructions" in preflight.precision_warning(amp, plain_cpu)
    assert preflight.precision_warning(frozen, bf16_cpu) is None
    assert preflight.precision_warning(frozen, {"amx_bf16"}) is None
    assert preflight.precision_warning(float32, plain_cpu) is None
    assert preflight.precision_warning(half, plain_cpu) is None
    monkeypatch.setattr(preflight, "default_device_type", lambda: "cuda")
    assert preflight.precision_warning(frozen, plain_cpu) is None


def test_cpu_flags_are_read_from_the_flags_line(tmp_path):
    from visionllm.engine.precision import cpu_flags
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: fpu sse2 avx512_bf16 amx_tile\n")
    assert cpu_flags(str(info)) == {"fpu", "sse2", "avx512_bf16", "amx_tile"}
    assert cpu_flags(str(tmp_path / "missing")) is None
