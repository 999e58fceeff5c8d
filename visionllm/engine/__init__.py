from .checkpoint import (AtomicLocalBackend, TrainableStateCheckpointHook, compress_state_dict,
                         decompress_state_dict)

__all__ = ["AtomicLocalBackend", "TrainableStateCheckpointHook", "compress_state_dict", "decompress_state_dict"]
