"""Batches that hold one task each, drawn from a ratio-sampled ``MultiTaskDataset``."""
from typing import Dict, Iterator, List

from torch.utils.data import BatchSampler, Sampler

from visionllm.registry import DATA_SAMPLERS


@DATA_SAMPLERS.register_module()
class TaskGroupedBatchSampler(BatchSampler):
    """Groups the indices of ``sampler`` into batches whose samples all come from the same
    dataset of the mixture (in the mixture's order, one task each).

    A mixed batch pays for its most expensive task: one polygon sample makes the model decode
    polygon slots for the whole batch. Grouping keeps the mixture's shares (every index the
    sampler yields lands in exactly one batch, in the order its group fills) while each batch
    runs one task's cost. Which dataset an index draws is read from ``dataset.locate(idx)``, a
    pure function of the index, so the batches are as deterministic as the sampler and a resumed
    run re-forms the same ones.

    Use in a config as ``batch_sampler=dict(type="TaskGroupedBatchSampler")`` next to the
    dataloader's ``sampler`` and ``batch_size`` (mmengine passes both in). With an infinite
    sampler ``__len__`` is the sampler's length divided by the batch size, as for
    ``BatchSampler``; the partly filled groups at the end of a finite sampler are yielded last
    unless ``drop_last``.
    """

    def __init__(self, sampler: Sampler, batch_size: int, drop_last: bool = False):
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size <= 0:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        dataset = getattr(sampler, "dataset", None)
        if not hasattr(dataset, "locate"):
            raise TypeError("TaskGroupedBatchSampler needs a sampler over a dataset with a locate(idx) method "
                            f"(MultiTaskDataset); got a sampler over {type(dataset).__name__}")
        super().__init__(sampler, batch_size, drop_last)
        self.dataset = dataset

    def __iter__(self) -> Iterator[List[int]]:
        groups: Dict[int, List[int]] = {}
        for idx in self.sampler:
            group = groups.setdefault(self.dataset.locate(idx)[0], [])
            group.append(idx)
            if len(group) == self.batch_size:
                yield group[:]
                group.clear()
        if not self.drop_last:
            for group in groups.values():
                if group:
                    yield group[:]
