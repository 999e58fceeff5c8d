# The embedded default model: small enough to train and run on a 2-core CPU.
# ResNet-18 (timm) + frozen MiniLM text encoder + 2+2-layer deformable transformer with 16 image
# tokens, and the first 4 layers of SmolLM2-135M-Instruct with LoRA as the task decoder.
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
        # Tokens also see the pixels at their reference point (colour; see PointAppearanceEmbedding).
        token_appearance=True,
        # Names are scored by tokens that see the other candidates ("the square on the left").
        relational_alignment=dict(),
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
        # The mean of each location distribution, not its mode: on the shipped model of
        # 2026-11-30 (README subsets) box AP 43.9 -> 47.5, AP75 38.6 -> 48.5, grounding 59.3 -> 60.7 %.
        coord_decode="expectation",
        # Box precision: a GIoU term on the decoded boxes, and Deformable-DETR refinement steps of
        # them on the tokenizer's memory (the LLM found the right object, AP50 89, but a pixel or
        # two off, AP75 55).
        loss_weights=dict(giou=2.0),
        box_refinement=dict(num_layers=2),
        # The same for polygons, vertex by vertex (mask AP50 87 but AP75 38 without it).
        polygon_refinement=dict(num_layers=2),
        # A grounding answer's one box is the slot the relational alignment ranks first (the
        # LLM scores each slot without seeing the others; see LLMTaskDecoder).
        grounding_score="alignment",
        # Captions and answers read the image tokens through a cross-attention in every layer.
        image_readout=dict(dims=128, num_heads=4),
        max_new_tokens=24,
    ),
    # Caption / VQA tokens tell the LLM how well they match the instruction (the tokenizer finds
    # the object a question names; see VisionLLM).
    instruction_relevance=True,
    # Frozen weights restored from the installed packages, so checkpoints leave them out.
    pretrained_prefixes=("task_decoder.llm", "image_tokenizer.text_encoder.bert"),
)
