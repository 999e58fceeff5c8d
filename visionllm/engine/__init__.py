from .checkpoint import (AtomicLocalBackend, TrainableStateCheckpointHook, compress_state_dict,
                         decompress_state_dict, unwrapped_model)

__all__ = ["AtomicLocalBackend", "TrainableStateCheckpointHook", "compress_state_dict", "decompress_state_dict",
           "unwrapped_model"]
