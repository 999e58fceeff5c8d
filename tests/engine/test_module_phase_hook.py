"""ModulePhaseHook: phases that train one part of a model each, one after another."""
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from visionllm.engine import ModulePhaseHook


def model_and_runner(max_iters=100):
    torch.manual_seed(0)
    model = nn.Module()
    model.body, model.first, model.second = nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 1)
    groups = [dict(params=list(m.parameters()), lr=2e-4, weight_decay=0.05) for m in (model.body, model.first,
                                                                                       model.second)]
    runner = SimpleNamespace(model=model, optim_wrapper=SimpleNamespace(optimizer=torch.optim.AdamW(groups)),
                             iter=0, max_iters=max_iters)
    return model, runner


def step(model, runner, hooks, forward=None):
    """One training iteration as mmengine's loop runs it; ``forward`` gives the loss (default:
    through body, first and second)."""
    for hook in hooks:
        hook.before_train_iter(runner, 0)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    runner.optim_wrapper.optimizer.zero_grad()
    x = torch.randn(8, 4)
    loss = forward(x) if forward else model.second(model.first(model.body(x)))
    loss.square().mean().backward()
    runner.optim_wrapper.optimizer.step()
    for hook in hooks:
        hook.after_train_iter(runner, 0)
    runner.iter += 1
    return {name.split(".")[0] for name, p in model.named_parameters() if not torch.equal(before[name], p)}


def test_two_phases_in_a_row_each_move_their_module_alone():
    model, runner = model_and_runner()
    hooks = [ModulePhaseHook("first", begin=10, end=20, lr=1e-3), ModulePhaseHook("second", begin=20, lr=1e-3)]
    for hook in hooks:
        hook.before_train(runner)
    moved = [step(model, runner, hooks) for _ in range(30)]
    # before any phase the schedule trains everything but the phases' modules (held at rate 0)
    assert all(m == {"body"} for m in moved[:10]), moved[:10]
    assert all(m == {"first"} for m in moved[10:20]), moved[10:20]
    assert all(m == {"second"} for m in moved[20:]), moved[20:]
    # the second phase unfroze its module, which the first had frozen, and froze the first's
    assert [p.requires_grad for p in model.second.parameters()] == [True, True]
    assert not any(p.requires_grad for p in [*model.first.parameters(), *model.body.parameters()])


def test_a_phase_that_does_not_freeze_follows_one_that_did():
    """What a freezing phase froze is unfrozen after its last step, in one process: a later phase
    with ``freeze_rest=False`` whose loss reaches only its own module trains it (with the first
    phase's weights left frozen its backward pass would find no gradient at all)."""
    model, runner = model_and_runner()
    hooks = [ModulePhaseHook("first", begin=0, end=5, lr=1e-3),
             ModulePhaseHook("second", begin=5, lr=1e-3, freeze_rest=False)]
    for hook in hooks:
        hook.before_train(runner)
    assert all(step(model, runner, hooks) == {"first"} for _ in range(5))
    assert all(p.requires_grad for p in model.parameters())
    moved = [step(model, runner, hooks, forward=model.second) for _ in range(3)]
    assert all(m == {"second"} for m in moved), moved


def test_a_phase_of_several_modules_moves_them_together_and_nothing_else():
    model, runner = model_and_runner()
    hooks = [ModulePhaseHook(["first", "second"], begin=3, lr=1e-3)]
    hooks[0].before_train(runner)
    moved = [step(model, runner, hooks) for _ in range(6)]
    assert all(m == {"body"} for m in moved[:3]), moved[:3]
    assert all(m == {"first", "second"} for m in moved[3:]), moved[3:]
    assert not any(p.requires_grad for p in model.body.parameters())


def test_the_rate_is_a_cosine_over_the_phase_and_zero_outside_it():
    hook = ModulePhaseHook("first", begin=10, end=30, lr=1e-3, eta_min_ratio=0.1)
    assert hook.rate_at(9, 100) == 0.0 and hook.rate_at(30, 100) == 0.0
    assert hook.rate_at(10, 100) == pytest.approx(1e-3)
    assert hook.rate_at(20, 100) == pytest.approx(1e-4 + 0.9e-3 * 0.5)
    assert hook.rate_at(99, 100) == 0.0
    assert ModulePhaseHook("first", begin=10, lr=1e-3).rate_at(99, 100) > 0


def test_bad_phases_are_refused():
    with pytest.raises(ValueError, match="end must be an iteration after its begin"):
        ModulePhaseHook("first", begin=10, end=10, lr=1e-3)
    with pytest.raises(ValueError, match="begin"):
        ModulePhaseHook("first", begin=-1, lr=1e-3)
    model, runner = model_and_runner()
    with pytest.raises(ValueError, match="needs a model with a part 'third'"):
        ModulePhaseHook("third", begin=0, lr=1e-3).before_train(runner)
    model.third = None  # a config that leaves the part out
    with pytest.raises(ValueError, match="needs a model with a part 'third'"):
        ModulePhaseHook("third", begin=0, lr=1e-3).before_train(runner)
    runner.optim_wrapper.optimizer = torch.optim.AdamW(model.parameters())
    with pytest.raises(ValueError, match=r"custom_keys\['first'\]"):
        ModulePhaseHook("first", begin=0, lr=1e-3).before_train(runner)
    with pytest.raises(ValueError, match="needs a model with a part 'third'"):
        ModulePhaseHook(["first", "third"], begin=0, lr=1e-3).before_train(runner)
    with pytest.raises(ValueError, match="submodule name or a list"):
        ModulePhaseHook([], begin=0, lr=1e-3)
