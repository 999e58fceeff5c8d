"""Mixing several task datasets: ratio sampling for training, concatenation for evaluation."""
import bisect
import logging
from typing import List, Optional, Sequence, Union

import numpy as np
from mmengine.logging import print_log
from torch.utils.data import Dataset

from visionllm.registry import DATASETS


@DATASETS.register_module()
class MultiTaskDataset(Dataset):
    """A mixture of datasets (each with its own pipeline, usually one task each).

    With ``ratios`` (training), item ``idx`` draws a dataset with probability proportional to
    its ratio and a sample uniformly inside it, from a generator seeded by ``(seed, epoch, idx)``:
    the same index, seed and epoch always give the same sample, whatever the worker layout.
    ``length`` is the epoch length (default: the total size of the datasets).

    Without ``ratios`` (evaluation) it is a plain concatenation: every sample once, in order,
    so a single test loader covers every task and ``MultiTaskMetric`` dispatches by task.

    ``pipeline`` (optional) replaces the pipeline of every dataset given as a config dict, so a
    config can change the training transforms without repeating its dataset list. A dataset's
    own, different pipeline is then not used: the datasets concerned are logged
    (``replaced_pipelines`` holds their indices), so an edit to one of them is not silently lost.
    """

    def __init__(self, datasets: Sequence[Union[dict, Dataset]], ratios: Optional[Sequence[float]] = None,
                 length: Optional[int] = None, seed: int = 0, lazy_init: bool = False,
                 pipeline: Optional[Sequence[dict]] = None):
        self.replaced_pipelines: List[int] = []
        if pipeline is not None:
            pipeline = list(pipeline)
            self.replaced_pipelines = [i for i, d in enumerate(datasets) if isinstance(d, dict)
                                       and d.get("pipeline") is not None and list(d["pipeline"]) != pipeline]
            datasets = [dict(d, pipeline=list(pipeline)) if isinstance(d, dict) else d for d in datasets]
            if self.replaced_pipelines:
                print_log(f"MultiTaskDataset: its pipeline replaces the different pipelines given to datasets "
                          f"{self.replaced_pipelines}", logger="current", level=logging.WARNING)
        self.datasets: List[Dataset] = [DATASETS.build(d) if isinstance(d, dict) else d for d in datasets]
        if not self.datasets:
            raise ValueError("MultiTaskDataset needs at least one dataset")
        self.probabilities = None if ratios is None else self._probabilities(ratios)
        self._length = length
        self.seed = seed
        self.epoch = 0
        self._fully_initialized = False
        if not lazy_init:
            self.full_init()

    def _probabilities(self, ratios: Sequence[float]) -> np.ndarray:
        if len(ratios) != len(self.datasets):
            raise ValueError(f"{len(ratios)} ratios for {len(self.datasets)} datasets")
        ratios = np.asarray(ratios, dtype=np.float64)
        if (ratios < 0).any() or ratios.sum() <= 0:
            raise ValueError(f"ratios must be non-negative with a positive sum, got {ratios.tolist()}")
        return ratios / ratios.sum()

    def _check_no_empty_draws(self) -> None:
        sizes = [len(d) for d in self.datasets]
        empty = [i for i, n in enumerate(sizes) if n == 0 and self.probabilities[i] > 0]
        if empty:
            raise ValueError(f"datasets {empty} are empty but have a positive sampling ratio")

    def set_ratios(self, ratios: Sequence[float]) -> None:
        """Draw every index from now on with ``ratios`` (a mixture that changes during training).

        Draws stay pure functions of the index: the same ratios give an index the same sample
        again, and its random transforms do not depend on the ratios at all.
        """
        if self.probabilities is None:
            raise ValueError("set_ratios needs a ratio-sampled mixture; this one concatenates its datasets")
        previous, self.probabilities = self.probabilities, self._probabilities(ratios)
        if self._fully_initialized:
            try:
                self._check_no_empty_draws()
            except ValueError:
                self.probabilities = previous
                raise

    @property
    def metainfo(self) -> dict:
        return dict(tasks=[getattr(d, "metainfo", {}).get("task") for d in self.datasets],
                    datasets=[getattr(d, "metainfo", {}) for d in self.datasets])

    def full_init(self) -> None:
        if self._fully_initialized:
            return
        for dataset in self.datasets:
            if hasattr(dataset, "full_init"):
                dataset.full_init()
        if self.probabilities is not None:
            self._check_no_empty_draws()
        self.cumulative_sizes = np.cumsum([len(d) for d in self.datasets]).tolist()
        self._fully_initialized = True

    def set_epoch(self, epoch: int) -> None:
        """Called by a sampler / hook so each epoch draws a different mixture."""
        self.epoch = epoch

    def __len__(self) -> int:
        self.full_init()
        if self._length is not None:
            return self._length
        return self.cumulative_sizes[-1]

    def locate(self, idx: int):
        """(dataset index, sample index) of item ``idx``."""
        self.full_init()
        if self.probabilities is None:
            if idx < 0:
                idx += len(self)
            which = bisect.bisect_right(self.cumulative_sizes, idx)
            start = self.cumulative_sizes[which - 1] if which else 0
            return which, idx - start
        rng = np.random.default_rng([self.seed, self.epoch, idx])
        which = int(rng.choice(len(self.datasets), p=self.probabilities))
        return which, int(rng.integers(len(self.datasets[which])))

    def __getitem__(self, idx: int):
        which, inner = self.locate(idx)
        if self.probabilities is not None:
            # The random transforms (flip, phrasing, category sampling) draw from numpy's global
            # generator. Seeding it from (seed, epoch, idx) makes every sample a pure function of
            # its index, so a resumed run (whose sampler skips samples without loading them) sees
            # exactly the data an uninterrupted run would.
            np.random.seed(int(np.random.default_rng([self.seed, self.epoch, idx, 1]).integers(2 ** 31)))
        return self.datasets[which][inner]
