"""The one palette of the package's pictures: a category's colour is its index in the
instruction's (or the sample's) category list, cycling through 12 distinct colours."""
from typing import Tuple

PALETTE = [(230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240),
           (240, 50, 230), (210, 245, 60), (0, 128, 128), (170, 110, 40), (128, 0, 0), (0, 0, 128)]


def colour(index: int) -> Tuple[int, int, int]:
    """The RGB colour of category ``index``."""
    return PALETTE[index % len(PALETTE)]
