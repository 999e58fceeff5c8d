# Paper setting, stage 2: ResNet-50 + Alpaca-7B, all tasks mixed (COCO detection and instance
# segmentation, RefCOCO, COCO Caption, VQAv2, LLaVA-Instruct), backbone frozen, starting from the
# stage-1 weights. Multi-GPU (DDP, see _base_/models/visionllm_alpaca7b.py and docs/multi_gpu.md):
#   tools/dist_train.sh configs/visionllm_r50_alpaca7b_stage2.py 8
_base_ = [
    "_base_/models/visionllm_r50_alpaca7b.py",
    "_base_/datasets/coco_refcoco_caption_llava.py",
    "_base_/schedules/adamw_cosine.py",
    "_base_/default_runtime.py",
]
work_dir = "work_dirs/visionllm_r50_alpaca7b_stage2"

# The backbone (and its level projections) is frozen; the rest of the tokenizer, the token
# projection, LoRA and the new token rows keep training.
model = dict(image_tokenizer=dict(freeze_backbone=True))
# The last stage-1 checkpoint (a full state dict gathered on rank 0). The pretrained backbone
# weights named in the model file are loaded at build time and then replaced by these.
load_from = "work_dirs/visionllm_r50_alpaca7b_stage1/iter_{}.pth".format(_base_.max_iters)
train_cfg = dict(val_interval=_base_.max_iters + 1)
# mmengine's IterBasedTrainLoop still validates after the last iteration whatever val_interval
# says: no val loop at all (the test_* keys of the dataset file stay for tools/test.py).
val_dataloader = None
val_cfg = None
val_evaluator = None
