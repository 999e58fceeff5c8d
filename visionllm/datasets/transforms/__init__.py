"""Data pipeline transforms (mmcv ``BaseTransform`` style, registered in ``TRANSFORMS``).

Typical order: ``LoadImageRGB → LoadVisionLLMAnnotations → [PhotometricDistortionRGB →
RandomCropWithText →] RandomFlipWithText → ResizeKeepRatio → ResamplePolygons →
BuildInstruction → PackVisionLLMInputs`` (crop and flip before the polygon resampling, whose
start rule depends on orientation).
"""
from .augment import PhotometricDistortionRGB, RandomCropWithText
from .formatting import PackVisionLLMInputs
from .geometric import RandomFlipWithText, ResizeKeepRatio, swap_left_right
from .instruction import BuildInstruction
from .loading import LoadImageRGB, LoadVisionLLMAnnotations
from .polygon import ResamplePolygons, resample_polygon

__all__ = ["LoadImageRGB", "LoadVisionLLMAnnotations", "ResizeKeepRatio", "RandomFlipWithText",
           "swap_left_right", "ResamplePolygons", "resample_polygon", "BuildInstruction",
           "PackVisionLLMInputs", "PhotometricDistortionRGB", "RandomCropWithText"]
