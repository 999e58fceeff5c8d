"""The request adapter: low-rank LLM weights used only while a plain request is read, and the
training phase that trains them alone."""
import copy
from types import SimpleNamespace

import pytest
import torch
from fresh_seed import seed_and_generator
from tiny_llm import build_decoder, fit_decoder, make_sample

from visionllm.engine import RequestAdapterPhaseHook
from visionllm.tasks import wrap_request

pytestmark = pytest.mark.usefixtures("single_thread")
ADAPTER = dict(rank=4, alpha=8)


def request_sample(request, canonical):
    return make_sample("request", wrap_request(request), target_text=canonical)


def caption_sample(text="two red circles"):
    return make_sample("caption", "<image> Write a short caption for the image.", target_text=text)


def randomise(adapter, generator):
    with torch.no_grad():
        for param in adapter.parameters():
            param.copy_(torch.randn(param.shape, generator=generator) * 0.5)


def test_the_adapter_changes_request_rows_only(tiny_llama_dir):
    seed, g = seed_and_generator()
    decoder = build_decoder(tiny_llama_dir, request_adapter=ADAPTER).eval()
    samples = [caption_sample(), request_sample("Find all stars in the picture.", "detection: star"),
               make_sample("vqa", "<image> How many stars are there?", target_text="2")]
    embeds = torch.randn(len(samples), 6, decoder.hidden_size, generator=g)
    instructions = [s.instruction for s in samples]

    def run():
        with torch.no_grad():
            texts = decoder.generate_text(embeds, instructions, max_new_tokens=6)
            return texts, [decoder._text_loss(embeds[[i]], [s]).item() for i, s in enumerate(samples)]

    texts_fresh, losses_fresh = run()
    decoder.request_adapter = None  # the same weights without an adapter: B = 0 makes it a no-op
    assert run() == (texts_fresh, losses_fresh), f"seed {seed}"
    decoder = build_decoder(tiny_llama_dir, request_adapter=ADAPTER).eval()
    randomise(decoder.request_adapter, g)
    texts, losses = run()
    assert texts[0] == texts_fresh[0] and texts[2] == texts_fresh[2], f"seed {seed}"
    assert losses[0] == losses_fresh[0] and losses[2] == losses_fresh[2], f"seed {seed}"
    assert losses[1] != pytest.approx(losses_fresh[1], rel=1e-3), f"seed {seed}: the request row did not change"
    # a mixed batch's loss is the mean over every target token of the rows read apart
    with torch.no_grad():
        mixed = decoder._text_loss(embeds, samples).item()
    counts = [len(decoder.prompt.text_ids(s.target_text)) + 1 for s in samples]
    assert mixed == pytest.approx(sum(c * l for c, l in zip(counts, losses)) / sum(counts), rel=1e-5)


