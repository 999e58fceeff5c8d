"""TaskGroupedBatchSampler: one task per batch, the mixture's shares kept, every index used once,
and a resumed mmengine loader re-forms the batches an uninterrupted one would see."""
import collections

import numpy as np
import pytest
from mmengine.dataset import DefaultSampler, InfiniteSampler
from mmengine.registry import DefaultScope
from mmengine.runner import Runner

from visionllm.datasets import MultiTaskDataset, TaskGroupedBatchSampler


class _Tagged:
    def __init__(self, tag, n):
        self.tag, self.n = tag, n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return dict(tag=self.tag, i=i)


RATIOS = [0.5, 0.3, 0.15, 0.05]


def _mixture(seed, length=3000):
    return MultiTaskDataset([_Tagged(t, n) for t, n in zip("abcd", (9, 40, 5, 13))], ratios=RATIOS,
                            length=length, seed=seed)


def test_batches_hold_one_dataset_and_use_every_index_once():
    seed = int(np.random.randint(10000))
    mix = _mixture(seed)
    sampler = DefaultSampler(mix, shuffle=True, seed=seed)
    batches = list(TaskGroupedBatchSampler(sampler, batch_size=4))
    for batch in batches:
        assert len({mix.locate(i)[0] for i in batch}) == 1, batch
    assert sorted(i for batch in batches for i in batch) == sorted(sampler)  # nothing lost, nothing twice
    assert sum(len(b) < 4 for b in batches) <= len(RATIOS)  # only each group's remainder is short
    # the shares of the mixture survive the grouping
    per_dataset = collections.Counter(mix.locate(batch[0])[0] for batch in batches for _ in batch)
    for which, ratio in enumerate(RATIOS):
        assert abs(per_dataset[which] / len(mix) - ratio) < 0.03
    dropped = list(TaskGroupedBatchSampler(sampler, batch_size=4, drop_last=True))
    assert all(len(b) == 4 for b in dropped) and dropped == [b for b in batches if len(b) == 4]


def test_an_index_waits_in_its_group_until_the_group_fills():
    mix = MultiTaskDataset([_Tagged("a", 3), _Tagged("b", 4)])  # concatenation: 0-2 are "a", 3-6 "b"

    class _Fixed(list):
        dataset = mix

    batches = list(TaskGroupedBatchSampler(_Fixed([0, 3, 1, 4, 5, 2, 6]), batch_size=2))
    assert batches == [[0, 1], [3, 4], [5, 6], [2]]


def _loader(seed):
    return Runner.build_dataloader(dict(
        batch_size=4, num_workers=0, dataset=_mixture(seed, length=10 ** 6),
        sampler=dict(type="InfiniteSampler", shuffle=True, seed=seed),
        batch_sampler=dict(type="TaskGroupedBatchSampler"), collate_fn=dict(type="pseudo_collate")))


def test_built_from_a_config_and_resumed_like_an_uninterrupted_run():
    from mmengine.runner.loops import _InfiniteDataloaderIterator
    seed = int(np.random.randint(10000))
    with DefaultScope.overwrite_default_scope("visionllm"):
        loader = _loader(seed)
        assert isinstance(loader.batch_sampler, TaskGroupedBatchSampler)
        assert isinstance(loader.batch_sampler.sampler, InfiniteSampler)
        straight = _InfiniteDataloaderIterator(loader)
        first = [next(straight) for _ in range(30)]
        for batch in first:
            assert len(batch["i"]) == 4 and len(set(batch["tag"])) == 1
        resumed = _InfiniteDataloaderIterator(_loader(seed))
        resumed.skip_iter(20)  # what IterBasedTrainLoop does on --resume at iteration 20
        assert [next(resumed) for _ in range(10)] == first[20:]


def test_bad_arguments_raise():
    with pytest.raises(TypeError, match="locate"):
        TaskGroupedBatchSampler(DefaultSampler(list(range(10)), shuffle=False), batch_size=2)
    with pytest.raises(ValueError, match="batch_size"):
        TaskGroupedBatchSampler(DefaultSampler(_mixture(0), shuffle=False), batch_size=0)
