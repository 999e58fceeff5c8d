# Stage 1 of the paper setting (ResNet-50 + Alpaca-7B) with FSDP instead of DDP: parameters,
# gradients and optimizer state sharded over the GPUs, one FSDP unit per LLaMA decoder layer, BERT
# layer and backbone stage, bfloat16 compute through FSDP's MixedPrecision. For an LLM that does
# not fit one GPU next to its activations (see docs/multi_gpu.md):
#   tools/dist_train.sh configs/visionllm_r50_alpaca7b_stage1_fsdp.py 8
_base_ = ["./visionllm_r50_alpaca7b_stage1.py"]
work_dir = "work_dirs/visionllm_r50_alpaca7b_stage1_fsdp"

# FSDP flattens one dtype per unit: the frozen base stays float32 at rest (sharded) and is
# gathered in bfloat16 by the MixedPrecision policy of the strategy.
model = dict(frozen_dtype=None)
strategy = dict(_delete_=True, **_base_.fsdp_strategy)
