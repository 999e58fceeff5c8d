"""Readers of the supported data (COCO, RefCOCO, captions, VQAv2, LLaVA-Instruct, shapes), the
multi-task mixer and the data pipeline transforms."""
from .captions import CocoCaptionDataset
from .coco_instances import CocoInstancesDataset
from .llava import LlavaInstructDataset
from .multi_task import MultiTaskDataset
from .refcoco import RefCocoDataset
from .vqa import VQAv2Dataset
from .transforms import *  # noqa: F401,F403  (registers the transforms)

__all__ = ["CocoInstancesDataset", "RefCocoDataset", "CocoCaptionDataset", "VQAv2Dataset",
           "LlavaInstructDataset", "MultiTaskDataset"]
