from .backbone_pretraining_hook import ShapeKindPretrainingHook
from .extended_schedule_hook import ExtendedScheduleHook
from .mixture_schedule_hook import MixtureScheduleHook
from .module_phase_hook import ModulePhaseHook, RequestAdapterPhaseHook
from .checkpoint import (AtomicLocalBackend, TrainableStateCheckpointHook, compress_state_dict,
                         decompress_state_dict, load_trained_checkpoint, unwrapped_model)
from .optim_constructor import SummarisingOptimWrapperConstructor
from .precision import AutocastOptimWrapper, check_device_dtype, pick_amp_dtype, resolve_dtype
from .strategies import (VisionLLMDDPStrategy, VisionLLMFSDPStrategy, VisionLLMFullyShardedDataParallel,
                         layer_wrap_policy)
from .visualization_hook import VisionLLMVisualizationHook

__all__ = ["AtomicLocalBackend", "TrainableStateCheckpointHook", "compress_state_dict", "decompress_state_dict",
           "load_trained_checkpoint", "unwrapped_model", "SummarisingOptimWrapperConstructor", "AutocastOptimWrapper",
           "check_device_dtype", "pick_amp_dtype", "resolve_dtype", "VisionLLMDDPStrategy", "VisionLLMFSDPStrategy",
           "VisionLLMFullyShardedDataParallel", "layer_wrap_policy", "VisionLLMVisualizationHook",
           "ShapeKindPretrainingHook", "ExtendedScheduleHook", "MixtureScheduleHook", "ModulePhaseHook",
           "RequestAdapterPhaseHook"]
