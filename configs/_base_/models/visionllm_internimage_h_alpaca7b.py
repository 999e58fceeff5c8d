# VisionLLM with an InternImage-H backbone and Alpaca-7B (the paper's InternImage-H setting).
_base_ = ["./visionllm_alpaca7b.py"]

# Published InternImage-H weights (classification or detector `backbone.` keys); None starts
# from scratch.
internimage_h_checkpoint = "checkpoints/internimage_h_jointto22k_384.pth"

model = dict(
    image_tokenizer=dict(
        # out_indices 1, 2, 3 = strides 8, 16, 32 (+ one extra stride-64 level), widths 640/1280/2560.
        backbone=dict(type="InternImageBackbone", variant="H", checkpoint=internimage_h_checkpoint),
    ),
)
