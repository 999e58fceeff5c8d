# Stage 1 of the paper setting (ResNet-50 + Alpaca-7B) with DeepSpeed ZeRO-2 through mmengine's
# DeepSpeedStrategy (needs `pip install deepspeed`): gradients and optimizer state sharded over
# the GPUs, bfloat16 compute. ZeRO-3 (parameters sharded too): strategy = _base_.deepspeed_zero3_strategy.
#   tools/dist_train.sh configs/visionllm_r50_alpaca7b_stage1_deepspeed.py 8
_base_ = ["./visionllm_r50_alpaca7b_stage1.py"]
work_dir = "work_dirs/visionllm_r50_alpaca7b_stage1_deepspeed"

# DeepSpeed keeps its own fp32 master copy of what it trains and casts the module itself.
model = dict(frozen_dtype=None)
strategy = dict(_delete_=True, **_base_.deepspeed_zero2_strategy)
# Gradient clipping is DeepSpeed's (`gradient_clipping` of the strategy).
optim_wrapper = dict(_delete_=True, type="DeepSpeedOptimWrapper",
                     optimizer=dict(type="AdamW", lr=2e-4, weight_decay=0.05, betas=(0.9, 0.999)))
