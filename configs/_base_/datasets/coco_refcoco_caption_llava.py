# The paper's data: COCO 2017 (detection + instance segmentation), RefCOCO (unc split),
# COCO Caption (Karpathy split), VQAv2 and LLaVA-Instruct-150K. Expected layout:
#   data/coco/{train2017,val2017,train2014,val2014}/
#   data/coco/annotations/{instances_train2017,instances_val2017}.json
#   data/coco/annotations/dataset_coco.json                   (Karpathy split; filepath = train2014|val2014)
#   data/refcoco/{instances.json,refs(unc).p}                 (images from COCO train2014)
#   data/vqa/{v2_OpenEnded_mscoco_train2014_questions.json,v2_mscoco_train2014_annotations.json,
#             v2_OpenEnded_mscoco_val2014_questions.json,v2_mscoco_val2014_annotations.json}
#   data/llava/llava_instruct_150k.json                       (images from COCO train2017)
# Evaluation, as in shapes_all_tasks.py: one loader over the concatenated task test sets, one
# MultiTaskMetric routing by task (COCO val2017 box + mask AP, RefCOCO val P@0.5, Karpathy test
# BLEU-4 / CIDEr, VQAv2 val accuracy).
coco_root = "data/coco/"
img_scale = (1333, 800)
max_categories = 80
polygon_points = [8, 14, 16, 20, 24]
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

coco_train = dict(type="CocoInstancesDataset", data_root=coco_root, ann_file="annotations/instances_train2017.json",
                  data_prefix=dict(img_path="train2017/"), filter_empty_gt=True, pipeline=train_pipeline)
refcoco_common = dict(type="RefCocoDataset", data_root="data/refcoco/", ann_file="instances.json",
                      refs_file="refs(unc).p", data_prefix=dict(img_path="../coco/train2014/"))
caption_common = dict(type="CocoCaptionDataset", data_root=coco_root, ann_file="annotations/dataset_coco.json",
                      data_prefix=dict(img_path=""))
# Caption / VQA training images are COCO 2014 images, whose boxes are in the 2017 instance files
# (same image ids): they teach the tokenizer where the objects are for those tasks too.
coco_boxes = ["annotations/instances_train2017.json", "annotations/instances_val2017.json"]
vqa_train = dict(type="VQAv2Dataset", data_root="data/vqa/", ann_file="v2_OpenEnded_mscoco_train2014_questions.json",
                 answers_file="v2_mscoco_train2014_annotations.json", data_prefix=dict(img_path="../coco/train2014/"),
                 boxes_file=["../coco/" + f for f in coco_boxes], pipeline=train_pipeline)
llava_train = dict(type="LlavaInstructDataset", data_root="data/llava/", ann_file="llava_instruct_150k.json",
                   data_prefix=dict(img_path="../coco/train2017/"), pipeline=train_pipeline)

train_dataloader = dict(
    batch_size=2,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type="InfiniteSampler", shuffle=True),
    collate_fn=dict(type="pseudo_collate"),
    # length ~ samples per run (iterations x batch): every index is a fresh draw of the mixture
    dataset=dict(type="MultiTaskDataset", seed=0, length=1000000, ratios=[0.3, 0.2, 0.2, 0.1, 0.1, 0.1], datasets=[
        dict(coco_train, task="detection"),
        dict(coco_train, task="segmentation"),
        dict(refcoco_common, split="train", pipeline=train_pipeline),
        dict(caption_common, split="train", boxes_file=coco_boxes, pipeline=train_pipeline),
        vqa_train,
        llava_train,
    ]),
)

coco_val = dict(type="CocoInstancesDataset", data_root=coco_root, ann_file="annotations/instances_val2017.json",
                data_prefix=dict(img_path="val2017/"), pipeline=test_pipeline, test_mode=True)
val_dataloader = dict(
    batch_size=1,
    num_workers=2,
    persistent_workers=True,
    drop_last=False,
    sampler=dict(type="DefaultSampler", shuffle=False),
    collate_fn=dict(type="pseudo_collate"),
    dataset=dict(type="MultiTaskDataset", datasets=[
        dict(coco_val, task="detection"),
        dict(coco_val, task="segmentation"),
        dict(refcoco_common, split="val", pipeline=test_pipeline, test_mode=True),
        dict(caption_common, split="test", pipeline=test_pipeline, test_mode=True),
        dict(type="VQAv2Dataset", data_root="data/vqa/", ann_file="v2_OpenEnded_mscoco_val2014_questions.json",
             answers_file="v2_mscoco_val2014_annotations.json", data_prefix=dict(img_path="../coco/val2014/"),
             pipeline=test_pipeline, test_mode=True),
    ]),
)
test_dataloader = val_dataloader

val_evaluator = dict(
    type="MultiTaskMetric",
    task_metrics=dict(
        detection=dict(type="VisionLLMCocoMetric", ann_file=coco_root + "annotations/instances_val2017.json",
                       metric="bbox", task="detection"),
        segmentation=dict(type="VisionLLMCocoMetric", ann_file=coco_root + "annotations/instances_val2017.json",
                          metric=["bbox", "segm"], task="segmentation"),
        grounding=dict(type="RefCocoMetric"),
        caption=dict(type="CaptionMetric"),
        vqa=dict(type="VQAAccuracy"),
    ),
)
test_evaluator = val_evaluator
