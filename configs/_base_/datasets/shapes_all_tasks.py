# The embedded shapes data (tools/make_shapes.py) for all tasks: the five of VisionLLM and three
# about regions (region captioning, region question answering, region classification).
#
# Training: one MultiTaskDataset samples detection, segmentation, grounding, caption, VQA and the
# region tasks with the ratios below (deterministic per index and seed).
# Validation / test: ONE loader over the concatenation of the task datasets, the five first
# (indices 0-4, as the README's commands use them) and the region tasks after them (a
# MultiTaskDataset without ratios); MultiTaskMetric routes every prediction to the metric of its
# task, and each metric prints its own table. (mmengine's Runner takes a single val/test loader,
# so the combined dataset is the simplest multi-task evaluation that still uses ValLoop/TestLoop.)
data_root = "data/shapes/"
img_scale = (192, 192)  # (long, short) side limits of the keep-ratio resize
max_categories = 6
# Training polygons of 8 or 16 points keep the query positions per slot few on a CPU budget.
polygon_points = [8, 16]
eval_polygon_points = 16

train_pipeline = [
    dict(type="LoadImageRGB"),
    dict(type="LoadVisionLLMAnnotations"),
    dict(type="RandomFlipWithText", prob=0.5),
    dict(type="ResizeKeepRatio", scale=img_scale),
    dict(type="ResamplePolygons", num_points=polygon_points),
    dict(type="BuildInstruction", max_categories=max_categories, negative_ratio=1.0, sample_categories=True),
    dict(type="PackVisionLLMInputs"),
]
test_pipeline = [
    dict(type="LoadImageRGB"),
    dict(type="LoadVisionLLMAnnotations"),
    dict(type="ResizeKeepRatio", scale=img_scale),
    dict(type="ResamplePolygons", num_points=eval_polygon_points),
    dict(type="BuildInstruction", sample_categories=False, template_index=0),
    dict(type="PackVisionLLMInputs"),
]


def _task_datasets(split, pipeline, test_mode):
    ann = f"annotations/{{}}_{split}.json"
    prefix = dict(img_path=f"images/{split}/")
    common = dict(data_root=data_root, data_prefix=prefix, pipeline=pipeline, test_mode=test_mode)
    return [
        dict(type="CocoInstancesDataset", ann_file=ann.format("instances"), task="detection",
             filter_empty_gt=not test_mode, **common),
        dict(type="CocoInstancesDataset", ann_file=ann.format("instances"), task="segmentation",
             filter_empty_gt=not test_mode, **common),
        dict(type="RefCocoDataset", ann_file=ann.format("instances"), refs_file=ann.format("refs"), split=split,
             **common),
        # Captions and questions carry their image's boxes: the tokenizer learns to put tokens on
        # the objects they talk about (without boxes a text sample adds no token loss).
        dict(type="CocoCaptionDataset", ann_file=ann.format("captions"), boxes_file=ann.format("instances"),
             **common),
        dict(type="VQAv2Dataset", ann_file=ann.format("vqa_questions"), answers_file=ann.format("vqa_annotations"),
             image_info_file=ann.format("instances"), boxes_file=ann.format("instances"), **common),
        # Region samples of the same objects: a box of the instruction's <region> (ShapesRegionDataset).
        *[dict(type="ShapesRegionDataset", task=task, ann_file=ann.format("instances"), refs_file=ann.format("refs"),
               **common) for task in ("region_caption", "region_vqa", "region_classification")],
    ]


train_dataloader = dict(
    batch_size=2,
    num_workers=0,
    persistent_workers=False,
    sampler=dict(type="InfiniteSampler", shuffle=True),
    collate_fn=dict(type="pseudo_collate"),
    # Each index maps to a fixed (dataset, sample) draw, so the epoch length is set to about the
    # number of samples a run consumes: every draw is then fresh instead of a repeated subset.
    dataset=dict(type="MultiTaskDataset", datasets=_task_datasets("train", train_pipeline, False),
                 ratios=[0.3, 0.2, 0.2, 0.15, 0.15, 0.05, 0.05, 0.05], length=200000, seed=0),
)
val_dataloader = dict(
    batch_size=1,
    num_workers=0,
    persistent_workers=False,
    drop_last=False,
    sampler=dict(type="DefaultSampler", shuffle=False),
    collate_fn=dict(type="pseudo_collate"),
    dataset=dict(type="MultiTaskDataset", datasets=_task_datasets("val", test_pipeline, True)),
)
test_dataloader = val_dataloader

val_evaluator = dict(
    type="MultiTaskMetric",
    task_metrics=dict(
        detection=dict(type="VisionLLMCocoMetric", ann_file=data_root + "annotations/instances_val.json",
                       metric="bbox", task="detection"),
        segmentation=dict(type="VisionLLMCocoMetric", ann_file=data_root + "annotations/instances_val.json",
                          metric=["bbox", "segm"], task="segmentation"),
        grounding=dict(type="RefCocoMetric"),
        # The instances of the same images: object hallucination (CHAIR) and count accuracy.
        caption=dict(type="CaptionMetric", ann_file=data_root + "annotations/instances_val.json"),
        vqa=dict(type="VQAAccuracy"),
        region_caption=dict(type="RegionCaptionMetric"),
        region_vqa=dict(type="RegionVQAAccuracy"),
        region_classification=dict(type="RegionClassificationAccuracy"),
    ),
)
test_evaluator = val_evaluator
