"""Pictures of predictions: the palette and the one visualizer (registered in ``VISUALIZERS``)."""
from .palette import PALETTE, colour
from .visualizer import VisionLLMVisualizer, draw_instances, draw_result

__all__ = ["PALETTE", "colour", "VisionLLMVisualizer", "draw_instances", "draw_result"]
