"""VisionLLM toolkit: a vision-centric generalist model driven by language instructions."""

__version__ = "0.1.0"
