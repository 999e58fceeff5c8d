from .checkpoint import AtomicLocalBackend, TrainableStateCheckpointHook

__all__ = ["AtomicLocalBackend", "TrainableStateCheckpointHook"]
