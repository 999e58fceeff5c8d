from .checkpoint import (AtomicLocalBackend, TrainableStateCheckpointHook, compress_state_dict,
                         decompress_state_dict, load_trained_checkpoint, unwrapped_model)
from .optim_constructor import SummarisingOptimWrapperConstructor

__all__ = ["AtomicLocalBackend", "TrainableStateCheckpointHook", "compress_state_dict", "decompress_state_dict",
           "load_trained_checkpoint", "unwrapped_model", "SummarisingOptimWrapperConstructor"]
