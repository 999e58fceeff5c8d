from .checkpoint import (AtomicLocalBackend, TrainableStateCheckpointHook, compress_state_dict,
                         decompress_state_dict, load_trained_checkpoint, unwrapped_model)

__all__ = ["AtomicLocalBackend", "TrainableStateCheckpointHook", "compress_state_dict", "decompress_state_dict",
           "load_trained_checkpoint", "unwrapped_model"]
