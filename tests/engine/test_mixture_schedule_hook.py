"""A mixture whose ratios change at an iteration: the batches of every iteration come from the
phase's ratios, in a run from nothing and in runs resumed before and inside a phase (real
mmengine Runners, a toy model)."""
from types import SimpleNamespace

import pytest
import torch
from mmengine.hooks import Hook
from mmengine.model import BaseModel
from mmengine.runner import Runner
from torch import nn

import visionllm.engine  # noqa: F401  registers the hooks
from visionllm.datasets.multi_task import MultiTaskDataset
from visionllm.datasets.task_grouped_batch_sampler import TaskGroupedBatchSampler
from visionllm.engine.checkpoint import TrainableStateCheckpointHook
from visionllm.engine.mixture_schedule_hook import MixtureScheduleHook


class _Toy(BaseModel):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(2, 1)

    def forward(self, x, y, source, item, mode="loss"):
        return dict(loss=((self.linear(x) - y) ** 2).mean())


class _Source(torch.utils.data.Dataset):
    """Samples that say which dataset of the mixture and which item they are."""

    def __init__(self, source, size=5):
        self.source, self.size = source, size

    def __len__(self):
        return self.size

    def __getitem__(self, i):
        return dict(x=torch.tensor([float(i), 1.0]), y=torch.tensor([float(self.source)]), source=self.source,
                    item=i)


class _BatchRecorder(Hook):
    def __init__(self):
        self.batches = {}

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        self.batches[runner.iter] = list(zip(data_batch["source"].tolist(), data_batch["item"].tolist()))


def _mixture(ratios):
    return MultiTaskDataset([_Source(0), _Source(1), _Source(2)], ratios=ratios, length=400, seed=3)


def _runner(work_dir, max_iters, hooks, ratios=(0.5, 0.3, 0.2), resume_from=None):
    return Runner(
        model=_Toy(), work_dir=str(work_dir), experiment_name=f"{work_dir.parent.name}_{work_dir.name}",
        train_dataloader=dict(dataset=_mixture(list(ratios)), batch_size=4, num_workers=0,
                              sampler=dict(type="InfiniteSampler", shuffle=True, seed=1),
                              collate_fn=dict(type="default_collate")),
        train_cfg=dict(type="IterBasedTrainLoop", max_iters=max_iters),
        optim_wrapper=dict(optimizer=dict(type="SGD", lr=0.01)),
        default_hooks=dict(checkpoint=dict(type="CheckpointHook", interval=3, by_epoch=False),
                           logger=dict(type="LoggerHook", interval=100)),
        custom_hooks=[TrainableStateCheckpointHook()] + hooks, resume=resume_from is not None,
        load_from=resume_from, default_scope="visionllm", randomness=dict(seed=1))


PHASES = [dict(begin=5, ratios=[0.0, 0.1, 0.9]), dict(begin=8, ratios=[1.0, 0.0, 0.0])]


def test_each_iteration_draws_from_its_phase(tmp_path):
    recorder = _BatchRecorder()
    _runner(tmp_path / "whole", 10, [recorder, MixtureScheduleHook(PHASES)]).train()
    sources = {i: {s for s, _ in batch} for i, batch in recorder.batches.items()}
    assert set().union(*(sources[i] for i in range(5))) == {0, 1, 2}
    assert set().union(*(sources[i] for i in range(5, 8))) == {1, 2}
    assert all(sources[i] == {0} for i in (8, 9))


@pytest.mark.parametrize("resume_at", [3, 6, 9])
def test_a_resumed_run_sees_the_batches_of_a_run_from_nothing(tmp_path, resume_at):
    whole = _BatchRecorder()
    _runner(tmp_path / "whole", 10, [whole, MixtureScheduleHook(PHASES)]).train()
    resumed = _BatchRecorder()
    checkpoint = str(tmp_path / "whole" / f"iter_{resume_at}.pth")
    _runner(tmp_path / "resumed", 10, [resumed, MixtureScheduleHook(PHASES)], resume_from=checkpoint).train()
    assert sorted(resumed.batches) == list(range(resume_at, 10))
    assert resumed.batches == {i: whole.batches[i] for i in range(resume_at, 10)}


def test_without_phases_the_later_batches_differ(tmp_path):
    """The comparison above can fail: the phases change which samples the same indices draw."""
    phased, plain = _BatchRecorder(), _BatchRecorder()
    _runner(tmp_path / "phased", 10, [phased, MixtureScheduleHook(PHASES)]).train()
    _runner(tmp_path / "plain", 10, [plain]).train()
    assert all(phased.batches[i] == plain.batches[i] for i in range(5))
    assert any(phased.batches[i] != plain.batches[i] for i in range(5, 10))


