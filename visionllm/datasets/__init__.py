"""Readers of the supported data (COCO, RefCOCO, captions, VQAv2, LLaVA-Instruct, shapes), the
multi-task mixer and the data pipeline transforms.

Every reader yields ``data_info`` dicts with ``img_path``, ``img_id``, ``task`` and, per task:
- detection / segmentation: ``height``, ``width``, ``instances=[{bbox (xyxy, original pixels),
  bbox_label (index into metainfo['classes']), mask (COCO polygons or RLE), ignore_flag}]`` and
  ``classes`` (added by ``get_data_info``);
- grounding: ``expression``, ``ref_id``, ``ann_id``, one instance with ``bbox_label=0``;
- caption: ``gt_texts`` (all reference captions);
- vqa: ``question``, ``question_id``, ``gt_texts`` (human answers), ``target_text``;
- region tasks (``ShapesRegionDataset``): ``regions`` (boxes the ``<region>`` placeholders point
  at), ``gt_texts`` and the question or candidate names.
- request: ``request`` (a plain-language request), ``target_text`` (its canonical form).
The transforms in ``visionllm.datasets.transforms`` turn them into the data samples described in
docs/interfaces.md. Bad annotations are skipped and reported in one warning per dataset; a
missing annotation file raises ``FileNotFoundError`` naming the path. ``TaskGroupedBatchSampler``
batches a ratio-sampled mixture one task per batch.
"""
from .captions import CocoCaptionDataset
from .coco_instances import CocoInstancesDataset
from .llava import LlavaInstructDataset
from .multi_task import MultiTaskDataset
from .plain_requests import PlainRequestDataset
from .refcoco import RefCocoDataset
from .shape_conversations import ShapesConversationDataset
from .shapes_regions import ShapesRegionDataset
from .task_grouped_batch_sampler import TaskGroupedBatchSampler
from .vqa import VQAv2Dataset
from .transforms import *  # noqa: F401,F403  (registers the transforms)

__all__ = ["CocoInstancesDataset", "RefCocoDataset", "CocoCaptionDataset", "VQAv2Dataset",
           "LlavaInstructDataset", "MultiTaskDataset", "ShapesRegionDataset",
           "ShapesConversationDataset", "PlainRequestDataset", "TaskGroupedBatchSampler"]