def test_training_the_adapter_alone_teaches_requests_and_moves_nothing_else(tiny_llama_dir):
    seed, g = seed_and_generator()
    decoder = build_decoder(tiny_llama_dir, request_adapter=dict(rank=8, alpha=16))
    requests = [request_sample("Put a box around every star, please.", "detection: star"),
                request_sample("How many circles can you see?", "vqa: how many circles are there?")]
    others = [caption_sample(), make_sample("vqa", "<image> Is there a star?", target_text="yes")]
    embeds = torch.randn(2, 6, decoder.hidden_size, generator=g)
    before = {k: v.clone() for k, v in decoder.state_dict().items() if "request_adapter" not in k}
    with torch.no_grad():
        decoder.eval()
        others_before = decoder.generate_text(embeds, [s.instruction for s in others], max_new_tokens=6)
    for name, param in decoder.named_parameters():
        param.requires_grad_("request_adapter" in name)
    # 1e-2 without clipping left 2 of 5 seeds at loss 1-3 after 150 steps; this fit all 5 to < 0.002
    loss = fit_decoder(decoder, embeds, None, requests, steps=200, lr=3e-3,
                       params=decoder.request_adapter.parameters(), decay=False)["loss_text"]
    assert loss < 0.05, f"seed {seed}: {loss}"
    with torch.no_grad():
        texts = decoder.generate_text(embeds, [s.instruction for s in requests], max_new_tokens=12)
        assert texts == [s.target_text for s in requests], f"seed {seed}"
        assert decoder.generate_text(embeds, [s.instruction for s in others], max_new_tokens=6) == others_before
    after = {k: v for k, v in decoder.state_dict().items() if "request_adapter" not in k}
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_a_deep_copy_reads_requests_with_its_own_adapter(tiny_llama_dir):
    """An EMA copy (mmengine deep-copies the model) must apply the copy's adapter weights."""
    seed, g = seed_and_generator()
    decoder = build_decoder(tiny_llama_dir, request_adapter=ADAPTER).eval()
    randomise(decoder.request_adapter, g)
    twin = copy.deepcopy(decoder)
    randomise(twin.request_adapter, g)
    sample = request_sample("Find all stars in the picture.", "detection: star")
    embeds = torch.randn(1, 6, decoder.hidden_size, generator=g)

    def request_loss(model):
        with torch.no_grad():
            return model._text_loss(embeds, [sample]).item()

    original, copied = request_loss(decoder), request_loss(twin)
    assert copied != pytest.approx(original, rel=1e-3), f"seed {seed}: the copy read with the original adapter"
    decoder.request_adapter.load_state_dict(twin.request_adapter.state_dict())
    assert request_loss(decoder) == pytest.approx(copied, rel=1e-6), f"seed {seed}"


def test_the_adapter_is_saved_and_frozen_weights_are_those_of_the_build(tiny_llama_dir):
    decoder = build_decoder(tiny_llama_dir, request_adapter=ADAPTER)
    frozen = set(decoder.frozen_pretrained_keys())
    saved = set(decoder.trainable_state_dict())
    assert any("request_adapter.updates" in k for k in saved)
    assert not any("request_adapter" in k for k in frozen)
    for param in decoder.parameters():  # a phase that freezes trained weights
        param.requires_grad_(False)
    assert set(decoder.frozen_pretrained_keys()) == frozen
    assert set(decoder.trainable_state_dict()) == saved


def fake_runner(decoder, group_adapter_apart=True, iteration=0, max_iters=100):
    model = torch.nn.Module()
    model.task_decoder = decoder
    adapter = list(decoder.request_adapter.parameters())
    ids = {id(p) for p in adapter}
    rest = [p for p in decoder.parameters() if id(p) not in ids]
    groups = [dict(params=rest, lr=2e-4), dict(params=adapter, lr=2e-4)] if group_adapter_apart else \
        [dict(params=rest + adapter, lr=2e-4)]
    optimizer = torch.optim.AdamW(groups)
    return SimpleNamespace(model=model, optim_wrapper=SimpleNamespace(optimizer=optimizer), iter=iteration,
                           max_iters=max_iters)


def test_the_phase_hook_sets_the_rates_and_freezes_the_rest(tiny_llama_dir):
    decoder = build_decoder(tiny_llama_dir, request_adapter=ADAPTER)
    hook = RequestAdapterPhaseHook(begin=40, lr=1e-3, eta_min_ratio=0.1)
    runner = fake_runner(decoder, iteration=10)
    hook.before_train(runner)
    hook.before_train_iter(runner, 0)
    rest, adapter = runner.optim_wrapper.optimizer.param_groups
    assert adapter["lr"] == 0.0 and rest["lr"] == 2e-4  # before the phase: the run as without the adapter
    trainable_before = [p.requires_grad for p in rest["params"]]
    runner.iter = 40
    hook.before_train_iter(runner, 0)
    assert adapter["lr"] == pytest.approx(1e-3) and rest["lr"] == 0.0
    assert not any(p.requires_grad for p in rest["params"]) and any(trainable_before)
    assert all(p.requires_grad for p in adapter["params"])
    runner.iter = 70
    hook.before_train_iter(runner, 0)
    assert adapter["lr"] == pytest.approx(1e-4 + 0.9e-3 * 0.5)  # half way: the cosine's midpoint
    assert 1e-4 < hook.rate_at(99, 100) < 1.01e-4  # the last iteration: near the floor
    assert hook.rate_at(100, 100) == 0.0  # past the end


