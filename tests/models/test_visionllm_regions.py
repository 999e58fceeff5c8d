"""A whole tiny VisionLLM on a region sample: it trains (finite text loss, gradient into the read-out),
the untrained read-out changes nothing, and a checkpoint from before the read-out loads."""
import pytest
import torch
from tiny_llm import make_sample

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("single_thread")]

IMG_SHAPE = (64, 96)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, tiny_llm_dir, tiny_workspace):
    from tiny_model import build_tiny_model
    monkeypatch = pytest.MonkeyPatch()
    try:
        _, model, _, _ = build_tiny_model(tmp_path_factory.mktemp("regions"), tiny_llm_dir, tiny_workspace, monkeypatch)
    finally:
        monkeypatch.undo()
    return model


def region_batch(model, regions, instruction="<image> What colour is <region>?", task="vqa"):
    g = torch.Generator().manual_seed(0)
    image = torch.randint(0, 255, (3, *IMG_SHAPE), generator=g, dtype=torch.uint8)
    sample = make_sample(task, instruction, target_text="red", img_shape=IMG_SHAPE)
    sample.set_metainfo(dict(regions=regions, pad_shape=IMG_SHAPE))
    return model.data_preprocessor(dict(inputs=[image], data_samples=[sample]), True)


def test_a_region_sample_trains_into_the_readout(tiny):
    model = tiny.train()
    model.zero_grad()
    losses = model(**region_batch(model, [[10.0, 8.0, 50.0, 40.0]]), mode="loss")
    total = sum(v for k, v in losses.items() if "loss" in k)
    assert torch.isfinite(total) and "loss_text" in losses
    total.backward()
    grad = model.region_readout.projection.weight.grad
    assert grad is not None and grad.abs().sum() > 0
    model.zero_grad()


def test_untrained_readout_changes_nothing_and_a_trained_one_follows_the_box(tiny):
    model = tiny.eval()
    readout = model.region_readout
    box = [[10.0, 8.0, 50.0, 40.0]]
    with torch.no_grad():
        with_readout = model(**region_batch(model, box), mode="loss")["loss_text"]
        model.region_readout = None
        try:
            without = model(**region_batch(model, box), mode="loss")["loss_text"]
        finally:
            model.region_readout = readout
        assert torch.equal(with_readout, without)  # zero-initialised: exactly the prompt without it
        saved = readout.projection.weight.clone()
        try:
            readout.projection.weight.normal_(0, 0.5, generator=torch.Generator().manual_seed(2))
            changed = model(**region_batch(model, box), mode="loss")["loss_text"]
            assert (changed - with_readout).abs() > 1e-6  # the read-out reaches the LLM
        finally:
            readout.projection.weight.copy_(saved)


def test_inference_with_a_region_answers(tiny):
    model = tiny.eval()
    samples = model(**region_batch(model, [[10.0, 8.0, 50.0, 40.0]]), mode="predict")
    assert isinstance(samples[0].pred_text, str) and "region_embeds" not in samples[0]


def test_a_checkpoint_from_before_the_readout_loads(tiny, tmp_path):
    from visionllm.engine.checkpoint import load_trained_checkpoint
    from visionllm.engine.checkpoint_conversion import VERSION_KEY

    model = tiny
    dropped = set(model.frozen_pretrained_keys())
    state = {k: v for k, v in model.state_dict().items() if k not in dropped and not k.startswith("region_readout.")}
    path = tmp_path / "v2.pth"
    torch.save(dict(meta={VERSION_KEY: 2}, state_dict=state), path)
    with torch.no_grad():
        model.region_readout.projection.weight.fill_(1.0)
    load_trained_checkpoint(model, str(path))  # strict for every other key
    assert torch.count_nonzero(model.region_readout.projection.weight) == 0
    torch.save(dict(meta={VERSION_KEY: 3}, state_dict=state), tmp_path / "v3.pth")
    from visionllm.apis.inputs import InputError
    with pytest.raises(InputError, match="missing keys"):  # a version-3 file must hold the read-out
        load_trained_checkpoint(model, str(tmp_path / "v3.pth"))