def test_ratios_at_follows_the_phases():
    hook = MixtureScheduleHook(PHASES)
    hook._initial = [0.5, 0.3, 0.2]
    assert [hook.ratios_at(i) for i in (0, 4, 5, 7, 8, 100)] == [
        [0.5, 0.3, 0.2], [0.5, 0.3, 0.2], [0.0, 0.1, 0.9], [0.0, 0.1, 0.9], [1.0, 0.0, 0.0], [1.0, 0.0, 0.0]]


@pytest.mark.parametrize("phases, message", [
    ([], "at least one phase"),
    ([dict(begin=5)], "each phase is"),
    ([dict(begin=0, ratios=[1, 0, 0])], "positive iteration"),
    ([dict(begin=5, ratios=[1, 0, 0]), dict(begin=5, ratios=[0, 1, 0])], "strictly increase"),
    ([dict(begin=8, ratios=[1, 0, 0]), dict(begin=5, ratios=[0, 1, 0])], "strictly increase"),
])
def test_bad_phases_are_refused(phases, message):
    with pytest.raises(ValueError, match=message):
        MixtureScheduleHook(phases)


def _fake_runner(dataset, num_workers=0, batch_sampler=None):
    dataloader = SimpleNamespace(dataset=dataset, num_workers=num_workers, batch_sampler=batch_sampler)
    return SimpleNamespace(train_loop=SimpleNamespace(dataloader=dataloader), iter=0,
                           logger=SimpleNamespace(info=lambda message: None))


def test_a_phase_with_the_wrong_number_of_ratios_fails_before_training():
    dataset = _mixture([0.5, 0.3, 0.2])
    hook = MixtureScheduleHook([dict(begin=5, ratios=[0.5, 0.5])])
    with pytest.raises(ValueError, match="2 ratios for 3 datasets"):
        hook.before_train(_fake_runner(dataset))
    assert dataset.probabilities.tolist() == pytest.approx([0.5, 0.3, 0.2])


def test_loader_settings_the_hook_cannot_follow_are_refused():
    dataset = _mixture([0.5, 0.3, 0.2])
    with pytest.raises(ValueError, match="num_workers=0"):
        MixtureScheduleHook(PHASES).before_train(_fake_runner(dataset, num_workers=2))
    grouped = TaskGroupedBatchSampler(SimpleNamespace(dataset=dataset), batch_size=2)
    with pytest.raises(ValueError, match="TaskGroupedBatchSampler"):
        MixtureScheduleHook(PHASES).before_train(_fake_runner(dataset, batch_sampler=grouped))
    concatenation = MultiTaskDataset([_Source(0), _Source(1)])
    with pytest.raises(ValueError, match="ratio-sampled MultiTaskDataset"):
        MixtureScheduleHook(PHASES).before_train(_fake_runner(concatenation))


def test_set_ratios_draws_with_the_new_ratios_and_keeps_draws_pure():
    dataset = _mixture([0.5, 0.3, 0.2])
    before = [dataset.locate(i) for i in range(200)]
    dataset.set_ratios([0, 0, 1])
    assert {dataset.locate(i)[0] for i in range(200)} == {2}
    dataset.set_ratios([0.5, 0.3, 0.2])
    assert [dataset.locate(i) for i in range(200)] == before


def test_set_ratios_refuses_bad_ratios_and_keeps_the_old_ones():
    dataset = MultiTaskDataset([_Source(0), _Source(1, size=0)], ratios=[1, 0])
    with pytest.raises(ValueError, match="empty but have a positive sampling ratio"):
        dataset.set_ratios([0.5, 0.5])
    with pytest.raises(ValueError, match="non-negative"):
        dataset.set_ratios([-1, 2])
    assert dataset.probabilities.tolist() == [1.0, 0.0]
    with pytest.raises(ValueError, match="concatenates"):
        MultiTaskDataset([_Source(0)]).set_ratios([1])


def test_a_dataset_added_at_ratio_zero_leaves_every_draw_as_it_was():
    # how a config adds a later phase's dataset without changing the batches before that phase
    # (the mixture's epoch length is its ``length``, not the datasets' total size)
    before = MultiTaskDataset([_Source(0), _Source(1), _Source(2)], ratios=[0.5, 0.3, 0.2], length=1000)
    after = MultiTaskDataset([_Source(0), _Source(1), _Source(2), _Source(3)], ratios=[0.5, 0.3, 0.2, 0.0],
                             length=1000)
    assert [after.locate(i) for i in range(2000)] == [before.locate(i) for i in range(2000)]
    after.set_ratios([0, 0, 0, 1])
    assert {after.locate(i)[0] for i in range(100)} == {3}
