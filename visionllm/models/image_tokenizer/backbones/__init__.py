"""Image backbones of the tokenizer: each returns 4 levels (strides 8/16/32/64) at the transformer width."""
from .internimage import INTERNIMAGE_VARIANTS, InternImage, InternImageBackbone
from .resnet import ResNetBackbone
from .utils import LevelProjection, load_local_checkpoint

__all__ = ["INTERNIMAGE_VARIANTS", "InternImage", "InternImageBackbone", "ResNetBackbone",
           "LevelProjection", "load_local_checkpoint"]
