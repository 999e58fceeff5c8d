"""The paper configs' distributed strategies, run for real: 2 gloo processes on the CPU.

A down-scaled paper config (configs/visionllm_r50_alpaca7b_stage1.py with tiny widths, a small
random LLaMA and a small BERT written by the test as Hugging Face directories, i.e. the loading
code of Alpaca-7B and bert-base) trains with its DDP strategy, with the per-layer FSDP strategy
and (when deepspeed is installed) with DeepSpeed ZeRO-2. The reference is one process over the
same samples: batch 1 and gradient accumulation over 2 iterations, so each of its optimizer steps
averages the gradients of exactly the two samples the two ranks see in the matching distributed
step (rank r reads samples r, r + 2, ...).
The losses of rank 0 must then equal the reference's losses of samples 0, 2, 4, ... and the
checkpoint rank 0 writes must load into a single-process model that predicts.
"""
import importlib.util
import json
import os
import subprocess
import sys

import pytest
import torch

from tiny_llm import save_tiny_llama
from repo_paths import REPO

TESTS = os.path.dirname(os.path.abspath(__file__))
STEPS = 3  # optimizer steps per run

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def paper_llm_dir(tmp_path_factory, smollm2_tokenizer_dir):  # noqa: F811
    # Untied input / output tables, as Alpaca-7B.
    return save_tiny_llama(tmp_path_factory.mktemp("small_llama"), smollm2_tokenizer_dir, tie=False)


