"""Language-guided image tokenizer: backbone, text encoder, fusion, deformable transformer."""
from .backbones import InternImage, InternImageBackbone, ResNetBackbone
from .deformable_transformer import DeformableTransformer
from .fusion import LanguageFusion
from .image_tokenizer import ImageTokenizer
from .text_encoder import TextEncoder
from .token_loss import TokenLoss, sigmoid_focal_loss

__all__ = ["InternImage", "InternImageBackbone", "ResNetBackbone", "DeformableTransformer", "LanguageFusion",
           "ImageTokenizer", "TextEncoder", "TokenLoss", "sigmoid_focal_loss"]
