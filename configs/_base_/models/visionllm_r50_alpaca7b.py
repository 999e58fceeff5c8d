# VisionLLM with a ResNet-50 backbone and Alpaca-7B (the paper's R50 setting).
_base_ = ["./visionllm_alpaca7b.py"]

# ImageNet ResNet-50 weights (timm / torchvision key names); None starts from scratch.
resnet50_checkpoint = "checkpoints/resnet50.pth"

model = dict(
    image_tokenizer=dict(
        # Detection practice (Deformable-DETR): frozen stem + layer1 and frozen batch norms
        # (batches of 1-2 images per GPU give useless batch statistics).
        backbone=dict(type="ResNetBackbone", depth=50, checkpoint=resnet50_checkpoint,
                      frozen_stages=1, norm_eval=True),
    ),
)
