"""A run resumed from a checkpoint of a shorter schedule into an extended one follows the
extended schedule exactly as a run from nothing does (real mmengine Runners, a toy model)."""
import pytest
import torch
from mmengine.hooks import Hook
from mmengine.model import BaseModel
from mmengine.runner import Runner
from torch import nn

import visionllm.engine  # noqa: F401  registers ExtendedScheduleHook
from visionllm.engine.checkpoint import TrainableStateCheckpointHook
from visionllm.engine.extended_schedule_hook import ExtendedScheduleHook


class _Toy(BaseModel):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(2, 1)

    def forward(self, x, y, mode="loss"):
        return dict(loss=((self.linear(x) - y) ** 2).mean())


class _Data(torch.utils.data.Dataset):
    def __len__(self):
        return 8

    def __getitem__(self, i):
        return dict(x=torch.tensor([float(i), 1.0]), y=torch.tensor([float(i % 3)]))


class _LrRecorder(Hook):
    def __init__(self):
        self.lrs = {}

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        self.lrs[runner.iter] = runner.optim_wrapper.get_lr()["lr"][0]


FIRST = [dict(type="LinearLR", start_factor=0.1, by_epoch=False, begin=0, end=2),
         dict(type="CosineAnnealingLR", by_epoch=False, begin=2, end=6, eta_min_ratio=0.05)]
SECOND = dict(type="CosineRestartLR", by_epoch=False, begin=6, end=10, periods=[4], restart_weights=[0.5],
              eta_min_ratio=0.05)


def _runner(work_dir, max_iters, schedulers, hooks, resume_from=None):
    return Runner(
        # a unique experiment name: mmengine keeps its visualizer and logger instances by name
        model=_Toy(), work_dir=str(work_dir), experiment_name=f"{work_dir.parent.name}_{work_dir.name}",
        train_dataloader=dict(dataset=_Data(), batch_size=2, num_workers=0,
                              sampler=dict(type="InfiniteSampler", shuffle=False),
                              collate_fn=dict(type="default_collate")),
        train_cfg=dict(type="IterBasedTrainLoop", max_iters=max_iters),
        optim_wrapper=dict(optimizer=dict(type="SGD", lr=0.1)), param_scheduler=schedulers,
        default_hooks=dict(checkpoint=dict(type="CheckpointHook", interval=6, by_epoch=False),
                           logger=dict(type="LoggerHook", interval=100)),
        # the message hub saved as plain data, as the shipped configs do, so resuming loads safely
        custom_hooks=[TrainableStateCheckpointHook()] + hooks, resume=resume_from is not None,
        load_from=resume_from, default_scope="mmengine")


def _lrs_resumed_into_extension(tmp_path, with_hook):
    _runner(tmp_path / "short", 6, FIRST, []).train()
    recorder = _LrRecorder()
    hooks = [recorder] + ([ExtendedScheduleHook()] if with_hook else [])
    checkpoint = str(tmp_path / "short" / "iter_6.pth")
    _runner(tmp_path / "extended", 10, FIRST + [SECOND], hooks, resume_from=checkpoint).train()
    return recorder.lrs


def test_a_resumed_run_follows_the_extended_schedule_as_a_run_from_nothing(tmp_path):
    whole = _LrRecorder()
    _runner(tmp_path / "whole", 10, FIRST + [SECOND], [whole]).train()
    resumed = _lrs_resumed_into_extension(tmp_path, with_hook=True)
    assert sorted(resumed) == [6, 7, 8, 9]
    assert resumed == pytest.approx({i: whole.lrs[i] for i in range(6, 10)}, rel=1e-9)
    # the restart really happened: the second cycle starts above the first's end
    assert whole.lrs[6] > 2 * whole.lrs[5]


def test_without_the_hook_mmengine_leaves_the_added_scheduler_idle(tmp_path):
    """The failure the hook exists for, so the test above cannot pass by accident."""
    whole = _LrRecorder()
    _runner(tmp_path / "whole", 10, FIRST + [SECOND], [whole]).train()
    resumed = _lrs_resumed_into_extension(tmp_path, with_hook=False)
    assert resumed[8] != pytest.approx(whole.lrs[8], rel=1e-3)


def test_a_scheduler_whose_window_began_before_the_checkpoint_is_refused(tmp_path):
    _runner(tmp_path / "short", 6, FIRST, []).train()
    late = dict(SECOND, begin=4, end=10)
    runner = _runner(tmp_path / "extended", 10, FIRST + [late], [ExtendedScheduleHook()],
                     resume_from=str(tmp_path / "short" / "iter_6.pth"))
    with pytest.raises(ValueError, match="window began before"):
        runner.train()
