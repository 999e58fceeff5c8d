"""Predicted samples written by hand, for the parts that read the model's own predictions."""
import torch
from mmengine.structures import InstanceData

from mmdet.structures import DetDataSample


def detections(boxes, labels, scores) -> DetDataSample:
    """A detection sample after prediction: ``pred_instances`` with these boxes (x1, y1, x2, y2),
    labels and scores."""
    sample = DetDataSample()
    sample.pred_instances = InstanceData(bboxes=torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                                         labels=torch.as_tensor(labels, dtype=torch.long),
                                         scores=torch.as_tensor(scores, dtype=torch.float32))
    return sample
