# Paper setting, stage 1: InternImage-H + Alpaca-7B, detection only (COCO 2017 with random category
# sets and instruction phrasings). Backbone and image tokenizer train; the LLM is frozen except
# LoRA and the new token rows. Multi-GPU (DDP, see _base_/models/visionllm_alpaca7b.py and docs/multi_gpu.md):
#   tools/dist_train.sh configs/visionllm_internimage_h_alpaca7b_stage1.py 8
_base_ = [
    "_base_/models/visionllm_internimage_h_alpaca7b.py",
    "_base_/datasets/coco_refcoco_caption_llava.py",
    "_base_/schedules/adamw_cosine.py",
    "_base_/default_runtime.py",
]
work_dir = "work_dirs/visionllm_internimage_h_alpaca7b_stage1"

# Detection only: the mixture of the dataset file is replaced by COCO detection instances.
train_dataloader = dict(dataset=dict(_delete_=True, **_base_.coco_train, task="detection"))
# Evaluation runs with tools/test.py after training (one process reads the whole val set).
train_cfg = dict(val_interval=_base_.max_iters + 1)
# mmengine's IterBasedTrainLoop still validates after the last iteration whatever val_interval
# says: no val loop at all (the test_* keys of the dataset file stay for tools/test.py).
val_dataloader = None
val_cfg = None
val_evaluator = None
