"""A training mixture whose task shares change at given iterations."""
from typing import List, Optional, Sequence

from mmengine.hooks import Hook

from visionllm.datasets.task_grouped_batch_sampler import TaskGroupedBatchSampler
from visionllm.registry import HOOKS


@HOOKS.register_module()
class MixtureScheduleHook(Hook):
    """Set the training ``MultiTaskDataset``'s ratios by iteration.

    ``phases`` is a list of ``dict(begin=ITERATION, ratios=[...])`` with increasing ``begin``:
    the batch of every iteration ``i`` (counted from 0, as ``runner.iter``) is drawn with the
    ratios of the last phase whose ``begin <= i``, and before the first phase with the
    config's own ``ratios``. The same holds in a run resumed from any checkpoint, so a phased
    run resumed at iteration ``k`` sees exactly the batches a run from nothing would.

    That needs each batch to be drawn right before its iteration runs: the train dataloader
    must load in the main process (``num_workers=0``; worker processes hold their own copy of
    the dataset and fetch ahead) and must not group indices ahead of time by the dataset they
    draw (``TaskGroupedBatchSampler``).
    """

    def __init__(self, phases: Sequence[dict]):
        if not phases:
            raise ValueError("MixtureScheduleHook needs at least one phase")
        begins = []
        for phase in phases:
            if set(phase) != {"begin", "ratios"}:
                raise ValueError(f"each phase is dict(begin=..., ratios=[...]), got {phase}")
            begin = phase["begin"]
            if not isinstance(begin, int) or isinstance(begin, bool) or begin < 1:
                raise ValueError(f"a phase's begin must be a positive iteration, got {begin!r}")
            begins.append(begin)
        if begins != sorted(set(begins)):
            raise ValueError(f"phase begins must strictly increase, got {begins}")
        self.phases = [dict(begin=p["begin"], ratios=list(p["ratios"])) for p in phases]
        self._dataset = None
        self._initial: Optional[List[float]] = None
        self._current: Optional[List[float]] = None

    def ratios_at(self, iteration: int) -> List[float]:
        """The ratios the batch of ``iteration`` is drawn with."""
        ratios = self._initial
        for phase in self.phases:
            if phase["begin"] <= iteration:
                ratios = phase["ratios"]
        return ratios

    def before_train(self, runner) -> None:
        dataloader = runner.train_loop.dataloader
        if dataloader.num_workers:
            raise ValueError(f"MixtureScheduleHook needs train_dataloader.num_workers=0, got "
                             f"{dataloader.num_workers}: worker processes keep their own copy of the mixture")
        if isinstance(dataloader.batch_sampler, TaskGroupedBatchSampler):
            raise ValueError("MixtureScheduleHook cannot be used with TaskGroupedBatchSampler, which draws "
                             "datasets for indices before their iteration")
        dataset = dataloader.dataset
        if getattr(dataset, "probabilities", None) is None or not hasattr(dataset, "set_ratios"):
            raise ValueError("MixtureScheduleHook needs a ratio-sampled MultiTaskDataset as the train dataset, "
                             f"got {type(dataset).__name__}")
        self._dataset = dataset
        self._initial = dataset.probabilities.tolist()
        for phase in self.phases:  # a wrong phase fails now, not hours into the run
            dataset.set_ratios(phase["ratios"])
        dataset.set_ratios(self._initial)
        self._current = self._initial
        self._apply(runner, runner.iter)

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        # runner.iter is the iteration just run; the next batch is loaded after this hook
        self._apply(runner, runner.iter + 1)

    def _apply(self, runner, iteration: int) -> None:
        ratios = self.ratios_at(iteration)
        if ratios is self._current:
            return
        self._dataset.set_ratios(ratios)
        self._current = ratios
        runner.logger.info(f"training mixture from iteration {iteration}: ratios {ratios}")
