"""Helpers shared by the metrics: reading fields of data samples and dumping results."""
import json
import os
from typing import Any, Optional

import numpy as np
import torch


def to_dict(sample) -> dict:
    """Model outputs arrive as ``DetDataSample`` or as their ``to_dict()`` form."""
    if hasattr(sample, "to_dict"):
        return sample.to_dict()
    return sample


def samples_of_task(data_samples, task: Optional[str]):
    """The samples (as dicts) a metric of ``task`` scores: those of its task, or without a task
    (a single-task run); every sample when ``task`` is None."""
    for sample in data_samples:
        sample = to_dict(sample)
        if task is None or sample.get("task") in (None, task):
            yield sample


def to_numpy(value) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def dump_json(data, path: str) -> str:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(data, f)
    return path


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two xyxy boxes (continuous coordinates)."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0
