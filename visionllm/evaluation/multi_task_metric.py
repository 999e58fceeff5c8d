"""One evaluator for a concatenated multi-task test set: samples go to their task's metric."""
from typing import Dict, Optional

from mmengine import dist
from mmengine.evaluator import BaseMetric

from visionllm.registry import METRICS

from .utils import to_dict


@METRICS.register_module()
class MultiTaskMetric(BaseMetric):
    """``task_metrics={task: metric config}``; each sample is routed by its ``task`` metainfo, each
    sub-metric prints its own table, and the returned keys are ``<task>/<name>``. A config without
    ``type`` is the task's default metric (``TaskSpec.metric``) with the config's arguments.

    ``outfile_prefix`` (optional) is handed to every sub-metric as ``<outfile_prefix>_<task>``
    unless it sets its own.
    """

    # Its keys carry the sub-metrics' task prefixes; an empty own prefix (not None) also keeps
    # mmengine from warning that none is set.
    default_prefix = ""
    # (not named ``metrics``: mmengine reads a dict with a ``metrics`` key as an Evaluator config)

    def __init__(self, task_metrics: Dict[str, dict], outfile_prefix: Optional[str] = None,
                 collect_device: str = "cpu", prefix: Optional[str] = None):
        super().__init__(collect_device=collect_device, prefix=prefix)
        self.metrics = {}
        for task, cfg in task_metrics.items():
            cfg = dict(cfg)
            if "type" not in cfg:
                from visionllm.tasks import get_task
                cfg = {**get_task(task).metric, **cfg}
            if outfile_prefix and cfg.get("outfile_prefix") is None:
                cfg["outfile_prefix"] = f"{outfile_prefix}_{task}"
            cfg.setdefault("prefix", task)
            self.metrics[task] = METRICS.build(cfg)

    @property
    def dataset_meta(self):
        return self._dataset_meta

    @dataset_meta.setter
    def dataset_meta(self, meta) -> None:
        self._dataset_meta = meta
        for metric in self.metrics.values():
            metric.dataset_meta = meta

    def process(self, data_batch, data_samples) -> None:
        routed = {}
        for sample in data_samples:
            sample = to_dict(sample)
            routed.setdefault(sample.get("task"), []).append(sample)
        for task, samples in routed.items():
            if task in self.metrics:
                self.metrics[task].process(data_batch, samples)

    def compute_metrics(self, results: list) -> dict:  # pragma: no cover - evaluate() is overridden
        return {}

    def evaluate(self, size: int) -> dict:
        metrics = {}
        for metric in self.metrics.values():
            count = len(metric.results)
            if dist.is_distributed():
                count = int(dist.all_reduce(__import__("torch").tensor(count), op="sum"))
            if count == 0:
                continue
            metrics.update(metric.evaluate(count))
        return metrics