def test_the_phase_hook_refuses_what_it_cannot_run(tiny_llama_dir):
    with pytest.raises(ValueError, match="begin"):
        RequestAdapterPhaseHook(begin=-1, lr=1e-3)
    with pytest.raises(ValueError, match="lr"):
        RequestAdapterPhaseHook(begin=0, lr=0.0)
    decoder = build_decoder(tiny_llama_dir, request_adapter=ADAPTER)
    with pytest.raises(ValueError, match="groups of their own"):
        RequestAdapterPhaseHook(begin=0, lr=1e-3).before_train(fake_runner(decoder, group_adapter_apart=False))
    runner = SimpleNamespace(model=SimpleNamespace(task_decoder=SimpleNamespace(request_adapter=None)),
                             optim_wrapper=None)
    with pytest.raises(ValueError, match="needs a model with a request adapter"):
        RequestAdapterPhaseHook(begin=0, lr=1e-3).before_train(runner)


def test_a_bad_adapter_config_is_refused(tiny_llama_dir):
    with pytest.raises(ValueError, match="rank"):
        build_decoder(tiny_llama_dir, request_adapter=dict(rank=0))
    with pytest.raises(ValueError, match="no 'mlp.nothing'"):
        build_decoder(tiny_llama_dir, request_adapter=dict(rank=2, targets=["mlp.nothing"]))


def test_adding_an_adapter_leaves_every_other_initialisation_as_it_was(tiny_llama_dir):
    plain = build_decoder(tiny_llama_dir).state_dict()
    adapted = build_decoder(tiny_llama_dir, request_adapter=ADAPTER).state_dict()
    assert set(adapted) - set(plain) and all(k.startswith("request_adapter.") for k in set(adapted) - set(plain))
    assert all(torch.equal(plain[k], adapted[k]) for k in plain)


def test_under_a_distributed_wrapper_the_phase_holds_the_rest_by_a_zero_rate_alone(tiny_llama_dir, monkeypatch):
    # DDP expects every parameter it was built with to keep its gradient
    import visionllm.engine.module_phase_hook as phase_module
    decoder = build_decoder(tiny_llama_dir, request_adapter=ADAPTER)
    runner = fake_runner(decoder, iteration=0)
    runner.model = SimpleNamespace(module=runner.model)
    monkeypatch.setattr(phase_module, "is_model_wrapper", lambda model: isinstance(model, SimpleNamespace))
    hook = RequestAdapterPhaseHook(begin=0, lr=1e-3)
    trainable = [p.requires_grad for p in decoder.parameters()]
    hook.before_train(runner)
    hook.before_train_iter(runner, 0)
    rest, adapter = runner.optim_wrapper.optimizer.param_groups
    assert rest["lr"] == 0.0 and adapter["lr"] == pytest.approx(1e-3)
    assert [p.requires_grad for p in decoder.parameters()] == trainable
    # a step with gradients everywhere (weight decay on) moves the adapter and nothing else
    seed, g = seed_and_generator()
    rest_before = [p.detach().clone() for p in rest["params"]]
    adapter_before = [p.detach().clone() for p in adapter["params"]]
    sample = request_sample("Box every star.", "detection: star")
    loss = decoder.loss(torch.randn(1, 6, decoder.hidden_size, generator=g), None, [sample])["loss_text"]
    loss.backward()
    runner.optim_wrapper.optimizer.step()
    assert all(torch.equal(a, b) for a, b in zip(rest_before, rest["params"])), f"seed {seed}"
    assert any(not torch.equal(a, b) for a, b in zip(adapter_before, adapter["params"])), f"seed {seed}"
