"""Instructions: phrasings, output formats, category sets and the location-token codec."""
from .category_set import (IMAGE_PLACEHOLDER, format_category_set, read_category_set, sample_category_set,
                           split_category_set)
from .instruction import STRUCTURED_TASKS, TASKS, TEXT_TASKS, Instruction
from .location_codec import LocationCodec
from .output_format import (MAX_POINTS, OutputFormat, UnsupportedOutputFormat, find_output_format,
                            parse_output_format)
from .regions import REGION_PLACEHOLDER, RegionError, check_regions, count_regions
from .templates import (DEFAULT_NUM_POINTS, SEGMENTATION_NUM_POINTS, TEMPLATES, build_instruction)

__all__ = [
    "IMAGE_PLACEHOLDER", "TASKS", "STRUCTURED_TASKS", "TEXT_TASKS", "Instruction", "build_instruction", "TEMPLATES",
    "SEGMENTATION_NUM_POINTS",
    "DEFAULT_NUM_POINTS", "format_category_set", "read_category_set", "sample_category_set", "split_category_set",
    "OutputFormat", "UnsupportedOutputFormat", "parse_output_format", "find_output_format", "MAX_POINTS", "LocationCodec",
    "REGION_PLACEHOLDER", "RegionError", "check_regions", "count_regions",
]
