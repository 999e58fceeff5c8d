# The embedded default model: small enough to train and run on a 2-core CPU.
# ResNet-18 (timm) + frozen MiniLM text encoder + 2+2-layer deformable transformer with 16 image
# tokens, and the first 4 layers of SmolLM2-135M-Instruct with LoRA as the task decoder.
# The optional parts of the architecture are on by default (pixels under each token, relational
# name alignment, image read-out in the LLM layers, box and polygon refinement, instruction
# relevance; docs/experiments.md measures each): set one to None to leave it out.
embed_dims = 128
num_image_tokens = 16
model = dict(
    type="VisionLLM",
    data_preprocessor=dict(type="VisionLLMDataPreprocessor", pad_size_divisor=64),
    image_tokenizer=dict(
        type="ImageTokenizer",
        embed_dims=embed_dims,
        backbone=dict(type="ResNetBackbone", depth=18),
        text_encoder=dict(trainable=False),
        fusion=dict(num_heads=4),
        transformer=dict(num_heads=4, num_points=4, ffn_dims=512, dropout=0.0, num_encoder_layers=2,
                         num_decoder_layers=2, num_queries=num_image_tokens, iterative_refinement=True),
    ),
    task_decoder=dict(
        type="LLMTaskDecoder",
        llm=dict(source="smollm2", num_layers=4),
        lora=dict(rank=16, alpha=32, dropout=0.0, include_mlp=False),
        # 257 location bins: 1/128 of the image side, about 1.5 px on the 192 px shapes images.
        special_tokens=dict(num_bins=257, num_classes=32, max_points=24),
        no_object_weight=0.1,
        # Box precision: a GIoU term on the decoded boxes (the LLM found the right object, AP50 89,
        # but a pixel or two off, AP75 55).
        loss_weights=dict(giou=2.0),
        max_new_tokens=24,
        # Four correction steps for boxes and outlines: 2 -> 4 lifted box AP 52.2 -> 55.6 and mask AP
        # 31.9 -> 42.9 on the classic val subset (docs/experiments.md, "Deeper refinements").
        box_refinement=dict(type="BoxRefinement", num_layers=4),
        polygon_refinement=dict(type="PolygonRefinement", num_layers=4),
    ),
    # Frozen weights restored from the installed packages, so checkpoints leave them out.
    pretrained_prefixes=("task_decoder.llm", "image_tokenizer.text_encoder.bert"),
)
