# The paper-size VisionLLM without its backbone: BERT-base text encoder, language fusion, a 6+6
# layer deformable transformer with M=100 image tokens, and Alpaca-7B with LoRA as the task
# decoder (1025 location bins, 512 class tokens). visionllm_r50_alpaca7b.py and
# visionllm_internimage_h_alpaca7b.py add the backbone.
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
)

# 7B parameters do not fit one GPU with activations, gradients and optimizer state per rank:
# shard them with FSDP (mmengine FlexibleRunner; tools/train.py builds RUNNERS from `runner_type`).
runner_type = "FlexibleRunner"
strategy = dict(
    type="FSDPStrategy",
    model_wrapper=dict(
        type="MMFullyShardedDataParallel",
        # LoRA leaves frozen and trainable tensors in the same modules: FSDP then needs the
        # original parameters (not flattened views) to keep requires_grad per tensor.
        use_orig_params=True,
        # One FSDP unit (the root): parameters, gradients and optimizer state are sharded at
        # rest and gathered for the step. Nested units would be unsafe here: FSDP gathers a
        # unit's parameters only inside that unit's forward, and the task decoder calls the
        # LLM's embedding, output layer and inner model directly. A size-based policy cannot
        # isolate the decoder layers (202 M each) without also wrapping the LLM's remaining
        # embedding + output layer (275 M); a per-layer policy needs LlamaDecoderLayer as a class
        # object (transformer_auto_wrap_policy), which only a registered function can supply.
        auto_wrap_policy=None,
        sharding_strategy="FULL_SHARD",
        # fp32: the deformable-attention and DCNv3 kernels dispatch float / double only.
        mixed_precision=None,
    ),
    # One ordinary checkpoint file gathered on rank 0 (loadable without FSDP, e.g. for inference
    # or as stage 2's load_from).
    state_dict_cfg=dict(
        state_dict_type="FULL_STATE_DICT",
        state_dict_config=dict(type="FullStateDictConfig", offload_to_cpu=True, rank0_only=True),
        optim_state_dict_config=dict(type="FullOptimStateDictConfig", offload_to_cpu=True, rank0_only=True),
    ),
)
