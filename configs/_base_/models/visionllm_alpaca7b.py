# The paper-size VisionLLM without its backbone: BERT-base text encoder, language fusion, a 6+6
# layer deformable transformer with M=100 image tokens, and Alpaca-7B with LoRA as the task
# decoder (1025 location bins, 512 class tokens). visionllm_r50_alpaca7b.py and
# visionllm_internimage_h_alpaca7b.py add the backbone. The architecture is the shipped tiny
# model's at paper size: the optional parts (pixels under each token, relational name alignment,
# image read-out in the LLM layers, box and polygon refinement, instruction relevance) keep their
# defaults.
#
# Local pretrained directories (there are no hub downloads at run time):
llm_path = "checkpoints/alpaca-7b"        # Hugging Face LLaMA directory of Alpaca-7B (weights + tokenizer)
text_encoder_path = "checkpoints/bert-base-uncased"  # Hugging Face BERT directory

embed_dims = 256
num_image_tokens = 100
model = dict(
    type="VisionLLM",
    data_preprocessor=dict(type="VisionLLMDataPreprocessor", pad_size_divisor=64),
    image_tokenizer=dict(
        type="ImageTokenizer",
        embed_dims=embed_dims,
        # backbone=...: set by visionllm_r50_alpaca7b.py / visionllm_internimage_h_alpaca7b.py
        # BERT stays frozen (lr 2e-4 would wreck its pretrained weights); its projection and
        # LayerNorm to the tokenizer width train.
        text_encoder=dict(model_dir=text_encoder_path, trainable=False),
        fusion=dict(num_heads=8),
        transformer=dict(num_heads=8, num_points=4, ffn_dims=1024, dropout=0.1, num_encoder_layers=6,
                         num_decoder_layers=6, num_queries=num_image_tokens, iterative_refinement=True),
        freeze_backbone=False,  # stage 2 sets True
    ),
    task_decoder=dict(
        type="LLMTaskDecoder",
        llm=dict(source=llm_path),
        prompt_style="alpaca",
        # LoRA on the attention projections; the base LLM and its vocabulary stay frozen, the new
        # token rows (locations, classes, no-object, formats) and the slot projection train.
        lora=dict(rank=8, alpha=16, dropout=0.05, include_mlp=False),
        # 1025 bins: <p-512>..<p512>, 1/512 of the image side per bin.
        special_tokens=dict(num_bins=1025, num_classes=512, max_points=24),
        num_slots=None,  # one slot per image token (N = M = 100)
        no_object_weight=0.1,
        max_new_tokens=30,
        max_per_img=100,
    ),
    # Weights restored from the local pretrained directories at build time; their frozen
    # parameters are left out of checkpoints.
    pretrained_prefixes=("task_decoder.llm", "image_tokenizer.text_encoder.bert"),
    # The frozen base (Alpaca-7B, BERT) is held in bfloat16: 13.5 GB instead of 27 GB per GPU.
    # LoRA, the new token rows and every trainable part keep float32 master weights; the forward
    # runs under bfloat16 autocast. GPUs without bfloat16 (before compute capability 8.0): set
    # frozen_dtype="float16" and train with tools/train.py --amp (loss scaling).
    frozen_dtype="bfloat16",
)

# Distribution (mmengine FlexibleRunner; tools/train.py builds RUNNERS from `runner_type`). See
# docs/multi_gpu.md for the memory per GPU of each choice (tools/estimate_memory.py).
runner_type = "FlexibleRunner"

# Default, LoRA training: DDP. Every GPU holds the whole model with the frozen base in bfloat16;
# DDP's buckets hold only the parameters that require gradients, so a step all-reduces the
# trainable gradients (~0.2 B values) and never the frozen 7 B.
ddp_strategy = dict(
    type="VisionLLMDDPStrategy",
    # A batch of caption / VQA samples leaves the structured-output parts unused (and vice versa).
    model_wrapper=dict(type="MMDistributedDataParallel", broadcast_buffers=False, find_unused_parameters=True),
)

# Alternative for an LLM that does not fit one GPU, or full fine-tuning: FSDP, one unit per LLaMA
# decoder layer, BERT layer and backbone stage (`layer_wrap_policy`); the embeddings, output layer
# and the small parts stay in the root unit, because the task decoder calls them directly and
# FSDP gathers a unit only inside its own forward. Parameters are stored in float32 and sharded;
# FSDP gathers each unit in bfloat16 for compute (MixedPrecision) and reduces gradients in float32.
# The model's frozen_dtype must then be None (FSDP flattens one dtype per unit).
# configs/visionllm_*_alpaca7b_stage1_fsdp.py select it.
fsdp_strategy = dict(
    type="VisionLLMFSDPStrategy",
    model_wrapper=dict(
        type="VisionLLMFullyShardedDataParallel",
        # LoRA leaves frozen and trainable tensors in the same modules: FSDP needs the original
        # parameters (not flattened views) to keep requires_grad per tensor.
        use_orig_params=True,
        auto_wrap_policy=dict(type="layer_wrap_policy"),
        sharding_strategy="FULL_SHARD",
        mixed_precision=dict(param_dtype="bfloat16", reduce_dtype="float32", buffer_dtype="float32"),
    ),
    # One ordinary checkpoint file gathered on rank 0 (loadable without FSDP, e.g. for inference
    # or as stage 2's load_from).
    state_dict_cfg=dict(
        state_dict_type="FULL_STATE_DICT",
        state_dict_config=dict(type="FullStateDictConfig", offload_to_cpu=True, rank0_only=True),
        optim_state_dict_config=dict(type="FullOptimStateDictConfig", offload_to_cpu=True, rank0_only=True),
    ),
)

# Optional: DeepSpeed ZeRO (pip install deepspeed). Stage 2 shards gradients and optimizer state
# (the frozen base is replicated, as with DDP); stage 3 also shards the parameters.
# bf16 casts the parameters; the buffers (BatchNorm statistics) are cast too (`buffer_dtype`),
# since DeepSpeed keeps them float32 otherwise and BatchNorm refuses the mix.
deepspeed_zero2_strategy = dict(
    type="VisionLLMDeepSpeedStrategy",
    config=dict(data_types=dict(buffer_dtype="bf16")),
    zero_optimization=dict(stage=2, overlap_comm=True, contiguous_gradients=True, reduce_bucket_size=5e8),
    bf16=dict(enabled=True),
    gradient_clipping=1.0,
    train_micro_batch_size_per_gpu=1,
)
deepspeed_zero3_strategy = dict(
    type="VisionLLMDeepSpeedStrategy",
    config=dict(data_types=dict(buffer_dtype="bf16")),
    zero_optimization=dict(stage=3, overlap_comm=True, contiguous_gradients=True,
                           stage3_gather_16bit_weights_on_model_save=True),
    bf16=dict(enabled=True),
    gradient_clipping=1.0,
    train_micro_batch_size_per_gpu=1,
)

strategy = ddp_strategy