@pytest.fixture(scope="module")
def paper_bert_dir(tmp_path_factory):
    """A 2-layer random BERT with the embedded MiniLM vocabulary, saved like bert-base-uncased."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    from visionllm.utils.embedded import minilm_dir
    out = tmp_path_factory.mktemp("small_bert")
    tokenizer = AutoTokenizer.from_pretrained(minilm_dir())
    torch.manual_seed(0)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    BertModel(config, add_pooling_layer=False).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return str(out)


def write_paper_config(directory, llm_dir: str, bert_dir: str, strategy: str, accumulate: int) -> str:
    """configs/visionllm_r50_alpaca7b_stage1.py with sizes and data made small; ``strategy`` is
    ``'ddp'`` (the config's default: frozen base in bfloat16) or ``'fsdp'``
    (visionllm_r50_alpaca7b_stage1_fsdp.py, float32 so that it must match the reference closely)."""
    from mmengine.config import Config
    shapes = Config.fromfile(os.path.join(REPO, "configs", "_base_", "datasets", "shapes_all_tasks.py"))
    dataset = shapes.train_dataloader.dataset.to_dict()
    dataset["length"] = 64
    base = "visionllm_r50_alpaca7b_stage1" + {"ddp": "", "fsdp": "_fsdp", "deepspeed": "_deepspeed"}[strategy]
    iters = STEPS * accumulate
    text = f"""
_base_ = ["{REPO}/configs/{base}.py"]
custom_imports = dict(imports=["visionllm.models", "visionllm.datasets", "visionllm.evaluation", "visionllm.engine",
                               "dist_loss_recorder"], allow_failed_imports=False)
model = dict(
    image_tokenizer=dict(
        embed_dims=32,
        backbone=dict(depth=18, checkpoint=None, zero_init_last=False),
        text_encoder=dict(model_dir={bert_dir!r}),
        fusion=dict(num_heads=2),
        transformer=dict(num_heads=2, num_points=2, ffn_dims=64, dropout=0.0, num_encoder_layers=1,
                         num_decoder_layers=1, num_queries=6)),
    task_decoder=dict(llm=dict(source={llm_dir!r}), lora=dict(rank=4, alpha=8, dropout=0.0),
                      special_tokens=dict(num_bins=65, num_classes=16, max_points=16), max_new_tokens=4,
                      max_per_img=6))
train_dataloader = dict(_delete_=True, batch_size=1, num_workers=0, persistent_workers=False,
                        sampler=dict(type="InfiniteSampler", shuffle=False), collate_fn=dict(type="pseudo_collate"),
                        dataset={dataset!r})
val_dataloader = None
val_cfg = None
val_evaluator = None
test_dataloader = None
test_cfg = None
test_evaluator = None
train_cfg = dict(max_iters={iters}, val_interval={iters + 1})
param_scheduler = []  # constant lr: the reference takes twice as many iterations per step
optim_wrapper = dict(optimizer=dict(lr=1e-3){", accumulative_counts=" + str(accumulate) if strategy != "deepspeed" else ""})
default_hooks = dict(checkpoint=dict(interval={iters}), logger=dict(interval=1))
custom_hooks = [dict(type="TrainableStateCheckpointHook"), dict(type="RecordLossToFileHook")]
randomness = dict(seed=7)
env_cfg = dict(dist_cfg=dict(backend="gloo"))
"""
    if strategy == "fsdp":
        # float32 compute, so that FSDP must reproduce the reference closely
        text += "strategy = dict(model_wrapper=dict(mixed_precision=None))\n"
        if accumulate > 1:  # the one-process reference runs the same model unwrapped
            text += "strategy = dict(_delete_=True, type='VisionLLMDDPStrategy')\n"
    if strategy == "deepspeed":
        # float32, so that ZeRO-2 must match the reference closely
        text += "strategy = dict(bf16=dict(enabled=False))\n"
        if accumulate > 1:  # the reference: one process, the same AdamW and clipping as the ZeRO config
            text += ("strategy = dict(_delete_=True, type='VisionLLMDDPStrategy')\n"
                     "optim_wrapper = dict(_delete_=True, type='ZeroUnusedGradOptimWrapper', "
                     "optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.05, betas=(0.9, 0.999)), "
                     f"clip_grad=dict(max_norm=1.0), accumulative_counts={accumulate})\n")
    os.makedirs(str(directory), exist_ok=True)
    path = os.path.join(str(directory), f"paper_small_{strategy}.py")
    with open(path, "w") as handle:
        handle.write(text)
    return path


def train(config: str, work_dir, workspace: str, nprocs: int):
    env = dict(os.environ, PYTHON=sys.executable, MASTER_PORT=str(29700 + os.getpid() % 500), OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([REPO, TESTS] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    if nprocs > 1:
        cmd = ["bash", os.path.join(REPO, "tools", "dist_train.sh"), config, str(nprocs)]
    else:
        cmd = [sys.executable, os.path.join(REPO, "tools", "train.py"), config]
    proc = subprocess.run(cmd + ["--work-dir", str(work_dir)], cwd=workspace, env=env, capture_output=True,
                          text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc.stdout + proc.stderr


def records(work_dir, rank: int):
    with open(os.path.join(str(work_dir), f"losses_rank{rank}.jsonl")) as handle:
        return sorted((json.loads(line) for line in handle), key=lambda r: r["iter"])


def losses(work_dir, rank: int):
    return [row["loss"] for row in records(work_dir, rank)]


def trainable_state(path):
    return torch.load(path, map_location="cpu", weights_only=False)["state_dict"]


def predicts_from_checkpoint(config: str, checkpoint: str, workspace: str):
    """Build the model of ``config`` in this process, load the checkpoint rank 0 wrote, predict."""
    from mmengine.config import Config
    from mmengine.dataset import pseudo_collate
    from mmengine.registry import DATASETS, init_default_scope

    import visionllm.datasets  # noqa: F401
    import visionllm.models  # noqa: F401
    from visionllm.engine import load_trained_checkpoint
    from visionllm.registry import MODELS
    cfg = Config.fromfile(config)
    init_default_scope("visionllm")
    model = MODELS.build(cfg.model)
    load_trained_checkpoint(model, checkpoint)
    model.eval()
    cwd = os.getcwd()
    os.chdir(workspace)
    try:
        dataset = DATASETS.build(cfg.train_dataloader.dataset)
        batch = pseudo_collate([dataset[i] for i in range(2)])
    finally:
        os.chdir(cwd)
    with torch.no_grad():
        results = model.test_step(batch)
    return results


def compare_with_reference(tmp_path, workspace, llm_dir, bert_dir, strategy: str, rtol: float):
    single_cfg = write_paper_config(tmp_path / "single", llm_dir, bert_dir, strategy, accumulate=2)
    dist_cfg = write_paper_config(tmp_path / "dist", llm_dir, bert_dir, strategy, accumulate=1)
    train(single_cfg, tmp_path / "single_run", workspace, nprocs=1)
    log = train(dist_cfg, tmp_path / "dist_run", workspace, nprocs=2)
    reference = losses(tmp_path / "single_run", 0)
    rank0, rank1 = losses(tmp_path / "dist_run", 0), losses(tmp_path / "dist_run", 1)
    assert len(reference) == 2 * STEPS and len(rank0) == len(rank1) == STEPS
    print(f"{strategy}: reference {reference}\n rank 0 {rank0}\n rank 1 {rank1}")
    # rank r at step k read sample 2k + r: the reference read it at iteration 2k + r
    for k in range(STEPS):
        assert rank0[k] == pytest.approx(reference[2 * k], rel=rtol), (k, rank0, reference)
        assert rank1[k] == pytest.approx(reference[2 * k + 1], rel=rtol), (k, rank1, reference)
    # The trained weights agree as well (only the trainable state is stored).
    last = f"iter_{STEPS}.pth"
    dist_state = trainable_state(tmp_path / "dist_run" / last)
    single_state = trainable_state(tmp_path / "single_run" / f"iter_{2 * STEPS}.pth")
    assert set(dist_state) == set(single_state)
    assert not any(k.endswith("base_weight") or "base_layer" in k for k in dist_state)
    worst = max(float((dist_state[k].float() - single_state[k].float()).abs().max()) for k in dist_state)
    print(f"{strategy}: largest difference of a trained weight {worst:.2e}")
    # AdamW moves every weight by up to lr (1e-3) per step whatever its gradient's size, so for the
    # zero-initialised parts, whose first gradients are rounding-level, summation order alone can
    # move a weight by a fraction of lr. A rank that never synchronised differs by ~lr per step.
    assert worst < 0.2 * 1e-3 * STEPS, worst
    results = predicts_from_checkpoint(dist_cfg, str(tmp_path / "dist_run" / last), workspace)
    assert len(results) == 2
    for sample in results:
        if "pred_instances" in sample:
            assert torch.isfinite(sample.pred_instances.bboxes).all()
            assert torch.isfinite(sample.pred_instances.scores).all()
    return log


def test_ddp_two_processes_match_one_process(tmp_path, tiny_workspace, paper_llm_dir, paper_bert_dir):  # noqa: F811
    compare_with_reference(tmp_path, tiny_workspace, paper_llm_dir, paper_bert_dir, "ddp", rtol=1e-3)
    for rank in (0, 1):  # both ranks saw a world of two and trained a DDP-wrapped model
        assert {(r["world_size"], r["wrapper"]) for r in records(tmp_path / "dist_run", rank)} == \
            {(2, "MMDistributedDataParallel")}


def test_per_layer_fsdp_two_processes_match_one_process(tmp_path, tiny_workspace, paper_llm_dir,  # noqa: F811
                                                         paper_bert_dir):
    compare_with_reference(tmp_path, tiny_workspace, paper_llm_dir, paper_bert_dir, "fsdp", rtol=1e-3)


@pytest.mark.skipif(importlib.util.find_spec("deepspeed") is None,
                    reason="deepspeed is not installed (pip install deepspeed; .ci/run installs it when it can)")
def test_deepspeed_zero2_two_processes_match_one_process(tmp_path, tiny_workspace, paper_llm_dir,  # noqa: F811
                                                        paper_bert_dir):
    """The optional DeepSpeed ZeRO-2 config (float32 here) on 2 processes with multi-task samples
    matches one process that, like ZeRO, gives unused trainable parameters zero gradients."""
    compare_with_reference(tmp_path, tiny_workspace, paper_llm_dir, paper_bert_dir, "deepspeed", rtol=1e-3)
    for rank in (0, 1):
        assert {(r["world_size"], r["wrapper"]) for r in records(tmp_path / "dist_run", rank)} == \
            {(2, "RankIndependentDeepSpeedEngineWrapper")}
    # DeepSpeed's resumable state (each rank's ZeRO partitions) sits next to the ordinary file
    assert (tmp_path / "dist_run" / f"iter_{STEPS}.pth.zero").is_dir()


def test_rank_independent_loss_same_gradients_same_order_whatever_was_used():
    """The loss DeepSpeed's backward runs on (RankIndependentDeepSpeedEngineWrapper): gradients
    equal the loss's (zero for unused parameters) and parameters receive them in one order,
    whichever parameters the sample used (two 'ranks' using different heads)."""
    from visionllm.engine.strategies import rank_independent_loss
    torch.manual_seed(0)
    model = torch.nn.ModuleDict(dict(trunk=torch.nn.Linear(4, 4), boxes=torch.nn.Linear(4, 2),
                                     caption=torch.nn.Linear(4, 3), frozen=torch.nn.Linear(4, 4)))
    model.frozen.requires_grad_(False)
    x = torch.randn(5, 4)

    def run(head: str):
        model.zero_grad(set_to_none=True)
        order = []
        hooks = [p.register_post_accumulate_grad_hook(lambda p, name=name: order.append(name))
                 for name, p in model.named_parameters() if p.requires_grad]
        expected = torch.autograd.grad((getattr(model, head)(model.trunk(x)) ** 2).sum(),
                                       [model.trunk.weight, getattr(model, head).weight])
        loss = (getattr(model, head)(model.trunk(x)) ** 2).sum()
        assert order == []  # nothing accumulated yet
        surrogate = rank_independent_loss(loss, model)
        assert order == []  # computing the gradients ran no accumulation hook
        surrogate.backward()
        for hook in hooks:
            hook.remove()
        assert torch.allclose(model.trunk.weight.grad, expected[0])
        assert torch.allclose(getattr(model, head).weight.grad, expected[1])
        unused = "caption" if head == "boxes" else "boxes"
        assert torch.count_nonzero(getattr(model, unused).weight.grad) == 0
        assert model.frozen.weight.grad is None
        return order

    boxes_order, caption_order = run("boxes"), run("caption")
    assert boxes_order == caption_order
    assert sorted(boxes_order) == sorted(n for n, p in model.named_parameters() if p.requires_grad)
