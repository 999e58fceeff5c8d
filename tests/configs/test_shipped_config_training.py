"""A real ``runner.train()`` of the shipped tiny config (a few iterations on a few small shapes
images): the pretrained base weights stay bit-identical while LoRA and the new vocabulary rows
train, and every checkpoint file is written through the atomic backend."""
import hashlib
import os

import pytest
import torch

from visionllm.engine.checkpoint import AtomicLocalBackend
from repo_paths import REPO

CONFIG = os.path.join(REPO, "configs", "visionllm_tiny_shapes.py")
ITERS = 2

pytestmark = pytest.mark.slow


def _digest(tensor: torch.Tensor) -> str:
    """SHA-256 of the tensor's bytes (bit-identical, unlike a float comparison)."""
    return hashlib.sha256(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy()).hexdigest()


def pretrained_digests(model) -> dict:
    """SHA-256 of every frozen parameter, of every base weight of the pretrained modules (the base
    LLM and the MiniLM text encoder: all but LoRA and the new vocabulary rows, whether or not they
    require gradients, so that one trained by mistake is seen) and of their buffers, by name."""
    prefixes = tuple(p + "." for p in model.pretrained_prefixes)

    def base_weight(name: str) -> bool:
        return name.startswith(prefixes) and ".lora_" not in name and not name.endswith(".new_weight")

    digests = {name: _digest(p) for name, p in model.named_parameters(remove_duplicate=False)
               if not p.requires_grad or base_weight(name)}
    digests.update({name: _digest(b) for name, b in model.named_buffers(remove_duplicate=False)
                    if name.startswith(prefixes)})
    return digests


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, tiny_workspace):  # noqa: F811
    """Train the shipped config for ITERS iterations (checkpoint at the end), recording the
    weights before and after and every AtomicLocalBackend.put."""
    from visionllm.apis.runner import build_runner, load_config
    from visionllm.engine import unwrapped_model

    work_dir = tmp_path_factory.mktemp("shipped_train")
    puts = []
    original_put = AtomicLocalBackend.put

    def recording_put(self, obj, filepath):
        puts.append(str(filepath))
        return original_put(self, obj, filepath)

    from yapf.yapflib import yapf_api
    yapf_calls = []
    original_format = yapf_api.FormatCode

    def recording_format(*args, **kwargs):
        yapf_calls.append(1)
        return original_format(*args, **kwargs)

    cwd = os.getcwd()
    os.chdir(tiny_workspace)  # the config reads ./data/shapes
    AtomicLocalBackend.put = recording_put
    yapf_api.FormatCode = recording_format
    try:
        cfg = load_config(CONFIG, [f"train_cfg.max_iters={ITERS}", f"default_hooks.checkpoint.interval={ITERS}",
                                   "default_hooks.logger.interval=1", "param_scheduler=[]",
                                   "train_dataloader.dataset.length=16"], work_dir=str(work_dir))
        runner = build_runner(cfg)
        model = unwrapped_model(runner.model)
        before = pretrained_digests(model)
        trainable_before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
        runner.train()
    finally:
        AtomicLocalBackend.put = original_put
        yapf_api.FormatCode = original_format
        os.chdir(cwd)
    return dict(runner=runner, model=model, before=before, trainable_before=trainable_before, puts=puts,
                work_dir=work_dir, yapf_calls=len(yapf_calls))


def test_the_run_writes_its_config_without_yapf_and_the_copy_reloads_the_same(trained_run):
    """The runner renders the config for its log, the work dir's copy and each checkpoint; the
    plain layout (no yapf pass, seconds each) must still be the same config."""
    from mmengine.config import Config
    runner, work_dir = trained_run["runner"], trained_run["work_dir"]
    assert trained_run["yapf_calls"] == 0
    copy = os.path.join(str(work_dir), os.path.basename(CONFIG))
    assert Config.fromfile(copy).to_dict() == runner.cfg.to_dict()


def test_base_llm_and_text_encoder_are_bit_identical_after_training(trained_run):
    model, before = trained_run["model"], trained_run["before"]
    assert any(n.startswith("task_decoder.llm.") and "base_layer" in n for n in before)
    assert any(n.startswith("image_tokenizer.text_encoder.bert.") for n in before)
    after = pretrained_digests(model)
    assert set(after) == set(before)
    changed = sorted(name for name in before if after[name] != before[name])
    assert not changed, f"{len(changed)} frozen tensors changed in training, e.g. {changed[:5]}"


def test_lora_and_new_vocabulary_rows_trained(trained_run):
    model, start = trained_run["model"], trained_run["trainable_before"]
    params = dict(model.named_parameters())
    lora = [n for n in start if n.startswith("task_decoder.llm.") and ".lora_" in n]
    new_rows = [n for n in start if n.startswith("task_decoder.llm.") and n.endswith(".new_weight")]
    assert lora and new_rows, "the decoder has no LoRA / new-row parameters to train"
    for name in lora + new_rows:
        assert not torch.equal(params[name], start[name]), f"{name} did not train"


def test_shipped_config_checkpoints_go_through_the_atomic_backend(trained_run):
    runner, work_dir, puts = trained_run["runner"], trained_run["work_dir"], trained_run["puts"]
    from mmengine.hooks import CheckpointHook
    hook = next(h for h in runner.hooks if isinstance(h, CheckpointHook))
    assert isinstance(hook.file_backend, AtomicLocalBackend)
    checkpoint = os.path.join(str(work_dir), f"iter_{ITERS}.pth")
    assert os.path.isfile(checkpoint)
    assert checkpoint in puts, f"the checkpoint was not written by AtomicLocalBackend.put (puts: {puts})"
    # (mmengine writes the small last_checkpoint pointer with a plain open, not through the backend.)
