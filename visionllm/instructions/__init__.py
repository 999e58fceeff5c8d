"""Instructions: output formats, category sets, the location-token codec and the ``Instruction``
record. The tasks' phrasings and readers live in ``visionllm.tasks``."""
from .category_set import (IMAGE_PLACEHOLDER, format_category_set, read_category_set, sample_category_set,
                           split_category_set)
from .instruction import Instruction
from .location_codec import LocationCodec
from .output_format import (MAX_POINTS, MIN_POLYGON_POINTS, OutputFormat, UnsupportedOutputFormat,
                            find_output_format, parse_output_format)
from .regions import REGION_PLACEHOLDER, RegionError, check_regions, count_regions

__all__ = [
    "IMAGE_PLACEHOLDER", "Instruction", "format_category_set", "read_category_set", "sample_category_set",
    "split_category_set", "OutputFormat", "UnsupportedOutputFormat", "parse_output_format", "find_output_format",
    "MAX_POINTS", "MIN_POLYGON_POINTS", "LocationCodec", "REGION_PLACEHOLDER", "RegionError", "check_regions",
    "count_regions",
]
